"""Candidate search for one user vector: the filter mask, the ANN index search, exact top-n over an
allowed set, and the ranker's scores of the candidates."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from features.errors import NotFoundError
from ranking.data import Examples, RunData
from ranking.recommend.live_catalog import LiveCatalog
from ranking.recommend.values import Filters

if TYPE_CHECKING:
    from ranking.ranker import Ranker

__all__ = ["filter_mask", "ranker_scores", "search", "top_exact"]


def filter_mask(live: LiveCatalog, filters: Filters, seen: Iterable[int]) -> np.ndarray | None:
    """(N,) bool of the notes ``filters`` allow, minus ``seen`` unless ``filters.include_seen``;
    None when everything is allowed.

    Raises:
        NotFoundError: an unknown category in ``filters.categories``.
    """
    c = live.catalog
    mask: np.ndarray | None = None

    def both(m: np.ndarray) -> np.ndarray:
        return m if mask is None else mask & m

    if filters.categories:
        unknown = [x for x in filters.categories if x not in live.cat_index]
        if unknown:
            raise NotFoundError(
                f"filters.categories: unknown {unknown}; expected some of {list(c.categories)}"
            )
        mask = both(np.isin(c.category, [live.cat_index[x] for x in filters.categories]))
    if filters.created_after_s is not None:
        mask = both(c.created_s > filters.created_after_s)
    if filters.cold_start_only:
        mask = both(live.cold)
    drop = [c.index[n] for n in filters.exclude_note_ids if n in c.index]
    if not filters.include_seen:
        drop.extend(seen)
    if drop:
        mask = np.ones(c.num_notes, bool) if mask is None else mask.copy()
        mask[np.asarray(drop, np.int64)] = False
    return mask


def top_exact(items: np.ndarray, q: np.ndarray, allowed: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best of ``allowed`` note indices by ``items @ q``, best first (one mat-vec)."""
    return _best(allowed, lambda rows: items[rows] @ q, n)


def _best(
    allowed: np.ndarray, score: Callable[[np.ndarray], np.ndarray], n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best of ``allowed`` note indices by ``score(allowed)``, best first, with their scores."""
    if not len(allowed) or n < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    s = score(allowed)
    top = np.argpartition(-s, n - 1)[:n] if len(s) > n else np.arange(len(s))
    top = top[np.argsort(-s[top], kind="stable")]
    return allowed[top].astype(np.int64), s[top].astype(np.float32)


def search(
    live: LiveCatalog,
    q: np.ndarray,
    mask: np.ndarray | None,
    filters: Filters,
    n: int,
    *,
    cold_candidates: int = 0,
    cold_score: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` (note indices, scores) for the user vector ``q`` (D,) among the notes ``mask`` allows,
    then up to ``cold_candidates`` allowed cold-start notes not among them (the cold-start channel).

    ``cold_score``: scores of note indices under the query that ranks cold-start notes among
    themselves (``TwoTowerConfig.cold_overlap``; :class:`~ranking.recommend.overlap.ColdOverlap`),
    used by the channel and by every search under ``cold_start_only``; default ``items @ q``. The
    returned scores are always ``items @ q``, the retrieval score the ranker was trained on.
    """
    if cold_score is not None and filters.cold_start_only and mask is not None:
        notes, _ = _best(np.flatnonzero(mask), cold_score, n)
        return notes, (live.items[notes] @ q).astype(np.float32)
    notes, scores = _top(live, q, mask, filters, n)
    if not cold_candidates:
        return notes, scores
    cold = live.cold.copy() if mask is None else mask & live.cold
    cold[notes] = False
    if cold_score is None:
        extra, extra_scores = top_exact(live.items, q, np.flatnonzero(cold), cold_candidates)
    else:
        extra, _ = _best(np.flatnonzero(cold), cold_score, cold_candidates)
        extra_scores = (live.items[extra] @ q).astype(np.float32)
    return np.concatenate([notes, extra]), np.concatenate([scores, extra_scores])


def _top(
    live: LiveCatalog, q: np.ndarray, mask: np.ndarray | None, filters: Filters, n: int
) -> tuple[np.ndarray, np.ndarray]:
    total = live.num_notes
    if mask is not None and filters.restrictive:
        # A selective filter: score the allowed notes exactly (one mat-vec) rather than over-fetch.
        return top_exact(live.items, q, np.flatnonzero(mask), n)
    excluded = 0 if mask is None else total - int(mask.sum())
    fetch = min(total, n + excluded)
    scores, rows = live.index.index.search(np.ascontiguousarray(q[None, :], dtype=np.float32), fetch)
    rows, scores = rows[0], scores[0]
    keep = rows >= 0
    if mask is not None:
        keep &= mask[np.maximum(rows, 0)]
    return rows[keep][:n].astype(np.int64), scores[keep][:n].astype(np.float32)


def ranker_scores(
    ranker: Ranker | None,
    data: RunData,
    hist: Examples,
    lens: np.ndarray,
    notes: np.ndarray,
    retrieval_scores: np.ndarray,
    *,
    now_s: float,
    note_stats: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Ranker scores of ``notes``: ``lens[i]`` consecutive candidates for the user of ``hist`` row i
    (the retrieval scores themselves without a ranker)."""
    if ranker is None or not len(notes):
        return retrieval_scores.astype(np.float64)
    from ranking.ranker import feature_columns

    shared = len(hist) == 1  # one user: their profile is built once, not per candidate
    rows = np.repeat(np.arange(len(hist)), lens)
    ex = hist if shared else hist.take(rows)
    n = len(notes)
    ex = Examples(
        user=hist.user[rows],
        note=notes.astype(np.int64),
        ts=np.full(n, now_s),
        label=np.ones(n, np.float32),
        hist_ptr=ex.hist_ptr,
        hist_note=ex.hist_note,
        hist_weight=ex.hist_weight,
    )
    columns = feature_columns(
        data, ex, note_stats=note_stats, retrieval_scores=retrieval_scores, shared_history=shared
    )
    return ranker.predict_columns(columns)
