"""Batched serving for the simulator: :class:`BatchRecommender` answers many users' requests with one
user-tower forward and one ranker call, giving the same slates as per-user
:meth:`~ranking.recommend.Recommender.recommend` on the same state (a test checks it).

Per-request costs of the in-memory pipeline are dominated by fixed overheads (a DataFrame of ranker
features and a LightGBM call per request); the simulator serves thousands of sessions, so it builds
the features of a whole batch of requests at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from features.errors import ConfigError
from ranking.recommend import Filters, Recommendation, Recommender

__all__ = ["BatchRecommender"]


class BatchRecommender(Recommender):
    """A :class:`Recommender` with :meth:`recommend_many` (same constructor).

    Args:
        *args, **kwargs: as :class:`Recommender`.
        explain: False skips the ``reasons`` of each recommendation (simulated users do not read
            them; they cost a profile lookup per shown note).
    """

    def __init__(self, *args: Any, explain: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.explain = explain

    def _reasons(self, u: int, n: int, limit: int = 3) -> tuple[str, ...]:
        return super()._reasons(u, n, limit) if self.explain else ()

    def recommend_many(
        self,
        user_ids: Sequence[str],
        k: int,
        *,
        candidates: int = 300,
        filters: Sequence[Filters | None] | None = None,
    ) -> list[list[Recommendation]]:
        """:meth:`recommend` for several users at once (distinct users; the state is not changed).

        Args:
            user_ids: the users.
            k: notes per user.
            candidates: retrieval candidates per user.
            filters: one per user (None = default filters).

        Raises:
            ConfigError: ``k`` < 1. NotFoundError: an unknown user.
        """
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k: got {k!r}; expected an integer >= 1")
        if not user_ids:
            return []
        filters = list(filters) if filters is not None else [None] * len(user_ids)
        users = [self._user(u) for u in user_ids]
        stale = [u for u in users if self._users[u].embedding is None]
        if stale:
            for u, v in zip(stale, self._embed_users(np.asarray(stale, np.int64)), strict=True):
                self._users[u].embedding = v
        found = [self.retrieve(uid, max(candidates, k), f) for uid, f in zip(user_ids, filters, strict=True)]
        lens = np.array([len(n) for n, _ in found], np.int64)
        notes = np.concatenate([n for n, _ in found]) if len(found) else np.zeros(0, np.int64)
        rscores = np.concatenate([s for _, s in found]) if len(found) else np.zeros(0, np.float32)
        scores = self._score_many(users, lens, notes, rscores)
        out, lo = [], 0
        for u, n in zip(users, lens.tolist(), strict=True):
            out.append(self._results(u, notes[lo : lo + n], rscores[lo : lo + n], scores[lo : lo + n], k))
            lo += n
        return out

    def _score_many(
        self, users: list[int], lens: np.ndarray, notes: np.ndarray, rscores: np.ndarray
    ) -> np.ndarray:
        if self.ranker is None or not len(notes):
            return rscores.astype(np.float64)
        from ranking.ranker import ranker_features

        ex = self._examples(users, self.history_len).take(np.repeat(np.arange(len(users)), lens))
        ex = replace(ex, note=notes.astype(np.int64))
        frame = ranker_features(
            self.data, ex, note_stats=(self._impressions, self._clicks), retrieval_scores=rscores
        )
        return self.ranker.predict(frame)
