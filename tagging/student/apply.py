"""The trained student as a :class:`~tagging.types.Tagger`: batched, length-sorted, constrained decoding.

Example::

    tagger = StudentTagger.load("runs/demo/student/model")
    results = tagger.tag(notes)       # one TagResult per note, in order
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from features.errors import ConfigError, NotFoundError
from tagging.handbook_model import Handbook
from tagging.normalize import drop_redundant, normalize_tags
from tagging.student.config import resolve_device
from tagging.student.data import note_source
from tagging.student.files import SEQ2SEQ_FILES, ModelFiles
from tagging.student.format import TagConstraint, decode_ids, parse_tags
from tagging.types import NoteInput, TagResult

__all__ = ["StudentTagger", "model_version"]


class _EosPenalty:
    """A logits processor: ``scores[:, eos] -= penalty`` (B*beams, V)."""

    def __init__(self, eos_id: int, penalty: float) -> None:
        self.eos_id, self.penalty = eos_id, penalty

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        scores[:, self.eos_id] -= self.penalty
        return scores


log = logging.getLogger(__name__)


def model_version(model_dir: str | os.PathLike[str]) -> str:
    """``student-<first 12 hex of sha256(model.safetensors)>``: changes whenever the weights do."""
    path = ModelFiles.of(model_dir).weights
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return f"student-{h.hexdigest()[:12]}"


class StudentTagger:
    """Tags notes with a distilled student model.

    Args:
        model: a ``T5ForConditionalGeneration``.
        tokenizer: its tokenizer.
        meta: the model folder's ``student.json`` (allowed values, config, teacher).
        handbook: for the normalizer (synonyms, boilerplate); None: canonical form and near-dups only.
        batch_size: notes per ``generate`` call (>= 1).
        num_beams: 1 = greedy; more = beam search (>= 1).
        constrained: decode under the trie constraint (every output then parses).
        device: auto / cpu / cuda.
        version: tagger_version to report (default: from the weights' hash, see :func:`model_version`).
        eos_penalty: subtracted from the end-of-sequence logit (default: the calibrated one).
        grounded: copy-grounded decoding (default: as trained; ``False`` for an ablation).
        dedupe: drop near-duplicate tags across dimensions (:func:`~tagging.normalize.drop_redundant`).
    """

    name = "student"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        meta: dict[str, Any],
        *,
        handbook: Handbook | None = None,
        batch_size: int = 64,
        num_beams: int = 1,
        constrained: bool = True,
        device: str = "auto",
        version: str = "student",
        eos_penalty: float | None = None,
        grounded: bool | None = None,
        dedupe: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size!r}")
        if num_beams < 1:
            raise ConfigError(f"--num-beams must be >= 1, got {num_beams!r}")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.meta = meta
        self.handbook = handbook
        self.batch_size, self.num_beams, self.constrained = batch_size, num_beams, constrained
        cfg = meta.get("student_config", {})
        # the copy-head format: lower-cased source, word-initial values, source ids at every step
        self.copy_head = bool(meta.get("copy_head", False))
        self.max_source = int(cfg.get("max_source_tokens", 128))
        self.max_target = int(cfg.get("max_target_tokens", 48))
        self.cap = int(cfg.get("cap_per_dimension", 3))
        self.constraint = TagConstraint(
            tokenizer,
            meta.get("allowed", {}),
            max_values=self.cap,
            grounded=bool(meta.get("grounded", False)) if grounded is None else grounded,
            word_initial=self.copy_head,
        )
        self.version = version
        # subtracted from the end-of-sequence logit: a briefly trained student stops too early;
        # distillation calibrates it on the validation notes (student.json "eos_penalty")
        self.eos_penalty = float(meta.get("eos_penalty", 0.0) if eos_penalty is None else eos_penalty)
        self.last_notes_per_s = 0.0
        self.dedupe = dedupe

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], **kwargs: Any) -> StudentTagger:
        """Load a model folder written by :func:`tagging.student.distill.distill`.

        Raises:
            NotFoundError: the folder or one of its files is missing.
        """
        from transformers import PreTrainedTokenizerFast

        from tagging.student.model import model_class

        path = Path(model_dir)
        missing = [f for f in SEQ2SEQ_FILES if not (path / f).exists()]
        if missing:
            raise NotFoundError(
                f"--model {path}: not a student model folder (missing {', '.join(missing)}); "
                "train one with `tagllm tag distill`"
            )
        meta = json.loads(ModelFiles(path).meta.read_text(encoding="utf-8"))
        model = model_class(bool(meta.get("copy_head", False))).from_pretrained(str(path))
        tok = PreTrainedTokenizerFast.from_pretrained(str(path))
        kwargs.setdefault("version", model_version(path))
        return cls(model, tok, meta, **kwargs)

    def decode_texts(self, notes: Sequence[NoteInput]) -> list[str]:
        """The raw text form the model emits for each note (in order)."""
        import torch

        tok = self.tokenizer
        texts_in = [note_source(n, lowercase=self.copy_head) for n in notes]
        sources = tok(texts_in, add_special_tokens=False)["input_ids"]
        sources = [[*list(s)[: self.max_source - 1], tok.eos_token_id] for s in sources]
        order = sorted(range(len(notes)), key=lambda i: len(sources[i]))
        texts: list[str] = [""] * len(notes)
        for s in range(0, len(order), self.batch_size):
            idx = order[s : s + self.batch_size]
            width = max(len(sources[i]) for i in idx)
            ids = torch.tensor(
                [sources[i] + [tok.pad_token_id] * (width - len(sources[i])) for i in idx], dtype=torch.long
            ).to(self.device)
            fn = None
            if self.constrained:
                tries = [self.constraint.trie(notes[i].category, texts_in[i]) for i in idx]

                # generate passes the batch index (not the beam's row) as batch_id
                def fn(batch_id: int, prefix: Any, tries: list[Any] = tries) -> list[int]:
                    return list(tries[batch_id].allowed_next(prefix.tolist()[1:]))

            procs = None
            if self.eos_penalty:
                from transformers import LogitsProcessorList

                procs = LogitsProcessorList([_EosPenalty(tok.eos_token_id, self.eos_penalty)])
            extra = {"copy_source_ids": ids} if self.copy_head else {}
            with torch.no_grad():
                gen = self.model.generate(
                    **extra,
                    logits_processor=procs,
                    input_ids=ids,
                    attention_mask=(ids != tok.pad_token_id).long(),
                    max_new_tokens=self.max_target,
                    num_beams=self.num_beams,
                    do_sample=False,
                    prefix_allowed_tokens_fn=fn,
                )
            for i, row in zip(idx, gen.tolist(), strict=True):
                texts[i] = decode_ids(tok, row[1:])
        return texts

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        """Tag ``notes``: one result per note, in order; normalized through the handbook, and without
        near-duplicates across dimensions (the more confident, i.e. earlier-emitted, tag stays)."""
        t0 = time.perf_counter()
        texts = self.decode_texts(notes)
        out = []
        for note, text in zip(notes, texts, strict=True):
            tags = normalize_tags(
                parse_tags(text), handbook=self.handbook, category=note.category, cap_per_dimension=self.cap
            )
            if self.dedupe:
                keep = {id(t) for t in drop_redundant(sorted(tags, key=lambda t: -t.confidence))}
                tags = tuple(t for t in tags if id(t) in keep)
            out.append(TagResult(note.note_id, tags, trace={"raw": text}))
        dt = time.perf_counter() - t0
        self.last_notes_per_s = len(notes) / dt if dt > 0 else 0.0
        log.info("student tagged %d notes in %.2fs (%.1f notes/s)", len(notes), dt, self.last_notes_per_s)
        return out
