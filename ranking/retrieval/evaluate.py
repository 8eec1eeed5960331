"""Offline evaluation: time-split retrieval metrics (warm vs cold-start notes) and ranker metrics.

Retrieval protocol (one place, so every model and peer is scored the same way):

- users are represented as of the cold-start cutoff (history strictly before it);
- positives are the users' clicks at or after the cutoff, as distinct (user, note) pairs, split
  into **warm** (note created before the cutoff) and **cold** (created at or after it: never seen
  in training);
- ``pool="all"`` (default): every note is one candidate pool — warm and cold notes compete in the
  same index, as in serving — minus the notes the user engaged with before the cutoff; Recall@K of
  a segment counts that segment's positives in the shared top K;
- ``pool="segment"``: warm positives ranked among warm notes, cold among cold notes only (a
  dedicated cold-start channel; easy for coarse features when the cold pool is small);
- ``pool="quota"``: the shared pool of ``all`` with a fresh-note quota (what serving does with
  ``tagllm serve --cold-slot-every``): every ``K // cold_quota``-th slot of the top K (K = the
  largest cutoff; 10 of 50 = every 5th) goes to the model's best cold note not yet listed, the other slots keep the model's own
  order over every note (cold notes may take them too). It measures which cold notes a model picks
  when cold notes get a share of the list, and what the warm notes lose for it;
- ties are broken at random (a model that cannot tell notes apart scores like chance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from features.errors import ConfigError
from ranking.data import RunData

__all__ = [
    "EmbeddingScorer",
    "RetrievalTestSet",
    "Scorer",
    "auc",
    "evaluate_retrieval",
    "evaluate_split",
    "gauc",
    "group_ndcg",
    "retrieval_test_set",
    "with_cold_slots",
]


class Scorer(Protocol):
    """Anything that scores (user, note) pairs: ``scores(users, notes) -> (len(users), len(notes))``."""

    def scores(self, users: np.ndarray, notes: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class RetrievalTestSet:
    """Test users, their positives per segment and what to exclude.

    Attributes:
        users: (U,) user indices with at least one test positive.
        positives: segment -> list (per user) of positive note indices.
        pools: segment -> candidate note indices.
        seen: per user, note indices engaged before the cutoff (excluded from the warm pool).
        pool: ``all``, ``segment`` or ``quota`` (see the module docstring).
        cold_quota: ``quota`` pool only: cold slots among the top K.
        cold: ``quota`` pool only: (N,) bool, True for cold-start notes.
    """

    users: np.ndarray
    positives: Mapping[str, list[np.ndarray]]
    pools: Mapping[str, np.ndarray]
    seen: list[np.ndarray]
    pool: str = "all"
    cold_quota: int = 0
    cold: np.ndarray | None = None

    def with_quota(self, cold: np.ndarray, cold_quota: int) -> RetrievalTestSet:
        """This shared-pool (``all``) test set as the ``quota`` pool: same users, positives and pools.

        Raises:
            ConfigError: ``cold_quota`` is not an integer >= 1, or this is not an ``all`` test set.
        """
        if isinstance(cold_quota, bool) or not isinstance(cold_quota, int) or cold_quota < 1:
            raise ConfigError(
                f"cold_quota: got {cold_quota!r}; expected an integer >= 1 (cold slots of the top K)"
            )
        if self.pool != "all":
            raise ConfigError(f"pool: got {self.pool!r}; the quota pool is built from the 'all' pool")
        return replace(self, pool="quota", cold_quota=cold_quota, cold=np.asarray(cold, dtype=bool))


POOLS = ("all", "segment", "quota")


def retrieval_test_set(
    data: RunData, events: Sequence[str] = ("click",), pool: str = "all", cold_quota: int = 10
) -> RetrievalTestSet:
    """Build the time-split test set (see module docstring for ``pool`` and ``cold_quota``)."""
    if pool not in POOLS:
        raise ConfigError(f"pool: got {pool!r}; expected one of {', '.join(POOLS)}")
    if pool == "quota":
        return retrieval_test_set(data, events, pool="all").with_quota(data.cold, cold_quota)
    inter = data.interactions
    cold = data.cold
    test = inter.select(np.isin(inter.event, list(events)) & (inter.ts >= data.cutoff_s))
    pairs = np.unique(np.stack([test.user, test.note], axis=1), axis=0)
    users = np.unique(pairs[:, 0])
    split = np.searchsorted(pairs[:, 0], users, side="left")
    per_user = np.split(pairs[:, 1], split[1:])
    hist = inter.select((inter.weight > 0) & (inter.ts < data.cutoff_s))
    seen_pairs = np.unique(np.stack([hist.user, hist.note], axis=1), axis=0)
    seen = (
        [seen_pairs[seen_pairs[:, 0] == u, 1] for u in users]
        if len(seen_pairs)
        else [np.zeros(0, np.int64) for _ in users]
    )
    return RetrievalTestSet(
        users=users,
        positives={
            "warm": [p[~cold[p]] for p in per_user],
            "cold": [p[cold[p]] for p in per_user],
        },
        pools={"warm": np.flatnonzero(~cold), "cold": np.flatnonzero(cold)}
        if pool == "segment"
        else {"warm": np.arange(len(cold)), "cold": np.arange(len(cold))},
        seen=seen,
        pool=pool,
    )


def _top_sorted(s: np.ndarray, k: int) -> np.ndarray:
    """(U, k) column indices of each row's k highest scores, best first."""
    top = np.argpartition(-s, k - 1, axis=1)[:, :k]
    return np.take_along_axis(top, np.argsort(-np.take_along_axis(s, top, axis=1), axis=1), axis=1)


def with_cold_slots(top: np.ndarray, cold_top: np.ndarray, every: int) -> np.ndarray:
    """Merge per row: every ``every``-th slot (1-based: slots every, 2*every, ...) takes the next
    unused entry of ``cold_top``; the other slots keep ``top``'s order.

    Args:
        top: (U, K) the model's ranking over every candidate (best first).
        cold_top: (U, C) the model's ranking over the cold candidates only (best first).
        every: the slot period (>= 1); 0 returns ``top`` unchanged.

    Returns:
        (U, K) the merged ranking; no entry appears twice in a row. A cold slot falls back to
        ``top``'s order when ``cold_top`` runs out.
    """
    u, k = top.shape
    if every <= 0:
        return top
    slots = set(range(every - 1, k, every))
    out = np.empty_like(top)
    for r in range(u):
        used: set[int] = set()
        t_iter, c_iter = iter(top[r].tolist()), iter(cold_top[r].tolist())
        for i in range(k):
            first, second = (c_iter, t_iter) if i in slots else (t_iter, c_iter)
            nxt = next((x for x in first if x not in used), None)
            if nxt is None:  # one list ran out: the other always has an unused entry (top has K)
                nxt = next(x for x in second if x not in used)
            used.add(nxt)
            out[r, i] = nxt
    return out


def evaluate_split(
    warm: Scorer, cold: Scorer, test: RetrievalTestSet, ks: Sequence[int] = (10, 50), seed: int = 0
) -> dict[str, float]:
    """:func:`evaluate_retrieval` with the cold segment scored by ``cold`` and the rest by ``warm``:
    a model whose cold-only query differs from its shared one (``TwoTowerConfig.cold_overlap``)."""
    w = evaluate_retrieval(warm, test, ks=ks, seed=seed)
    c = evaluate_retrieval(cold, test, ks=ks, seed=seed)
    return {k: (c if k.startswith("cold_") else w)[k] for k in w}


def evaluate_retrieval(
    scorer: Scorer,
    test: RetrievalTestSet,
    ks: Sequence[int] = (10, 50),
    seed: int = 0,
    batch_users: int = 512,
) -> dict[str, float]:
    """Recall@K and NDCG@K per segment (``warm``/``cold``), averaged over users with positives there.

    Returns:
        ``{"warm_recall@50": ..., "cold_ndcg@10": ..., "warm_users": n, ...}``.
    """
    rng = np.random.default_rng(seed)
    kmax = max(ks)
    out: dict[str, float] = {}
    for seg, pool in test.pools.items():
        recalls: dict[int, list[float]] = {k: [] for k in ks}
        ndcgs: dict[int, list[float]] = {k: [] for k in ks}
        pos_lists = test.positives[seg]
        keep = np.array([len(p) > 0 for p in pos_lists], dtype=bool)
        users = test.users[keep]
        user_rows = np.flatnonzero(keep)
        pool_pos = np.full(int(pool.max()) + 1 if len(pool) else 1, -1, np.int64)
        pool_pos[pool] = np.arange(len(pool))
        for b in range(0, len(users), batch_users):
            rows = user_rows[b : b + batch_users]
            s = np.asarray(scorer.scores(test.users[rows], pool), dtype=np.float64)
            s = s + rng.random(s.shape) * 1e-9 * (np.abs(s).max() + 1.0)
            if seg == "warm" or test.pool == "all":
                for j, r in enumerate(rows):
                    idx = pool_pos[test.seen[r][test.seen[r] < len(pool_pos)]]
                    s[j, idx[idx >= 0]] = -np.inf
            k_eff = min(kmax, len(pool))
            top = _top_sorted(s, k_eff)
            if test.cold_quota and test.cold is not None:
                cold_cols = np.flatnonzero(test.cold[pool])
                if len(cold_cols):
                    ctop = _top_sorted(s[:, cold_cols], min(k_eff, len(cold_cols)))
                    top = with_cold_slots(top, cold_cols[ctop], max(1, kmax // test.cold_quota))
            for j, r in enumerate(rows):
                pos = pool_pos[pos_lists[r]]
                hit = np.isin(top[j], pos)
                for k in ks:
                    h = hit[:k]
                    recalls[k].append(float(h.sum()) / len(pos))
                    dcg = float((h / np.log2(np.arange(2, len(h) + 2))).sum())
                    idcg = float((1.0 / np.log2(np.arange(2, min(len(pos), k) + 2))).sum())
                    ndcgs[k].append(dcg / idcg)
        for k in ks:
            out[f"{seg}_recall@{k}"] = round(float(np.mean(recalls[k])) if recalls[k] else float("nan"), 4)
            out[f"{seg}_ndcg@{k}"] = round(float(np.mean(ndcgs[k])) if ndcgs[k] else float("nan"), 4)
        out[f"{seg}_users"] = len(users)
    return out


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum formula (ties get average ranks); NaN when one class is absent."""
    from scipy.stats import rankdata

    labels = np.asarray(labels) > 0
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _groups(group: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(group, kind="stable")
    _, starts = np.unique(group[order], return_index=True)
    return np.split(order, starts[1:])


def gauc(labels: np.ndarray, scores: np.ndarray, group: np.ndarray) -> float:
    """Group AUC: per-group AUC weighted by group size, over groups with both classes."""
    num = 0.0
    den = 0
    for idx in _groups(group):
        a = auc(labels[idx], scores[idx])
        if not np.isnan(a):
            num += a * len(idx)
            den += len(idx)
    return num / den if den else float("nan")


def group_ndcg(labels: np.ndarray, scores: np.ndarray, group: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k over groups with at least one positive."""
    vals = []
    for idx in _groups(group):
        y = labels[idx]
        if y.sum() <= 0:
            continue
        order = np.argsort(-scores[idx], kind="stable")[:k]
        disc = 1.0 / np.log2(np.arange(2, len(order) + 2))
        dcg = float((y[order] * disc).sum())
        ideal = np.sort(y)[::-1][:k]
        idcg = float((ideal * disc[: len(ideal)]).sum())
        vals.append(dcg / idcg)
    return float(np.mean(vals)) if vals else float("nan")


class EmbeddingScorer:
    """Dot-product scorer over precomputed embeddings.

    Args:
        users: (U, O) user embeddings, row i for user index ``user_index[i]``.
        user_index: (U,) user indices of the rows.
        items: (N, O) embeddings of every note (row = note index).
    """

    def __init__(self, users: np.ndarray, user_index: np.ndarray, items: np.ndarray) -> None:
        self.users = users
        self.row = {int(u): i for i, u in enumerate(user_index)}
        self.items = items

    def scores(self, users: np.ndarray, notes: np.ndarray) -> np.ndarray:
        rows = np.array([self.row[int(u)] for u in users], dtype=np.int64)
        return self.users[rows] @ self.items[notes].T
