"""Aggregate raw exposure (assignment) and event logs into a user-level table, chunk by chunk.

Memory stays O(users × metric columns): the assignments fix the population (users without events get
zeros), each user maps to a dense row, and every event chunk is folded in with ``np.bincount``. Parquet
files stream through ``pyarrow.parquet.ParquetFile.iter_batches``; CSV through ``pandas.read_csv(chunksize)``.

Event log columns: user_id, note_id, ts, event ∈ {impression, click, like, collect, comment, share},
dwell_seconds (clicks), optional is_cold_start. Assignments: user_id, experiment, variant, assigned_at
(+ any per-user attribute, e.g. ``user_type``, carried into the table for segmentation).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from ab_analysis.errors import ABAnalysisError, InvalidArgumentError, MissingColumnError
from ab_analysis.metrics import ColumnSpec, MetricDef
from ab_analysis.report import DailyLift

__all__ = ["UserTable", "aggregate_events", "read_table"]

log = logging.getLogger(__name__)
SUFFIXES = (".parquet", ".csv")
EventsInput: TypeAlias = pd.DataFrame | str | Path | Iterable[pd.DataFrame]


@dataclass(frozen=True)
class UserTable:
    """The aggregated user-level table and the cumulative daily lifts (when events carry ``ts``)."""

    users: pd.DataFrame
    daily: tuple[DailyLift, ...]
    dropped_events: int


def read_table(path: str | Path, table: str) -> pd.DataFrame:
    """Read a whole ``.parquet`` or ``.csv`` file.

    Raises:
        InvalidArgumentError: unknown suffix or missing file, naming the table and listing valid suffixes.
    """
    p = Path(path)
    if p.suffix not in SUFFIXES:
        raise InvalidArgumentError(f"{table} file", str(p), f"a file ending in one of {list(SUFFIXES)!r}")
    if not p.is_file():
        raise InvalidArgumentError(f"{table} file", str(p), "an existing file")
    return pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)


def _chunks(events: EventsInput, columns: list[str], chunk_size: int) -> Iterator[pd.DataFrame]:
    if isinstance(events, pd.DataFrame):
        for start in range(0, max(len(events), 1), chunk_size):
            yield events.iloc[start : start + chunk_size]
        return
    if isinstance(events, str | Path):
        p = Path(events)
        if p.suffix not in SUFFIXES or not p.is_file():
            raise InvalidArgumentError(
                "events file", str(p), f"an existing file ending in {list(SUFFIXES)!r}"
            )
        if p.suffix == ".parquet":
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(p)
            cols = [c for c in columns if c in pf.schema_arrow.names]
            for batch in pf.iter_batches(batch_size=chunk_size, columns=cols):
                yield batch.to_pandas()
        else:
            yield from pd.read_csv(p, chunksize=chunk_size, usecols=lambda c: c in columns)
        return
    yield from events


def _to_datetime(s: pd.Series, table: str, column: str) -> pd.Series:
    try:
        return pd.to_datetime(s, utc=True)
    except (TypeError, ValueError) as exc:
        raise MissingColumnError(table, column, None, f"expected timestamps: {exc}") from None


def _needed_specs(metrics: Sequence[MetricDef]) -> list[ColumnSpec]:
    specs: dict[str, ColumnSpec] = {}
    for m in metrics:
        for c in m.columns():
            if c.events is None:
                raise ABAnalysisError(
                    f"metric {m.name!r}: column {c.column!r} has no 'events' recipe; "
                    "event-log input needs one (or pass a user-level table)"
                )
            if c.column in specs and specs[c.column] != c:
                raise ABAnalysisError(f"column {c.column!r} is defined twice with different recipes")
            specs[c.column] = c
    return list(specs.values())


def _assignment_frame(assignments: pd.DataFrame, experiment: str | None) -> pd.DataFrame:
    for col in ("user_id", "variant"):
        if col not in assignments.columns:
            raise MissingColumnError("assignments", col, list(map(str, assignments.columns)))
    a = assignments
    if "experiment" in a.columns:
        exps = sorted(map(str, pd.unique(a["experiment"].dropna())))
        if experiment is None and len(exps) > 1:
            raise InvalidArgumentError("experiment", None, f"one of {exps!r} (the assignments hold several)")
        if experiment is not None:
            if experiment not in exps:
                raise InvalidArgumentError("experiment", experiment, f"one of {exps!r}")
            a = a[a["experiment"] == experiment]
    dup = a["user_id"].duplicated()
    if dup.any():
        raise ABAnalysisError(
            f"assignments table: {int(dup.sum())} duplicate user_id rows "
            f"(e.g. {a.loc[dup, 'user_id'].iloc[0]!r}): expected one assignment per user"
        )
    return a.reset_index(drop=True)


@dataclass(frozen=True)
class _Population:
    """The assigned users: one dense row each, their arm (0 control, 1 treatment, -1 other) and assignment time."""

    frame: pd.DataFrame
    index: pd.Index
    arm: npt.NDArray[np.int64]
    assigned_ns: npt.NDArray[np.int64] | None

    @property
    def n(self) -> int:
        return len(self.frame)


def _population(a: pd.DataFrame, control: str, treatment: str) -> _Population:
    arm = np.full(len(a), -1, dtype=np.int64)
    arm[(a["variant"] == control).to_numpy()] = 0
    arm[(a["variant"] == treatment).to_numpy()] = 1
    assigned_ns = (
        _to_datetime(a["assigned_at"], "assignments", "assigned_at")
        .to_numpy(dtype="datetime64[ns]")
        .astype(np.int64)
        if "assigned_at" in a.columns
        else None
    )
    return _Population(a, pd.Index(a["user_id"]), arm, assigned_ns)


def _cold_mask(chunk: pd.DataFrame, cold_set: pd.Index | None) -> npt.NDArray[np.bool_]:
    """Which events of the chunk are on cold-start notes (from ``cold_set`` or ``is_cold_start``)."""
    if cold_set is not None:
        if "note_id" not in chunk.columns:
            raise MissingColumnError(
                "events", "note_id", list(map(str, chunk.columns)), "needed for cold_start"
            )
        return cold_set.get_indexer(chunk["note_id"]) >= 0
    if "is_cold_start" in chunk.columns:
        return chunk["is_cold_start"].fillna(False).to_numpy(dtype=bool)
    raise MissingColumnError(
        "events", "is_cold_start", list(map(str, chunk.columns)), "or pass cold_start_notes"
    )


def _spec_weights(
    chunk: pd.DataFrame,
    spec: ColumnSpec,
    keep: npt.NDArray[np.bool_],
    ev: npt.NDArray[np.object_],
    cold: npt.NDArray[np.bool_] | None,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """The events that count for one column spec and their weights (1, or the dwell seconds)."""
    mask = keep & np.isin(ev, list(spec.events or ()))
    if spec.cold_start is not None and cold is not None:
        mask &= cold if spec.cold_start else ~cold
    if spec.value == "dwell_seconds":
        if "dwell_seconds" not in chunk.columns:
            raise MissingColumnError("events", "dwell_seconds", list(map(str, chunk.columns)))
        w = np.nan_to_num(pd.to_numeric(chunk["dwell_seconds"]).to_numpy(dtype=np.float64, na_value=0.0))
    else:
        w = np.ones(len(chunk))
    return mask, np.where(mask, w, 0.0)


@dataclass
class _Accumulator:
    """Running per-user sums, per-day parts of the daily series and the count of dropped events."""

    pop: _Population
    specs: list[ColumnSpec]
    cold_set: pd.Index | None
    only_after_assignment: bool
    sums: dict[str, npt.NDArray[np.float64]]
    daily_parts: list[pd.DataFrame]
    dropped: int = 0

    def fold(self, chunk: pd.DataFrame) -> None:
        """Add one event chunk into the per-user sums (and the daily parts when it carries ``ts``)."""
        for col in ("user_id", "event"):
            if col not in chunk.columns:
                raise MissingColumnError("events", col, list(map(str, chunk.columns)))
        pop = self.pop
        pos = pop.index.get_indexer(chunk["user_id"])
        keep = pos >= 0
        ts_ns: npt.NDArray[np.int64] | None = None
        if "ts" in chunk.columns:
            ts_ns = (
                _to_datetime(chunk["ts"], "events", "ts").to_numpy(dtype="datetime64[ns]").astype(np.int64)
            )
            if self.only_after_assignment and pop.assigned_ns is not None:
                keep &= ts_ns >= pop.assigned_ns[np.where(keep, pos, 0)]
        self.dropped += int((~keep).sum())
        ev = chunk["event"].to_numpy()
        needs_cold = any(s.cold_start is not None for s in self.specs)
        cold = _cold_mask(chunk, self.cold_set) if needs_cold else None
        weights: dict[str, npt.NDArray[np.float64]] = {}
        for s in self.specs:
            mask, w = _spec_weights(chunk, s, keep, ev, cold)
            weights[s.column] = w
            self.sums[s.column] += np.bincount(pos[mask], weights=w[mask], minlength=pop.n)
        if ts_ns is not None:
            day = (ts_ns // 86_400_000_000_000)[keep]
            part = pd.DataFrame(
                {"day": day, "arm": pop.arm[pos[keep]]} | {k: v[keep] for k, v in weights.items()}
            )
            self.daily_parts.append(part[part["arm"] >= 0].groupby(["day", "arm"]).sum())


def aggregate_events(
    events: EventsInput,
    assignments: pd.DataFrame,
    metrics: Sequence[MetricDef],
    *,
    control: str = "control",
    treatment: str = "treatment",
    experiment: str | None = None,
    cold_start_notes: Iterable[object] | None = None,
    only_after_assignment: bool = True,
    chunk_size: int = 1_000_000,
) -> UserTable:
    """Build the user-level table the metrics need from an event log.

    Args:
        events: a DataFrame, a ``.parquet``/``.csv`` path (streamed) or an iterable of DataFrame chunks.
        assignments: user_id, variant, optional experiment/assigned_at and per-user attributes.
        metrics: definitions whose column specs carry ``events`` recipes.
        control: control variant (for the daily series).
        treatment: treatment variant (for the daily series).
        experiment: which experiment to keep when the assignments hold several.
        cold_start_notes: note ids that are cold-start; else events need a boolean ``is_cold_start``.
        only_after_assignment: drop events before the user's ``assigned_at`` (pre-exposure activity).
        chunk_size: rows per chunk.

    Returns:
        :class:`UserTable` with one row per assigned user.

    Raises:
        MissingColumnError, InvalidArgumentError, ABAnalysisError: naming the table, column or value.
    """
    if chunk_size < 1:
        raise InvalidArgumentError("chunk_size", chunk_size, "a positive number of rows")
    specs = _needed_specs(metrics)
    pop = _population(_assignment_frame(assignments, experiment), control, treatment)
    cold_set = None if cold_start_notes is None else pd.Index(list(cold_start_notes))
    acc = _Accumulator(
        pop, specs, cold_set, only_after_assignment, {s.column: np.zeros(pop.n) for s in specs}, []
    )
    wanted = ["user_id", "note_id", "ts", "event", "dwell_seconds", "is_cold_start"]
    for chunk in _chunks(events, wanted, chunk_size):
        if len(chunk) > 0:
            acc.fold(chunk)
    if acc.dropped:
        log.info("dropped %d events of unassigned users or before assignment", acc.dropped)
    a = pop.frame
    users = a.drop(columns=[c for c in ("experiment",) if c in a.columns]).copy()
    for k, v in acc.sums.items():
        users[k] = v
    daily = _daily(acc.daily_parts, metrics, pop.arm, pop.assigned_ns) if acc.daily_parts else ()
    return UserTable(users, daily, acc.dropped)


def _daily(
    parts: list[pd.DataFrame],
    metrics: Sequence[MetricDef],
    arm: npt.NDArray[np.int64],
    assigned_ns: npt.NDArray[np.int64] | None,
) -> tuple[DailyLift, ...]:
    sums = pd.concat(parts).groupby(level=["day", "arm"]).sum().unstack("arm", fill_value=0.0).sort_index()
    days = sums.index.to_numpy()
    cum = sums.cumsum()
    if assigned_ns is not None:
        aday = assigned_ns // 86_400_000_000_000
        n_arm = [np.array([((arm == g) & (aday <= d)).sum() for d in days], dtype=float) for g in (0, 1)]
    else:
        n_arm = [np.full(len(days), float((arm == g).sum())) for g in (0, 1)]
    out = []
    iso = tuple(str(np.datetime64(int(d), "D")) for d in days)
    for m in metrics:
        vals = []
        for g in (0, 1):
            num = (
                cum[(m.numerator.column, g)].to_numpy()
                if (m.numerator.column, g) in cum
                else np.zeros(len(days))
            )
            if m.denominator is not None:
                key = (m.denominator.column, g)
                den = cum[key].to_numpy() if key in cum else np.zeros(len(days))
            else:
                den = n_arm[g]
            with np.errstate(divide="ignore", invalid="ignore"):
                vals.append(num / den)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = vals[1] / vals[0] - 1
        out.append(
            DailyLift(
                m.name, iso, tuple(map(float, vals[0])), tuple(map(float, vals[1])), tuple(map(float, rel))
            )
        )
    return tuple(out)
