"""What the scorer student reads: hashed n-grams, candidate features with training priors, batches.

Everything here is numpy + the standard library (torch only in :func:`collate`), and deterministic:
n-grams are hashed with CRC-32, not Python's salted ``hash``.

Candidate features (:data:`N_FEATURES` = 25), in order: found as a hashtag / in the title / in
the body / as a handbook form / as a known tag / by the neighbours / by the offline handbook teacher
(7 flags); log(1 + count); relative first position; log(1 + length); the **keyphraseness prior** —
how often this text was a teacher tag among the training notes where it was a candidate, smoothed
towards the base rate; log(1 + those notes); log(1 + how often the teacher used it in training); CJK;
dimension is ``other``; log(1 + candidates in the note); the neighbours' vote, vote share, best
similarity and log(1 + voters) (:mod:`tagging.student.scorer_memory`); is a value of the category's
handbook section; log of the share of the category's training notes that have it; vote / the note's
best vote; prior / the note's best prior; the offline teacher's confidence. For a training note the
priors and the known tags come from the other folds (5-fold, by note) and its neighbours exclude
itself: leaving only the note out of a text's totals would still leak its label.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tagging.normalize import canonical, is_cjk
from tagging.student.candidates import Candidate, CandidateExtractor, hashtags, note_text
from tagging.student.scorer_memory import NeighbourMemory, Vote, to_csr
from tagging.teachers.offline import OfflineTeacher
from tagging.types import NoteInput

if TYPE_CHECKING:
    from tagging.student.scorer_model import Batch

# the candidate features, in the order of ScorerFeaturizer.features
N_FEATURES = 25

__all__ = ["N_FEATURES", "NoteRow", "Priors", "ScorerFeaturizer", "collate", "hash_ngrams"]

_SOURCES = ("hashtag", "title", "body", "handbook", "known", "neighbour", "offline")
_NO_VOTE = (0.0, 0.0, 0.0, 0)
_PRIOR_SMOOTHING = 2.0


def hash_ngrams(text: str, prefix: str, n_max: int, buckets: int) -> list[int]:
    """CRC-32 bucket ids of every character n-gram (1..n_max) of ``text``, tagged with ``prefix``."""
    out = []
    n = len(text)
    for size in range(1, n_max + 1):
        for i in range(0, n - size + 1):
            out.append(zlib.crc32(f"{prefix}{text[i : i + size]}".encode()) % buckets)
    return out


@dataclass
class Priors:
    """Training statistics per candidate text (see the module docstring).

    Attributes:
        occ: text -> training notes where it was a candidate.
        hit: text -> of those, notes where the teacher used it.
        tag_freq: text -> training notes whose teacher answer has it.
        base: overall share of candidates that are teacher tags.
    """

    occ: Counter[str] = field(default_factory=Counter)
    hit: Counter[str] = field(default_factory=Counter)
    tag_freq: Counter[str] = field(default_factory=Counter)
    base: float = 0.1
    cat_freq: Counter[str] = field(default_factory=Counter)  # "category\x1ftext" -> notes
    cat_n: Counter[str] = field(default_factory=Counter)  # category -> notes

    @classmethod
    def fit(
        cls,
        candidates: Sequence[Sequence[Candidate]],
        labels: Sequence[Mapping[str, float]],
        categories: Sequence[str],
    ) -> Priors:
        p = cls()
        for cands, gold, cat in zip(candidates, labels, categories, strict=True):
            for c in cands:
                p.occ[c.text] += 1
                p.hit[c.text] += c.text in gold
            p.tag_freq.update(list(gold))
            p.cat_n[cat] += 1
            p.cat_freq.update(f"{cat}\x1f{t}" for t in gold)
        total = sum(p.occ.values())
        p.base = sum(p.hit.values()) / total if total else 0.1
        return p

    def as_dict(self) -> dict[str, object]:
        keys = sorted(set(self.occ) | set(self.tag_freq))
        return {
            "base": self.base,
            "texts": keys,
            "occ": [self.occ[k] for k in keys],
            "hit": [self.hit[k] for k in keys],
            "tag_freq": [self.tag_freq[k] for k in keys],
            "cat_freq": dict(self.cat_freq),
            "cat_n": dict(self.cat_n),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Priors:
        texts = list(d["texts"])
        return cls(
            occ=Counter(dict(zip(texts, d["occ"], strict=True))),
            hit=Counter(dict(zip(texts, d["hit"], strict=True))),
            tag_freq=Counter(dict(zip(texts, d["tag_freq"], strict=True))),
            base=float(d["base"]),
            cat_freq=Counter(d["cat_freq"]),
            cat_n=Counter(d["cat_n"]),
        )

    def category_share(self, category: str, text: str) -> float:
        """Smoothed share of ``category``'s training notes whose teacher answer has ``text``."""
        return (self.cat_freq[f"{category}\x1f{text}"] + self.base) / (self.cat_n[category] + 1)


@dataclass(frozen=True)
class NoteRow:
    """One note, featurized: its n-grams and its candidates (texts, n-grams, features, known index)."""

    note_id: str
    ngrams: np.ndarray  # (N,) int64
    weights: np.ndarray  # (N,) float32: tf-idf of each n-gram, L2-normalized over the note
    cand_texts: tuple[str, ...]
    cand_dims: tuple[str, ...]
    cand_ngrams: tuple[np.ndarray, ...]
    cand_features: np.ndarray  # (C, F) float32
    cand_known: np.ndarray  # (C,) int64, -1 when not a known tag


class ScorerFeaturizer:
    """Turns notes into :class:`NoteRow` s.

    Args:
        extractor: proposes the candidates.
        known: the known tags, in head order (index = known-tag id).
        priors: training statistics.
        buckets: n-gram table size.
        ngram_max: longest character n-gram.
        neighbour_tags: at most this many neighbour-voted tags become candidates (most voted first).
    """

    def __init__(
        self,
        extractor: CandidateExtractor,
        known: Sequence[str],
        priors: Priors,
        *,
        buckets: int,
        ngram_max: int = 3,
        neighbour_tags: int = 15,
    ) -> None:
        self.extractor = extractor
        self.known_index = {t: i for i, t in enumerate(known)}
        self.priors = priors
        self.buckets, self.ngram_max = buckets, ngram_max
        self.idf = np.ones(buckets, dtype=np.float32)
        self.memory: NeighbourMemory | None = None
        self._values: dict[str, frozenset[str]] = {}
        self._cand_cache: dict[str, np.ndarray] = {}
        self._static: dict[tuple[int, str, str], list[float]] = {}
        self.max_neighbour_tags = neighbour_tags
        hb = extractor.handbook
        # the offline handbook teacher's picks (a rule-based reading of the same handbook) are evidence
        self.offline = OfflineTeacher(hb) if hb is not None else None

    @staticmethod
    def _prior(p: Priors, text: str) -> float:
        return (p.hit[text] + _PRIOR_SMOOTHING * p.base) / (p.occ[text] + _PRIOR_SMOOTHING)

    def fit_idf(self, notes: Sequence[NoteInput], min_df: int = 2) -> np.ndarray:
        """Smoothed inverse document frequency of every bucket over ``notes`` (sklearn's formula);
        buckets seen in fewer than ``min_df`` notes weigh 0 (their embeddings are never trained)."""
        df = np.zeros(self.buckets, dtype=np.float64)
        for n in notes:
            df[np.unique(self.note_ngrams(n))] += 1
        idf = np.log((1 + len(notes)) / (1 + df)) + 1
        idf[df < min_df] = 0.0
        self.idf = idf.astype(np.float32)
        return self.idf

    def weights(self, ids: np.ndarray) -> np.ndarray:
        """Sublinear tf-idf weight of each occurrence, L2-normalized over the note.

        A bucket seen ``tf`` times weighs ``(1 + log tf) * idf`` in all, spread over its copies.
        """
        if not len(ids):
            return np.zeros(0, dtype=np.float32)
        uniq, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
        total = (1 + np.log(counts)) * self.idf[uniq]
        norm = float(np.sqrt(np.square(total).sum())) or 1.0
        return (total[inverse] / counts[inverse] / norm).astype(np.float32)

    def note_ngrams(self, note: NoteInput) -> np.ndarray:
        """Bucket ids of the category, the character n-grams of title + body, hashtags and words."""
        title, body = note_text(note, self.extractor.boilerplate)
        text = canonical(f"{title} {body}")
        b = self.buckets
        ids = [zlib.crc32(f"c:{note.category}".encode()) % b]
        ids += hash_ngrams(text, "", self.ngram_max, b)
        ids += [zlib.crc32(f"h:{h}".encode()) % b for h in hashtags(f"{title} {body}")]
        ids += [zlib.crc32(f"w:{w}".encode()) % b for w in text.split() if len(w) > 1]
        return np.asarray(ids, dtype=np.int64)

    def cand_ngrams(self, text: str) -> np.ndarray:
        """The candidate's own bucket ids (the whole text, and its character n-grams); cached."""
        ids = self._cand_cache.get(text)
        if ids is None:
            grams = [zlib.crc32(f"X:{text}".encode()) % self.buckets]
            grams += hash_ngrams(text, "x:", self.ngram_max, self.buckets)
            ids = np.asarray(grams, dtype=np.int64)
            if len(self._cand_cache) < 200_000:
                self._cand_cache[text] = ids
        return ids

    def features(
        self,
        c: Candidate,
        category: str,
        n_cands: int,
        p: Priors,
        vote: Vote,
        best: tuple[float, float],
        offline: float = 0.0,
    ) -> list[float]:
        """The features of one candidate under priors ``p`` (out-of-fold ones for a training note);
        ``best``: the note's highest vote and prior (for the within-note features)."""
        static = self._static_features(c.text, category, p)
        prior = static[0]
        return [
            *(float(s in c.sources) for s in _SOURCES),
            math.log1p(c.count),
            c.first_pos,
            *static[1:6],
            float(c.dimension == "other"),
            math.log1p(n_cands),
            vote[0],
            vote[1],
            vote[2],
            math.log1p(vote[3]),
            *static[6:],
            vote[0] / best[0] if best[0] > 0 else 0.0,
            prior / best[1] if best[1] > 0 else 0.0,
            offline,
        ]

    def _static_features(self, text: str, category: str, p: Priors) -> list[float]:
        """[prior, log len, prior, log occ, log freq, CJK, in section, log category share] of a text:
        everything that does not depend on the note (cached per priors object)."""
        key = (id(p), category, text)
        hit = self._static.get(key)
        if hit is not None:
            return hit
        occ, freq = p.occ[text], p.tag_freq[text]
        prior = self._prior(p, text)
        out = [
            prior,
            math.log1p(len(text)),
            prior,
            math.log1p(occ),
            math.log1p(freq),
            float(is_cjk(text)),
            float(text in self._section_values(category)),
            math.log(p.category_share(category, text)),
        ]
        if len(self._static) > 500_000:
            self._static.clear()
        self._static[key] = out
        return out

    def _section_values(self, category: str) -> frozenset[str]:
        if category not in self._values:
            hb = self.extractor.handbook
            self._values[category] = frozenset(
                canonical(v.value) for d in (hb.section(category).dimensions if hb else ()) for v in d.values
            )
        return self._values[category]

    def _row(
        self,
        note: NoteInput,
        ngrams: np.ndarray,
        weights: np.ndarray,
        cands: Sequence[Candidate],
        priors: Priors,
        votes: Mapping[str, Vote],
        offline: Mapping[str, tuple[str, float]],
    ) -> NoteRow:
        have = {c.text for c in cands}
        cands = [
            Candidate(c.text, c.dimension, c.sources | {"offline"}, c.count, c.first_pos)
            if c.text in offline
            else c
            for c in cands
        ] + [
            Candidate(t, d, frozenset({"offline", "handbook"}), 1, 0.0)
            for t, (d, _) in offline.items()
            if t not in have and t not in self.extractor.boilerplate
        ]
        have = {c.text for c in cands}
        extra = [
            Candidate(t, self.extractor.known.get(t, "other"), frozenset({"neighbour"}), 0, 1.0)
            for t in sorted(votes, key=lambda t: (-votes[t][0], t))
            if t not in have and t not in self.extractor.boilerplate
        ][: self.max_neighbour_tags]
        cands = [
            Candidate(c.text, c.dimension, c.sources | {"neighbour"}, c.count, c.first_pos)
            if c.text in votes
            else c
            for c in cands
        ] + extra
        vs = [votes.get(c.text, _NO_VOTE) for c in cands]
        best = (
            max((v[0] for v in vs), default=0.0),
            max((self._prior(priors, c.text) for c in cands), default=0.0),
        )
        feats = [
            self.features(c, note.category, len(cands), priors, v, best, offline.get(c.text, ("", 0.0))[1])
            for c, v in zip(cands, vs, strict=True)
        ]
        return NoteRow(
            note_id=note.note_id,
            ngrams=ngrams,
            weights=weights,
            cand_texts=tuple(c.text for c in cands),
            cand_dims=tuple(c.dimension for c in cands),
            cand_ngrams=tuple(self.cand_ngrams(c.text) for c in cands),
            cand_features=np.asarray(feats, dtype=np.float32).reshape(len(cands), N_FEATURES),
            cand_known=np.asarray([self.known_index.get(c.text, -1) for c in cands], dtype=np.int64),
        )

    def rows(
        self,
        notes: Sequence[NoteInput],
        *,
        priors: Sequence[Priors] | None = None,
        cands: Sequence[Sequence[Candidate]] | None = None,
        exclude: Sequence[int] | None = None,
        use_offline: bool = True,
    ) -> list[NoteRow]:
        """Featurize ``notes``.

        Args:
            priors: per note, the priors to use (training notes: out-of-fold ones); default
                :attr:`priors` for every note.
            cands: precomputed candidates (default: extracted here).
            exclude: per note, the memory row it may not use as a neighbour (itself), or -1.
            use_offline: add the offline handbook teacher's picks (off for the ungrounded ablation,
                since they are read from the note's words).
        """
        cands = cands if cands is not None else self.extractor.extract_many(notes)
        grams = [self.note_ngrams(n) for n in notes]
        weights = [self.weights(g) for g in grams]
        if self.memory is not None and len(notes):
            votes = self.memory.votes(to_csr(grams, weights, self.buckets), exclude)
        else:
            votes = [{} for _ in notes]
        own = priors if priors is not None else [self.priors] * len(notes)
        if self.offline is not None and use_offline:
            picks = [{t.text: (t.dimension, t.confidence) for t in r.tags} for r in self.offline.tag(notes)]
        else:
            picks = [{} for _ in notes]
        return [
            self._row(n, g, w, c, o, v, k)
            for n, g, w, c, o, v, k in zip(notes, grams, weights, cands, own, votes, picks, strict=True)
        ]


def collate(
    rows: Sequence[NoteRow],
    known_index: Mapping[str, int],
    labels: Sequence[Mapping[str, float]] | None = None,
) -> Batch:
    """Rows -> a :class:`~tagging.student.scorer_model.Batch` (targets when ``labels`` are given)."""
    import torch

    from tagging.student.scorer_model import Batch

    def flat(arrays: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = [len(a) for a in arrays]
        offsets = np.zeros(len(arrays), dtype=np.int64)
        if len(arrays) > 1:
            offsets[1:] = np.cumsum(lengths)[:-1]
        values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        return torch.from_numpy(values.astype(np.int64)), torch.from_numpy(offsets)

    note_ids, note_offsets = flat([r.ngrams for r in rows])
    note_weights = torch.from_numpy(np.concatenate([r.weights for r in rows]).astype(np.float32))
    cand_ng = [a for r in rows for a in r.cand_ngrams]
    cand_ids, cand_offsets = flat(cand_ng)
    cand_weights = torch.from_numpy(
        np.concatenate([np.full(len(a), 1.0 / max(len(a), 1), dtype=np.float32) for a in cand_ng])
        if cand_ng
        else np.zeros(0, dtype=np.float32)
    )
    feats = [r.cand_features for r in rows if len(r.cand_texts)]
    batch = Batch(
        note_ids=note_ids,
        note_offsets=note_offsets,
        note_weights=note_weights,
        cand_ids=cand_ids,
        cand_offsets=cand_offsets,
        cand_weights=cand_weights,
        cand_note=torch.tensor([i for i, r in enumerate(rows) for _ in r.cand_texts], dtype=torch.long),
        cand_known=torch.from_numpy(np.concatenate([r.cand_known for r in rows]).astype(np.int64))
        if rows
        else torch.zeros(0, dtype=torch.long),
        cand_features=torch.from_numpy(np.concatenate(feats)) if feats else torch.zeros(0, N_FEATURES),
    )
    if labels is not None:
        tt = torch.zeros(len(rows), len(known_index))
        for i, gold in enumerate(labels):
            for t in gold:
                k = known_index.get(t)
                if k is not None:
                    tt[i, k] = float(gold[t])
        batch.tag_targets = tt
        batch.cand_targets = torch.tensor(
            [float(gold.get(t, 0.0)) for r, gold in zip(rows, labels, strict=True) for t in r.cand_texts]
        )
    return batch
