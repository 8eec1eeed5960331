"""A note index split into S shards by a stable hash of the note id; search = per-shard top-k, merged.

Each shard is a :class:`~ranking.retrieval.index.NoteIndex` of any kind. In serving, a shard is what one
replica process holds (docs/scaling.md "Index"): the recommender sends the user vector to one replica
of every shard, each answers its top k, and :func:`merge_top_k` makes the answer; here all shards sit
in one process, which is what the tests check the merge with.

Order: score descending, then note id ascending, so the merged list does not depend on the number of
shards or on the order their answers arrive. With the ``exact`` kind the merged top k equals the
unsharded top k in that order, ties at the k-th place included: a shard whose k-th score ties with
the scores after it returns those too (:meth:`ShardedIndex.search`).

Example::

    index = ShardedIndex.build(item_vecs, note_ids, shards=2, kind="exact")
    index.add(fresh_vecs, fresh_ids)                 # each goes to shard_of(note_id, 2)
    scores, ids = index.search(user_vecs, k=100)     # (Q, k) scores; ids per query
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.errors import ConfigError
from ranking.retrieval.index import NoteIndex

__all__ = ["ShardedIndex", "merge_top_k", "shard_of"]

_MISSING = -float(np.finfo(np.float32).max)


def shard_of(note_id: str, shards: int) -> int:
    """The shard of ``note_id`` among ``shards``: blake2b of its UTF-8 bytes, mod ``shards`` (the same in
    every process and Python version, unlike ``hash``)."""
    digest = hashlib.blake2b(note_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % shards


def merge_top_k(
    answers: Sequence[tuple[np.ndarray, list[list[str]]]], k: int
) -> tuple[np.ndarray, list[list[str]]]:
    """Merge per-shard answers ``(scores (Q, k_s), ids per query)`` into the top ``k`` per query.

    Returns:
        (scores (Q, k) float32, empty slots at faiss's missing score), ids per query (at most k).
    """
    n_queries = len(answers[0][1]) if answers else 0
    scores = np.full((n_queries, k), _MISSING, np.float32)
    ids: list[list[str]] = []
    for q in range(n_queries):
        pool = [(float(s[q, j]), nid) for s, got in answers for j, nid in enumerate(got[q])]
        pool.sort(key=lambda t: (-t[0], t[1]))
        best = pool[:k]
        scores[q, : len(best)] = [s for s, _ in best]
        ids.append([nid for _, nid in best])
    return scores, ids


@dataclass
class ShardedIndex:
    """``shards`` :class:`NoteIndex` es; note ``n`` lives in ``shards[shard_of(n, len(shards))]``."""

    shards: list[NoteIndex]

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        note_ids: Sequence[str],
        *,
        shards: int = 2,
        kind: str = "exact",
        **kwargs: Any,
    ) -> ShardedIndex:
        """Split ``vectors`` (N, D) by :func:`shard_of` and build one :meth:`NoteIndex.build` per shard
        (``kind`` and ``kwargs`` passed on; an empty shard is an empty exact index).

        Raises:
            ConfigError: ``shards`` < 1 or shapes that do not match.
        """
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ConfigError(f"shards: got {shards!r}; expected an integer >= 1")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(note_ids):
            raise ConfigError(
                f"vectors: got shape {vectors.shape} for {len(note_ids)} note ids; expected (N, D) with N = ids"
            )
        owner = np.array([shard_of(n, shards) for n in note_ids], np.int64)
        parts = []
        for s in range(shards):
            rows = np.flatnonzero(owner == s)
            ids = [note_ids[int(r)] for r in rows]
            if len(rows):
                parts.append(NoteIndex.build(vectors[rows], ids, kind=kind, **kwargs))
            else:
                parts.append(NoteIndex.trained(vectors[:0], kind="exact"))
        return cls(parts)

    def shard_of(self, note_id: str) -> int:
        return shard_of(note_id, len(self.shards))

    def add(self, vectors: np.ndarray, note_ids: Sequence[str]) -> None:
        """Add (or replace, see :meth:`NoteIndex.add`) each note in its own shard.

        Raises:
            ConfigError: shapes that do not match.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(note_ids):
            raise ConfigError(f"add: got vectors of shape {vectors.shape} for {len(note_ids)} note ids")
        owner = np.array([self.shard_of(n) for n in note_ids], np.int64)
        for s, shard in enumerate(self.shards):
            rows = np.flatnonzero(owner == s)
            if len(rows):
                shard.add(vectors[rows], [note_ids[int(r)] for r in rows])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top ``k`` per query over all shards: (scores (Q, k), ids per query), score then id order.

        Raises:
            ConfigError: ``k`` < 1.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"k: got {k!r}; expected an integer >= 1")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        return merge_top_k([_shard_top(shard, queries, k) for shard in self.shards if len(shard)], k)

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)


def _shard_top(shard: NoteIndex, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
    """The shard's top ``k`` and one more, extended while the last one fetched ties with the k-th (so
    the merge breaks a tie at the k-th place by note id, as the unsharded order does)."""
    fetch = min(k + 1, len(shard))
    while True:
        scores, ids = shard.search(queries, fetch)
        if fetch >= len(shard):
            return scores, ids
        tied = any(
            len(got) == fetch and scores[q, fetch - 1] == scores[q, k - 1] for q, got in enumerate(ids)
        )
        if not tied:
            return scores, ids
        fetch = min(2 * fetch, len(shard))
