"""The recommender's user states: each user's recent engagements, their embedding and tag profile
(both cached until the history changes), and the notes they have seen."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from features.errors import NotFoundError
from ranking.data import (
    ENGAGEMENT_WEIGHTS,
    EXPOSURE_LEN,
    Examples,
    NoteCatalog,
    RunData,
    UserTagBags,
    last_shown,
    user_states,
)

if TYPE_CHECKING:
    from ranking.recommend.live_catalog import LiveCatalog

__all__ = ["Interest", "UserState", "UserStates"]

# (text, dimension, weight) of a user's interest.
Interest = tuple[str, str, float]


@dataclass
class UserState:
    """One user: the last engagements (note indices, weights), the last notes shown (when the model
    reads them) and the caches derived from them."""

    hist_note: list[int] = field(default_factory=list)
    hist_weight: list[float] = field(default_factory=list)
    shown: array[int] = field(default_factory=lambda: array("i"))  # 4 bytes a note
    embedding: np.ndarray | None = None
    profile: dict[int, float] | None = None


class UserStates:
    """Every user's state, kept live by :meth:`observe`.

    Args:
        data: the run (users and interactions).
        now_s: histories are built from engagements strictly before this time.
        history_len: engagements kept per user.
        tower_history: engagements the user tower reads (the last ones).
        encode: :class:`Examples` (user side only) -> (B, D) user embeddings (the user tower).
        out_dim: D, for an empty batch.
        exposure: (ptr, notes) of the notes shown per user -> their tag bags
            (:func:`ranking.data.exposure_bags` over the live catalog), for a model whose cold-start
            overlap term reads what the user was shown (``overlap_exposure``): the last
            :data:`~ranking.data.EXPOSURE_LEN` impressions are then kept per user and passed as
            :attr:`Examples.exposure`. None: impressions change nothing.
    """

    def __init__(
        self,
        data: RunData,
        now_s: float,
        *,
        history_len: int,
        tower_history: int,
        encode: Callable[[Examples], np.ndarray],
        out_dim: int,
        exposure: Callable[[np.ndarray, np.ndarray], UserTagBags] | None = None,
    ) -> None:
        self.ids = data.user_ids
        self.history_len = history_len
        self.tower_history = tower_history
        self._encode = encode
        self._out_dim = out_dim
        self._exposure = exposure
        self._index = {u: i for i, u in enumerate(data.user_ids)}
        ex = user_states(
            data, np.arange(data.num_users), np.full(data.num_users, now_s), history_len=history_len
        )
        self.states = [
            UserState(
                ex.hist_note[ex.hist_ptr[u] : ex.hist_ptr[u + 1]].tolist(),
                ex.hist_weight[ex.hist_ptr[u] : ex.hist_ptr[u + 1]].astype(float).tolist(),
            )
            for u in range(data.num_users)
        ]
        if exposure is not None:
            ptr, shown = last_shown(data, np.arange(data.num_users), np.full(data.num_users, now_s))
            for u, s in enumerate(self.states):
                s.shown = array("i", shown[ptr[u] : ptr[u + 1]].tolist())
        self.seen: list[set[int]] = [set(s.hist_note) for s in self.states]
        inter = data.interactions
        eng = inter.weight > 0
        for u, n in zip(inter.user[eng].tolist(), inter.note[eng].tolist(), strict=True):
            self.seen[u].add(n)
        self.refresh(list(range(data.num_users)), now_s)

    def __len__(self) -> int:
        return len(self.states)

    def has(self, user_id: str) -> bool:
        return user_id in self._index

    def row(self, user_id: str) -> int:
        """The user's index.

        Raises:
            NotFoundError: unknown user.
        """
        try:
            return self._index[user_id]
        except (KeyError, TypeError):
            raise NotFoundError(f"user_id: unknown user {user_id!r}") from None

    def examples(self, users: Sequence[int], history_len: int, now_s: float) -> Examples:
        """User-side :class:`Examples` (note = -1) from the last ``history_len`` engagements."""
        notes: list[int] = []
        weights: list[float] = []
        lens = []
        shown: list[int] = []
        shown_lens = []
        for u in users:
            s = self.states[u]
            h = s.hist_note[-history_len:]
            notes.extend(h)
            weights.extend(s.hist_weight[-history_len:])
            lens.append(len(h))
            shown.extend(s.shown)
            shown_lens.append(len(s.shown))
        n = len(users)
        exposure = (
            None
            if self._exposure is None
            else self._exposure(
                np.concatenate([[0], np.cumsum(shown_lens)]).astype(np.int64), np.asarray(shown, np.int64)
            )
        )
        return Examples(
            user=np.asarray(users, np.int64),
            note=np.full(n, -1, np.int64),
            ts=np.full(n, now_s),
            label=np.ones(n, np.float32),
            hist_ptr=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            hist_note=np.asarray(notes, np.int64),
            hist_weight=np.asarray(weights, np.float32),
            exposure=exposure,
        )

    def embed(self, users: np.ndarray, now_s: float, batch: int = 4096) -> np.ndarray:
        """(len(users), D) user-tower embeddings of ``users``' current histories."""
        out = [
            self._encode(self.examples(users[i : i + batch].tolist(), self.tower_history, now_s))
            for i in range(0, len(users), batch)
        ]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self._out_dim), np.float32)

    def refresh(self, users: Sequence[int], now_s: float) -> None:
        """Embed the users whose history changed since their last embedding, in one batch."""
        stale = [u for u in users if self.states[u].embedding is None]
        if stale:
            for u, v in zip(stale, self.embed(np.asarray(stale, np.int64), now_s), strict=True):
                self.states[u].embedding = v

    def vector(self, u: int, now_s: float) -> np.ndarray:
        """User ``u``'s embedding (recomputed when the history changed)."""
        s = self.states[u]
        if s.embedding is None:
            s.embedding = self.embed(np.array([u]), now_s)[0]
        return s.embedding

    def profile(self, u: int, catalog: NoteCatalog) -> dict[int, float]:
        """Tag id -> normalized engagement x confidence weight over the user's history."""
        s = self.states[u]
        if s.profile is None:
            c = catalog
            prof: dict[int, float] = {}
            for n, w in zip(s.hist_note, s.hist_weight, strict=True):
                lo, hi = int(c.tag_ptr[n]), int(c.tag_ptr[n + 1])
                for t, conf in zip(c.tag_vals[lo:hi].tolist(), c.tag_conf[lo:hi].tolist(), strict=True):
                    prof[t] = prof.get(t, 0.0) + w * conf
            total = sum(prof.values()) or 1.0
            s.profile = {t: v / total for t, v in prof.items()}
        return s.profile

    def interests(self, u: int, live: LiveCatalog, top_k: int = 20) -> tuple[list[Interest], int]:
        """User ``u``'s strongest tag interests as (text, dimension, weight) and the history length."""
        prof = self.profile(u, live.catalog)
        dims = live.tag_dims()
        best = sorted(prof.items(), key=lambda kv: (-kv[1], kv[0]))[: max(top_k, 0)]
        out = [(live.tag_text(t), live.dimension_name(dims[t]), float(w)) for t, w in best]
        return out, len(self.states[u].hist_note)

    def observe(self, u: int, n: int, event: str) -> None:
        """User ``u``'s ``event`` on note ``n``: an engagement (weight > 0 in ENGAGEMENT_WEIGHTS) is
        :meth:`engage`; an impression joins the notes shown when the model reads them (else changes
        nothing here)."""
        w = ENGAGEMENT_WEIGHTS.get(event, 0.0)
        if w > 0:
            self.engage(u, n, w)
        elif event == "impression" and self._exposure is not None:
            s = self.states[u]
            s.shown.append(n)
            if len(s.shown) > EXPOSURE_LEN:
                del s.shown[:-EXPOSURE_LEN]
            s.embedding = None

    def engage(self, u: int, n: int, weight: float) -> None:
        """User ``u`` engaged with note ``n``: extend the history, mark the note seen, drop the caches."""
        s = self.states[u]
        s.hist_note.append(n)
        s.hist_weight.append(float(weight))
        if len(s.hist_note) > self.history_len:
            del s.hist_note[: -self.history_len], s.hist_weight[: -self.history_len]
        s.embedding = None
        s.profile = None
        self.seen[u].add(n)

    def forget_note(self, n: int) -> None:
        """Note ``n`` changed (re-tagged): drop the caches of the users whose history holds it."""
        for s in self.states:
            if n in s.hist_note:
                s.profile = None
                s.embedding = None
            elif n in s.shown:
                s.embedding = None
