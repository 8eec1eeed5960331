"""The scorer student's training data: the split, the teacher's targets, out-of-fold candidates and
priors, the neighbour memory, featurized rows.

For a training note, the candidates, priors and neighbour votes must not contain its own label: its
known tags and priors come from the other folds (5-fold by a hash of note_id) and its neighbours
exclude itself. Leaving only the note itself out of a text's totals is not enough: the totals are
the same for every note, so "total minus own" would still reveal the label.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.errors import ConfigError, NotFoundError
from features.io import write_parquet
from tagging.handbook_model import Handbook
from tagging.normalize import canonical
from tagging.student.candidates import Candidate, CandidateExtractor
from tagging.student.config import ScorerConfig, StudentConfig
from tagging.student.data import split_of
from tagging.student.files import WorkFiles
from tagging.student.scorer_data import NoteRow, Priors, ScorerFeaturizer
from tagging.student.scorer_memory import NeighbourMemory, to_csr
from tagging.types import NoteInput, Tag

__all__ = ["TrainData", "prepare_data", "split_unit"]

_FOLDS = 5


@dataclass
class TrainData:
    """Everything training and calibration read: known tags, the featurizer, featurized rows, targets."""

    known: list[str]
    known_dims: list[str]
    extract_dims: dict[str, str]
    featurizer: ScorerFeaturizer
    train: list[NoteRow]
    val: list[NoteRow]
    train_labels: list[dict[str, float]]
    val_labels: list[dict[str, float]]
    val_notes: list[NoteInput]
    cap_per_dimension: int
    n_test: int
    candidate_recall: float


def split_unit(note_id: str) -> float:
    """A second hash of note_id in [0, 1), independent of the split's, for the prior folds."""
    digest = hashlib.sha256(f"tagllm-scorer-fold:{note_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def tag_stats(
    notes: Sequence[NoteInput], teacher: Mapping[str, Sequence[Tag]]
) -> tuple[Counter[str], dict[str, str]]:
    """(tag text -> notes using it, tag text -> its most frequent dimension) over ``notes``."""
    dims: dict[str, Counter[str]] = {}
    freq: Counter[str] = Counter()
    for n in notes:
        for t in teacher[n.note_id]:
            c = canonical(t.text)
            if c:
                freq[c] += 1
                dims.setdefault(c, Counter())[t.dimension or "other"] += 1
    return freq, {t: d.most_common(1)[0][0] for t, d in dims.items()}


def labels_of(tags: Sequence[Tag], soft: bool, boilerplate: frozenset[str]) -> dict[str, float]:
    """Canonical tag text -> target: the teacher's confidence (soft) or 1 (hard).

    Boilerplate is never a target: the tagger drops it, so learning or scoring it would only mislead
    the thresholds.
    """
    out: dict[str, float] = {}
    for t in tags:
        c = canonical(t.text)
        if c and c not in boilerplate:
            out[c] = max(out.get(c, 0.0), min(max(float(t.confidence), 0.0), 1.0) if soft else 1.0)
    return out


def _split(
    notes: Sequence[NoteInput], teacher: Mapping[str, Sequence[Tag]], cfg: StudentConfig, work: Path
) -> dict[str, list[NoteInput]]:
    """The taught notes by role (train / val / test); the split is written to ``work/split.parquet``."""
    taught = [n for n in notes if n.note_id in teacher]
    if not taught:
        raise NotFoundError(
            "no note has a teacher answer; run `tagllm tag teach` or `tagllm tag import` first"
        )
    split = {
        n.note_id: split_of(n.note_id, test_share=cfg.test_share, val_share=cfg.val_share) for n in taught
    }
    write_parquet(_split_frame(split), WorkFiles(work).split)
    parts: dict[str, list[NoteInput]] = {"train": [], "val": [], "test": []}
    for n in taught:
        parts[split[n.note_id]].append(n)
    if not parts["train"] or not parts["val"]:
        raise ConfigError(
            f"the scorer needs training and validation notes; the split of {len(taught)} taught notes "
            f"gave train={len(parts['train'])}, val={len(parts['val'])} (add notes or raise val_share)"
        )
    return parts


def _out_of_fold(
    train: Sequence[NoteInput],
    teacher: Mapping[str, Sequence[Tag]],
    labels: Sequence[Mapping[str, float]],
    handbook: Handbook | None,
    sc: ScorerConfig,
) -> tuple[list[list[Candidate]], list[Priors], list[int]]:
    """Each training note's candidates and priors from the other folds (and the fold of each note)."""
    fold = [int(split_unit(n.note_id) * _FOLDS) for n in train]
    cands: list[list[Candidate]] = [[] for _ in train]
    for k in range(_FOLDS):
        others = [n for n, f in zip(train, fold, strict=True) if f != k]
        extractor = CandidateExtractor(handbook, tag_stats(others, teacher)[1], max_chars=sc.max_chars)
        for i, (n, f) in enumerate(zip(train, fold, strict=True)):
            if f == k:
                cands[i] = extractor.extract(n)
    cats = [n.category for n in train]
    priors = [
        Priors.fit(
            [c for c, f in zip(cands, fold, strict=True) if f != k],
            [g for g, f in zip(labels, fold, strict=True) if f != k],
            [c for c, f in zip(cats, fold, strict=True) if f != k],
        )
        for k in range(_FOLDS)
    ]
    return cands, priors, fold


def _memory(
    feat: ScorerFeaturizer, train: Sequence[NoteInput], labels: Sequence[Mapping[str, float]], k: int
) -> NeighbourMemory:
    grams = [feat.note_ngrams(n) for n in train]
    return NeighbourMemory(
        to_csr(grams, [feat.weights(g) for g in grams], feat.buckets),
        [n.note_id for n in train],
        [tuple(sorted(g)) for g in labels],
        k,
    )


def prepare_data(
    notes: Sequence[NoteInput],
    teacher: Mapping[str, Sequence[Tag]],
    cfg: StudentConfig,
    handbook: Handbook | None,
    work: Path,
) -> TrainData:
    """Split, targets (boilerplate removed), known tags, out-of-fold features, the memory, rows.

    Raises:
        NotFoundError: no note has a teacher answer. ConfigError: no train/val notes, or no tag.
    """
    sc = cfg.scorer
    parts = _split(notes, teacher, cfg, work)
    boiler = frozenset(canonical(b) for b in handbook.boilerplate) if handbook is not None else frozenset()
    teacher = {k: [t for t in v if canonical(t.text) not in boiler] for k, v in teacher.items()}
    train_labels = [labels_of(teacher[n.note_id], sc.targets == "soft", boiler) for n in parts["train"]]
    freq, extract_dims = tag_stats(parts["train"], teacher)
    if not freq:
        raise ConfigError(
            f"the teacher's answers for the {len(parts['train'])} training notes hold no tag (after "
            "removing boilerplate); nothing to distill"
        )
    known = [t for t, c in sorted(freq.items(), key=lambda kv: (-kv[1], kv[0])) if c >= sc.min_tag_count]
    known = known[: sc.max_known_tags] or [freq.most_common(1)[0][0]]  # the head needs >= 1 output
    train_cands, fold_priors, fold = _out_of_fold(parts["train"], teacher, train_labels, handbook, sc)
    cats = [n.category for n in parts["train"]]
    extractor = CandidateExtractor(handbook, extract_dims, max_chars=sc.max_chars)
    feat = ScorerFeaturizer(
        extractor,
        known,
        Priors.fit(train_cands, train_labels, cats),
        buckets=sc.buckets,
        ngram_max=sc.ngram_max,
        neighbour_tags=sc.neighbour_tags,
    )
    feat.fit_idf(parts["train"])
    if sc.neighbours:
        feat.memory = _memory(feat, parts["train"], train_labels, sc.neighbours)
    train_rows = feat.rows(
        parts["train"],
        priors=[fold_priors[f] for f in fold],
        cands=train_cands,
        exclude=list(range(len(parts["train"]))),
    )
    val_rows = feat.rows(parts["val"])
    val_labels = [labels_of(teacher[n.note_id], sc.targets == "soft", boiler) for n in parts["val"]]
    hit = sum(len(set(r.cand_texts) & set(g)) for r, g in zip(val_rows, val_labels, strict=True))
    total = sum(len(g) for g in val_labels)
    return TrainData(
        known=known,
        known_dims=[extract_dims[t] for t in known],
        extract_dims=extract_dims,
        featurizer=feat,
        train=train_rows,
        val=val_rows,
        train_labels=train_labels,
        val_labels=val_labels,
        val_notes=parts["val"],
        cap_per_dimension=cfg.cap_per_dimension,
        n_test=len(parts["test"]),
        candidate_recall=hit / total if total else 0.0,
    )


def _split_frame(split: Mapping[str, str]) -> Any:
    import pandas as pd

    return pd.DataFrame({"note_id": list(split), "split": list(split.values())})
