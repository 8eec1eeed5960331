"""The student: a small model distilled from the teacher's tags, tagging every note fast.

Two architectures (``StudentConfig.arch``); :func:`load_student` loads either from its folder:

- ``scorer`` (default): candidate tags from the note's own words (hashtags, handbook values, known
  tags) and from its nearest training notes, plus a classifier over the teacher's frequent tags,
  scored in one forward pass (no decoding loop); calibrated confidences.
  ``candidates.py`` (proposals), ``scorer_memory.py`` (nearest-neighbour votes), ``scorer_data.py``
  (n-grams, features, priors, batches), ``scorer_model.py`` (the network), ``scorer_train.py``
  (distillation, calibration, export), ``scorer_apply.py`` (:class:`ScorerTagger`).
- ``seq2seq``: a T5-style encoder-decoder generating ``dim: v1; v2 | dim2: v3`` under a trie
  constraint, the files below.

- ``config.py``: :class:`StudentConfig` (model size, sequence lengths, training budget), device choice.
- ``tokenizer.py``: byte-level BPE trained on the run's corpus (any script, Chinese included).
- ``format.py``: the dimension-aware target (``colour: cream white; off white | style: retro``), its
  parser (never raises) and the trie that constrains decoding so every output parses.
- ``model.py``: the T5-style model built from a config (no downloaded weights).
- ``data.py``: the note -> source text, the deterministic hash split, batching.
- ``distill.py``: sequence-level distillation with early stopping and resumable checkpoints.
- ``apply.py``: :class:`StudentTagger` (a :class:`~tagging.types.Tagger`): batched, length-sorted,
  constrained greedy/beam decoding.

Heavy imports (torch, transformers) happen inside the functions that need them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.errors import NotFoundError
from tagging.student.files import META, ModelFiles

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from tagging.student.apply import StudentTagger
    from tagging.student.scorer_apply import ScorerTagger
    from tagging.types import NoteInput, Tagger, TagResult

__all__ = ["apply_chunk", "load_student", "student_arch", "tag_in_chunks"]


def student_arch(model_dir: str | os.PathLike[str]) -> str:
    """The architecture of a model folder (``scorer`` or ``seq2seq``) from its ``student.json``.

    Raises:
        NotFoundError: the folder has no ``student.json``.
    """
    path = ModelFiles.of(model_dir).meta
    if not path.exists():
        raise NotFoundError(
            f"--model {Path(model_dir)}: not a student model folder (missing {META}); "
            "train one with `tagllm tag distill`"
        )
    return str(json.loads(path.read_text(encoding="utf-8")).get("arch", "seq2seq"))


def load_student(model_dir: str | os.PathLike[str], **kwargs: Any) -> StudentTagger | ScorerTagger:
    """Load a student of either architecture as a :class:`~tagging.types.Tagger`.

    Keyword arguments go to the tagger (handbook, batch_size, device, ...); options that only one
    architecture has (num_beams for seq2seq, threads and grounded for the scorer) are ignored by the
    other.

    Raises:
        NotFoundError: not a student model folder.
    """
    if student_arch(model_dir) == "scorer":
        from tagging.student.scorer_apply import ScorerTagger

        kwargs.pop("num_beams", None)
        return ScorerTagger.load(model_dir, **kwargs)
    from tagging.student.apply import StudentTagger

    kwargs.pop("threads", None)
    return StudentTagger.load(model_dir, **kwargs)


def apply_chunk(batch_size: int) -> int:
    """Notes per ``tagger.tag`` call when a whole table is tagged (the seq2seq student length-sorts
    within a call, so every engine that must give identical tags cuts the notes at these multiples)."""
    return max(batch_size * 8, 256)


def tag_in_chunks(
    tagger: Tagger,
    inputs: Sequence[NoteInput],
    batch_size: int,
    on_chunk: Callable[[int], None] | None = None,
) -> list[TagResult]:
    """Tag ``inputs`` in calls of :func:`apply_chunk` notes; ``on_chunk(n)`` after each call."""
    chunk = apply_chunk(batch_size)
    results: list[TagResult] = []
    for s in range(0, len(inputs), chunk):
        part = inputs[s : s + chunk]
        results.extend(tagger.tag(part))
        if on_chunk is not None:
            on_chunk(len(part))
    return results
