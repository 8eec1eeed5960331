"""Assignment and the session loop: recommend → impressions → true responses → ``observe``.

Day 0 starts at the first UTC midnight after the run's last interaction. Days ``0 .. pre_days-1`` are the
pre-period (everyone served by control), the next ``days`` the experiment (each user served by
their arm). Each day's fresh notes (:mod:`tagllm.simulate.fresh`) are added to every arm at their
publication time, between session batches (with their tags to the tag arms, the category only to
control).

Every arm keeps its own serving state. Pre-period events reach every arm's recommender (a common
history: user histories and note counts are the same in every arm at assignment); an experiment event
reaches only the recommender of the arm that served it, so an arm's note impression/click counts (the
ranker's note features and the exploration policy's evidence) come from its own traffic and one arm's
exploration cannot leak into another arm's ranking.

Randomness is keyed, not sequential: a user's sessions on a day and each session's responses draw
from generators seeded by (seed, day, user, session), so capping the population or changing one
arm does not reshuffle anybody else's draws.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tagllm.simulate.arms import Arm
from tagllm.simulate.config import SimConfig
from tagllm.simulate.fresh import FreshNote, Publisher
from tagllm.simulate.truth import ENGAGEMENTS, TrueModel

if TYPE_CHECKING:
    from ranking.recommend import Recommendation, Recommender

__all__ = ["VARIANTS", "assign", "bucket", "run_sessions", "select_users"]

log = logging.getLogger(__name__)

#: The two-arm experiment's variants (the default arms).
VARIANTS = ("control", "treatment")
DAY_S = 86_400.0
_BUCKETS = 10_000


def bucket(salt: str, user_id: str, buckets: int = 10_000) -> int:
    """Deterministic bucket in ``[0, buckets)`` of ``user_id`` under ``salt`` (sha256)."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def select_users(user_ids: Sequence[str], cap: int | None, seed: int) -> list[str]:
    """All users, or the ``cap`` users with the smallest salted hash (a seeded random subset), sorted."""
    ids = sorted(map(str, user_ids))
    if cap is None or cap >= len(ids):
        return ids
    ranked = sorted(ids, key=lambda u: (hashlib.sha256(f"sample:{seed}:{u}".encode()).digest(), u))
    return sorted(ranked[:cap])


def assign(
    user_ids: Sequence[str],
    experiment: str,
    seed: int,
    assigned_at: pd.Timestamp,
    arms: Sequence[str] = VARIANTS,
) -> pd.DataFrame:
    """Even assignment to ``arms`` by a salted hash of user_id (bucket b of 10,000 -> ``arms[b * len(arms)
    // 10,000]``; with two arms: b < 5,000 control): columns user_id, experiment, variant, assigned_at."""
    salt = f"{experiment}:{seed}"
    n = len(arms)
    variant = [arms[bucket(salt, u, _BUCKETS) * n // _BUCKETS] for u in user_ids]
    return pd.DataFrame(
        {
            "user_id": list(user_ids),
            "experiment": experiment,
            "variant": variant,
            "assigned_at": pd.Series([assigned_at] * len(user_ids), dtype="datetime64[us, UTC]"),
        }
    )


@dataclass
class _Log:
    user: list[str] = field(default_factory=list)
    note: list[str] = field(default_factory=list)
    ts: list[float] = field(default_factory=list)
    event: list[str] = field(default_factory=list)
    dwell: list[float] = field(default_factory=list)
    cold: list[bool] = field(default_factory=list)
    served_by: list[str] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    p_click: list[float] = field(default_factory=list)

    def add(
        self,
        user: str,
        note: str,
        ts: float,
        event: str,
        arm: str,
        cold: bool,
        pos: int,
        dwell: float,
        p: float,
    ) -> None:
        self.user.append(user)
        self.note.append(note)
        self.ts.append(ts)
        self.event.append(event)
        self.dwell.append(dwell)
        self.cold.append(cold)
        self.served_by.append(arm)
        self.position.append(pos)
        self.p_click.append(p)

    def frame(self) -> pd.DataFrame:
        ts_us = np.round(np.asarray(self.ts, dtype=np.float64) * 1e6).astype(np.int64)
        df = pd.DataFrame(
            {
                "user_id": pd.Series(self.user, dtype=object),
                "note_id": pd.Series(self.note, dtype=object),
                "ts": pd.Series(ts_us.astype("datetime64[us]")).dt.tz_localize("UTC"),
                "event": pd.Series(self.event, dtype=object),
                "dwell_seconds": np.asarray(self.dwell, dtype=np.float64),
                "is_cold_start": np.asarray(self.cold, dtype=bool),
                "served_by": pd.Series(self.served_by, dtype=object),
                "position": np.asarray(self.position, dtype=np.int16),
                "p_click": np.asarray(self.p_click, dtype=np.float64),
            }
        )
        order = np.lexsort((df["position"].to_numpy(), ts_us))
        return df.iloc[order].reset_index(drop=True)


def _day_sessions(
    users: Sequence[str],
    truth_idx: np.ndarray,
    activity: np.ndarray,
    day: int,
    cfg: SimConfig,
    start_s: float,
) -> list[tuple[float, int, int]]:
    """(ts, user position, session number) of every session on ``day``, in time order."""
    out: list[tuple[float, int, int]] = []
    for i, t in enumerate(truth_idx):
        rng = np.random.default_rng([cfg.seed, 1, day, int(t)])
        n = int(rng.poisson(cfg.sessions_per_day * activity[t]))
        times = np.sort(rng.random(n)) * (DAY_S - 3_600.0)  # the last hour stays free for late events
        out.extend((start_s + day * DAY_S + float(x), i, j) for j, x in enumerate(times))
    out.sort()
    return out


def _batches(sessions: list[tuple[float, int, int]], size: int) -> list[list[tuple[float, int, int]]]:
    """Consecutive runs of at most ``size`` sessions with distinct users (a user's next session waits
    for the responses to the previous one)."""
    out: list[list[tuple[float, int, int]]] = []
    cur: list[tuple[float, int, int]] = []
    users: set[int] = set()
    for s in sessions:
        if len(cur) >= size or s[1] in users:
            out.append(cur)
            cur, users = [], set()
        cur.append(s)
        users.add(s[1])
    if cur:
        out.append(cur)
    return out


def run_sessions(
    arms: dict[str, Arm],
    truth: TrueModel,
    users: Sequence[str],
    variants: dict[str, str],
    cfg: SimConfig,
    start_s: float,
    on_day: Callable[[int], None] | None = None,
    fresh: Publisher | None = None,
) -> pd.DataFrame:
    """Simulate ``pre_days + days`` days of sessions; returns the event log (one row per impression,
    click and engagement) with ``served_by`` (the arm that chose the slate), ``position`` and the
    true ``p_click`` of impressions.

    ``is_cold_start``: with fresh notes, an impression of a note published during the simulation
    less than ``cfg.cold_start_days`` before it (its clicks and engagements inherit the flag);
    without (``fresh`` None or ``fresh_notes_per_day`` 0), the recommender's flag (catalog notes
    published after the training cutoff).

    Sessions are served in time order, in batches of up to ``cfg.batch_sessions`` sessions of distinct
    users: a batch's slates come from the recommenders' state at its first session (as a serving
    fleet whose features refresh every few minutes), then its responses are fed back in time order.

    Args:
        arms: the arms by name (their recommenders answer batches with ``recommend_many``).
        truth: the synthetic users' response model.
        users: simulated user ids.
        variants: user id -> experiment variant.
        cfg: settings.
        start_s: epoch seconds of day 0.
        on_day: called with the day number after each simulated day (progress).
        fresh: publishes each day's new notes (None: no new notes).
    """
    sim = _Sim.start(arms, truth, users, variants, cfg, with_fresh=fresh is not None)
    for day in range(cfg.pre_days + cfg.days):
        pending = deque(fresh.draw(day) if sim.published is not None and fresh is not None else [])
        sessions = _day_sessions(users, sim.truth_idx, truth.activity, day, cfg, start_s)
        for batch in _batches(sessions, cfg.batch_sessions):
            _publish(pending, batch[0][0], sim)
            slates = _slates(sim, batch, day)
            for ts, i, j in batch:
                arm, slate = slates[i]
                if slate:
                    _session(sim, day, ts, i, j, arm, slate)
        _publish(pending, np.inf, sim)
        if on_day is not None:
            on_day(day)
    return sim.logbook.frame()


@dataclass
class _Sim:
    """The session loop's context: who is simulated, the arms' recommenders, and what it has logged."""

    truth: TrueModel
    truth_idx: np.ndarray  # (U,) each simulated user's index in the response model
    users: Sequence[str]
    variants: dict[str, str]
    cfg: SimConfig
    recs: dict[str, Recommender]
    tagged: frozenset[str]  # the arms whose notes carry tags
    note_truth: dict[str, int]  # note id -> index in the response model (fresh notes added)
    shown: list[list[str]]  # per user: every note shown so far (never shown again)
    published: dict[str, float] | None  # fresh note id -> publication time (None: no fresh notes)
    logbook: _Log = field(default_factory=_Log)

    @classmethod
    def start(
        cls,
        arms: dict[str, Arm],
        truth: TrueModel,
        users: Sequence[str],
        variants: dict[str, str],
        cfg: SimConfig,
        *,
        with_fresh: bool,
    ) -> _Sim:
        """The context before day 0.

        Raises:
            KeyError: users the response model does not know (the first five named).
        """
        truth_idx = truth.user(list(users))
        if (truth_idx < 0).any():
            missing = [u for u, t in zip(users, truth_idx, strict=True) if t < 0][:5]
            raise KeyError(f"users unknown to the synthetic generator: {missing}")
        return cls(
            truth=truth,
            truth_idx=truth_idx,
            users=users,
            variants=variants,
            cfg=cfg,
            recs={name: arm.recommender for name, arm in arms.items()},
            tagged=frozenset(name for name, arm in arms.items() if arm.tagged),
            note_truth=dict(zip(truth.note_index, range(len(truth.note_index)), strict=True)),
            shown=[[] for _ in users],
            published={} if with_fresh and cfg.fresh_notes_per_day > 0 else None,
        )


def _slates(
    sim: _Sim, batch: list[tuple[float, int, int]], day: int
) -> dict[int, tuple[str, list[Recommendation]]]:
    """Each session's (arm, slate): one ``recommend_many`` per arm over its users in the batch."""
    from ranking.recommend import Filters

    cfg = sim.cfg
    slates: dict[int, tuple[str, list[Recommendation]]] = {}
    for arm in sim.recs:
        mine = [
            s for s in batch if ("control" if day < cfg.pre_days else sim.variants[sim.users[s[1]]]) == arm
        ]
        if not mine:
            continue
        got = sim.recs[arm].recommend_many(
            [sim.users[i] for _, i, _ in mine],
            cfg.k,
            candidates=cfg.candidates,
            filters=[Filters(exclude_note_ids=tuple(sim.shown[i])) for _, i, _ in mine],
        )
        slates.update({i: (arm, g) for (_, i, _), g in zip(mine, got, strict=True)})
    return slates


def _session(sim: _Sim, day: int, ts: float, i: int, j: int, arm: str, slate: list[Recommendation]) -> None:
    """User ``i``'s ``j``-th session of ``day`` at ``ts``: serve ``slate``, log and feed the responses."""
    cfg = sim.cfg
    t_user = int(sim.truth_idx[i])
    t_notes = np.fromiter((sim.note_truth[r.note_id] for r in slate), np.int64, len(slate))
    key = (cfg.seed, 2, day, t_user, j)
    if sim.published is None:
        cold = [r.cold_start for r in slate]
    else:
        horizon = cfg.cold_start_days * DAY_S
        published = sim.published
        cold = [ts - published.get(r.note_id, -np.inf) < horizon for r in slate]
    # the pre-period is everyone's history; an experiment event reaches only its own arm
    observers = list(sim.recs.values()) if day < cfg.pre_days else [sim.recs[arm]]
    _serve(slate, sim.users[i], t_user, t_notes, arm, ts, cold, key, sim.truth, observers, sim.logbook)
    sim.shown[i].extend(r.note_id for r in slate)


def _publish(pending: deque[FreshNote], until_s: float, sim: _Sim) -> None:
    """Add the pending notes published by ``until_s`` to every arm (the tag arms with their tags,
    control with its category only) and advance the arms' serving clocks to their publication times."""
    while pending and pending[0].created_s <= until_s:
        note = pending.popleft()
        for name, rec in sim.recs.items():
            tags = note.tags if name in sim.tagged else ()
            rec.add_note(note.note_id, note.category, tags, created_s=note.created_s)
            rec.now_s = max(rec.now_s, note.created_s)
        sim.note_truth[note.note_id] = note.truth_index
        if sim.published is not None:
            sim.published[note.note_id] = note.created_s


def _serve(
    slate: list[Recommendation],
    uid: str,
    t_user: int,
    t_notes: np.ndarray,
    arm: str,
    ts: float,
    cold: list[bool],
    key: tuple[int, ...],
    truth: TrueModel,
    observers: list[Recommender],
    logbook: _Log,
) -> None:
    rng = np.random.default_rng(list(key))
    note_ids = [r.note_id for r in slate]
    resp = truth.respond(t_user, t_notes, rng)
    click_delay = rng.uniform(1.0, 20.0, len(slate))
    engage_frac = rng.random((len(slate), len(ENGAGEMENTS)))
    events: list[tuple[float, int, str, float]] = []
    for pos, r in enumerate(slate):
        t_imp = ts + 0.001 * pos
        logbook.add(
            uid, r.note_id, t_imp, "impression", arm, cold[pos], pos, np.nan, float(resp.p_click[pos])
        )
        events.append((t_imp, pos, "impression", np.nan))
        if resp.click[pos]:
            t_click = t_imp + float(click_delay[pos])
            dwell = float(resp.dwell[pos])
            logbook.add(uid, r.note_id, t_click, "click", arm, cold[pos], pos, dwell, np.nan)
            events.append((t_click, pos, "click", dwell))
            for e, name in enumerate(ENGAGEMENTS):
                if resp.engaged[pos, e]:
                    t_e = t_click + float(engage_frac[pos, e]) * dwell
                    logbook.add(uid, r.note_id, t_e, name, arm, cold[pos], pos, np.nan, np.nan)
                    events.append((t_e, pos, name, np.nan))
    events.sort(key=lambda x: (x[0], x[1]))
    for t, pos, name, _ in events:
        for rec in observers:
            rec.observe(uid, note_ids[pos], name, t)
