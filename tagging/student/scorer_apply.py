"""The scorer student as a :class:`~tagging.types.Tagger`: one batched forward pass, no decoding loop.

Per note: propose candidates (:mod:`tagging.student.candidates`), featurize, score every known tag and
every candidate in one forward pass, turn logits into calibrated probabilities (a temperature per
head, fitted on validation notes), keep the tags whose probability passes the head's threshold (tuned
on validation notes for F1; at most ``max_tags``), then normalize through the handbook (synonyms,
boilerplate, near-duplicates) and drop near-duplicates across dimensions. A tag's confidence is its
calibrated probability.

``grounded=False`` is the ablation "learning, not selection": no candidate is proposed from the
note's own words; only the known-tag classifier and the nearest training notes' votes remain.

Example::

    tagger = ScorerTagger.load("runs/demo/student/model")
    results = tagger.tag(notes)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.errors import ConfigError, NotFoundError
from tagging.handbook_model import Handbook
from tagging.normalize import canonical, drop_redundant, normalize_tags
from tagging.student.candidates import Candidate, CandidateExtractor, note_text
from tagging.student.config import resolve_device
from tagging.student.files import SCORER_FILES, ModelFiles
from tagging.student.scorer_data import NoteRow, Priors, ScorerFeaturizer, collate
from tagging.student.scorer_memory import NeighbourMemory
from tagging.student.scorer_model import N_FEATURES, TagScorer
from tagging.types import NoteInput, Tag, TagResult

__all__ = ["ScorerTagger", "Selection", "finalize", "predict_probs", "select", "set_threads"]

log = logging.getLogger(__name__)


def set_threads(threads: int) -> int:
    """Set torch's intra-op threads; 0 = half the cores (at least 1), so two processes share a machine.

    Returns:
        The thread count in force.
    """
    n = threads if threads > 0 else max(1, (os.cpu_count() or 2) // 2)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


@dataclass(frozen=True)
class Selection:
    """How logits become tags: per-head temperature and threshold (grounded and ungrounded), a cap."""

    known_temperature: float = 1.0
    cand_temperature: float = 1.0
    known_threshold: float = 0.5
    cand_threshold: float = 0.5
    ungrounded_known_threshold: float = 0.5
    ungrounded_cand_threshold: float = 0.5
    max_tags: int = 8

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)

    def thresholds(self, grounded: bool) -> tuple[float, float]:
        """(known-tag head, candidate head) thresholds."""
        if grounded:
            return self.known_threshold, self.cand_threshold
        return self.ungrounded_known_threshold, self.ungrounded_cand_threshold


def predict_probs(
    model: TagScorer,
    rows: Sequence[NoteRow],
    known_index: Mapping[str, int],
    *,
    batch_size: int = 256,
    device: str = "cpu",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw logits per note: (known-tag logits (K,), candidate logits (C,))."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    model.eval()
    with torch.inference_mode():
        for s in range(0, len(rows), batch_size):
            part = rows[s : s + batch_size]
            tag_logits, cand_logits = model(collate(part, known_index).to(device))
            tl, cl = tag_logits.float().cpu().numpy(), cand_logits.float().cpu().numpy()
            pos = 0
            for i, r in enumerate(part):
                n = len(r.cand_texts)
                out.append((tl[i], cl[pos : pos + n]))
                pos += n
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def select(
    row: NoteRow,
    logits: tuple[np.ndarray, np.ndarray],
    known: Sequence[str],
    known_dims: Sequence[str],
    sel: Selection,
    *,
    grounded: bool = True,
) -> list[tuple[str, str, float]]:
    """The note's tags as (text, dimension, calibrated probability), most probable first.

    A candidate passes the candidate head's threshold; a known tag that is not a candidate passes the
    known-tag head's. ``grounded`` picks the threshold pair; ungrounded (the rows have no candidate
    from the note's words, only neighbour votes) a known candidate may also pass on the known-tag
    head alone.
    """
    tag_logits, cand_logits = logits
    t_known, t_cand = sel.thresholds(grounded)
    pk = _sigmoid(tag_logits / sel.known_temperature)
    pc = _sigmoid(cand_logits / sel.cand_temperature)
    picked: dict[str, tuple[str, float]] = {}
    for text, dim, p, k in zip(row.cand_texts, row.cand_dims, pc, row.cand_known, strict=True):
        if p >= t_cand:
            picked[text] = (dim, float(p))
        elif not grounded and k >= 0 and pk[k] >= t_known:
            # ungrounded, a neighbour-voted candidate is one the candidate head learned to doubt
            # (true tags are usually also in the note's words); the known-tag head may still pass it
            picked[text] = (dim, float(pk[k]))
    scored = set(row.cand_texts)
    for k in np.flatnonzero(pk >= t_known).tolist():
        text = known[k]
        if text not in scored:
            picked[text] = (known_dims[k], float(pk[k]))
    ranked = sorted(picked.items(), key=lambda kv: (-kv[1][1], kv[0]))[: sel.max_tags]
    return [(t, d, p) for t, (d, p) in ranked]


def finalize(
    chosen: Sequence[tuple[str, str, float]], handbook: Handbook | None, category: str, cap: int
) -> tuple[Tag, ...]:
    """Selected (text, dimension, probability) -> the tagger's output: normalized through the handbook
    (synonyms, boilerplate, near-duplicates, cap per dimension), without near-duplicates across
    dimensions (the more confident stays)."""
    tags = normalize_tags(
        [Tag(t, d, p) for t, d, p in chosen], handbook=handbook, category=category, cap_per_dimension=cap
    )
    keep = {id(t) for t in drop_redundant(sorted(tags, key=lambda t: -t.confidence))}
    return tuple(t for t in tags if id(t) in keep)


def _missing(path: Path) -> list[str]:
    return [f for f in SCORER_FILES if not (path / f).exists()]


class ScorerTagger:
    """Tags notes with a trained scorer student.

    Args:
        model: the :class:`TagScorer`.
        meta: the model folder's ``student.json``.
        handbook: for candidates (values, synonyms, boilerplate) and normalization.
        batch_size: notes per forward pass (>= 1).
        device: auto / cpu / cuda.
        threads: torch CPU threads (0 = half the cores).
        version: tagger_version to report.
        grounded: False = the ablation "learning, not selection": no candidate from the note's own
            words; only the known-tag classifier and the neighbours' votes.
    """

    name = "student"

    def __init__(
        self,
        model: TagScorer,
        meta: dict[str, Any],
        *,
        handbook: Handbook | None = None,
        batch_size: int = 64,
        device: str = "auto",
        threads: int = 0,
        version: str = "student",
        grounded: bool = True,
        memory: NeighbourMemory | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size!r}")
        self.threads = set_threads(threads)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.meta, self.handbook, self.batch_size = meta, handbook, batch_size
        self.version, self.grounded = version, grounded
        sc = meta["scorer"]
        self.known = list(meta["known_tags"])
        self.known_dims = list(meta["known_dims"])
        extractor = CandidateExtractor(handbook, meta["extract_dims"], max_chars=int(sc["max_chars"]))
        self.featurizer = ScorerFeaturizer(
            extractor,
            self.known,
            Priors.from_dict(meta["priors"]),
            buckets=int(sc["buckets"]),
            ngram_max=int(sc["ngram_max"]),
            neighbour_tags=int(sc.get("neighbour_tags", 15)),
        )
        self.featurizer.idf = self.model.idf.detach().cpu().numpy()
        self.featurizer.memory = memory
        self.selection = Selection(**meta["selection"])
        # without a handbook, the boilerplate list the model was trained with still applies
        self.boilerplate = frozenset(meta.get("boilerplate", ())) if handbook is None else frozenset()
        self.cap = int(meta.get("student_config", {}).get("cap_per_dimension", 3))
        self.last_notes_per_s = 0.0

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str], **kwargs: Any) -> ScorerTagger:
        """Load a folder written by :func:`tagging.student.scorer_train.train_scorer`.

        Raises:
            NotFoundError: the folder or one of its files is missing.
        """
        from safetensors.torch import load_file

        from tagging.student.apply import model_version

        path = Path(model_dir)
        missing = _missing(path)
        if missing:
            raise NotFoundError(
                f"--model {path}: not a student model folder (missing {', '.join(missing)}); "
                "train one with `tagllm tag distill`"
            )
        meta = json.loads(ModelFiles(path).meta.read_text(encoding="utf-8"))
        sc = meta["scorer"]
        model = TagScorer(
            int(sc["buckets"]), int(sc["dim"]), int(sc["hidden"]), len(meta["known_tags"]), N_FEATURES,
            candidate_embeddings=bool(sc.get("candidate_embeddings", False)),
        )  # fmt: skip
        model.load_state_dict(load_file(str(ModelFiles(path).weights)))
        kwargs.setdefault("version", model_version(path))
        memory = NeighbourMemory.load(path) if ModelFiles(path).memory.exists() else None
        return cls(model, meta, memory=memory, **kwargs)

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        """Tag ``notes``: one result per note, in order."""
        t0 = time.perf_counter()
        cands: list[list[Candidate]] | None = None if self.grounded else [[] for _ in notes]
        rows = self.featurizer.rows(notes, cands=cands, use_offline=self.grounded)
        logits = predict_probs(
            self.model, rows, self.featurizer.known_index, batch_size=self.batch_size, device=self.device
        )
        out = []
        boiler = self.featurizer.extractor.boilerplate
        for note, row, lg in zip(notes, rows, logits, strict=True):
            if not canonical(" ".join(note_text(note, boiler))):
                # nothing to read (no title, body or caption beyond boilerplate): no evidence, no tags,
                # rather than the category's usual tags
                out.append(TagResult(note.note_id, (), trace={"candidates": 0, "empty": True}))
                continue
            chosen = select(row, lg, self.known, self.known_dims, self.selection, grounded=self.grounded)
            raw = [(t, d, p) for t, d, p in chosen if t not in self.boilerplate]
            tags = finalize(raw, self.handbook, note.category, self.cap)
            out.append(TagResult(note.note_id, tags, trace={"candidates": len(row.cand_texts)}))
        dt = time.perf_counter() - t0
        self.last_notes_per_s = len(notes) / dt if dt > 0 else 0.0
        log.debug("student tagged %d notes in %.2fs (%.1f notes/s)", len(notes), dt, self.last_notes_per_s)
        return out
