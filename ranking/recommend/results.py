"""From scored candidates to the returned lists: the order (the exploration policy's keys, with the
fresh-note quota) and the reasons (the user's strongest profile tags that a note carries)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ranking.recommend.live_catalog import LiveCatalog
from ranking.recommend.users import UserStates
from ranking.recommend.values import Recommendation
from ranking.retrieval.evaluate import with_cold_slots

__all__ = ["Slate", "reasons", "recommendations", "slates"]


@dataclass(frozen=True)
class Slate:
    """How a list is cut from the ranked candidates.

    Args:
        k: notes returned.
        cold_slot_every: every N-th slot goes to the best-ranked cold-start candidate not yet listed
            (0 = off).
        explain: False leaves ``reasons`` empty.
    """

    k: int
    cold_slot_every: int = 0
    explain: bool = True


def reasons(live: LiveCatalog, users: UserStates, u: int, n: int, limit: int = 3) -> tuple[str, ...]:
    """Up to ``limit`` tag texts of note ``n`` in user ``u``'s profile, strongest first."""
    prof = users.profile(u, live.catalog)
    hits = sorted((t for t in set(live.tag_ids(n)) if t in prof), key=lambda t: (-prof[t], t))
    return tuple(live.tag_text(t) for t in hits[:limit])


def recommendations(
    live: LiveCatalog,
    users: UserStates,
    u: int,
    notes: np.ndarray,
    rscores: np.ndarray,
    scores: np.ndarray,
    slate: Slate,
    keys: np.ndarray | None = None,
) -> list[Recommendation]:
    """The top ``slate.k`` of ``notes`` (C,) for user ``u`` by ``keys`` (C,; default ``scores``); ties
    keep the candidate order. ``rscores`` and ``scores`` (C,): the retrieval and ranker scores,
    returned alongside (an exploration policy orders by its keys; the scores stay the model's)."""
    k = slate.k
    order = np.argsort(-(scores if keys is None else keys), kind="stable")
    cold = live.cold
    if slate.cold_slot_every and len(order):
        cold_order = order[cold[notes[order]]]
        kk = min(k, len(order))
        order = with_cold_slots(order[None, :kk], cold_order[None, :kk], slate.cold_slot_every)[0]
    return [
        Recommendation(
            note_id=str(live.catalog.note_ids[notes[j]]),
            score=float(scores[j]),
            retrieval_score=float(rscores[j]),
            reasons=reasons(live, users, u, int(notes[j])) if slate.explain else (),
            category=live.category_name(int(notes[j])),
            cold_start=bool(cold[notes[j]]),
        )
        for j in order[:k]
    ]


def slates(
    live: LiveCatalog,
    users: UserStates,
    user_rows: list[int],
    lens: np.ndarray,
    notes: np.ndarray,
    rscores: np.ndarray,
    scores: np.ndarray,
    slate: Slate,
    keys: np.ndarray | None = None,
) -> list[list[Recommendation]]:
    """:func:`recommendations` per user: ``lens[i]`` consecutive candidates belong to ``user_rows[i]``."""
    out, lo = [], 0
    for u, n in zip(user_rows, lens.tolist(), strict=True):
        part = slice(lo, lo + n)
        key = None if keys is None else keys[part]
        out.append(recommendations(live, users, u, notes[part], rscores[part], scores[part], slate, key))
        lo += n
    return out
