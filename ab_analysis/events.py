"""Aggregate raw exposure (assignment) and event logs into a user-level table, chunk by chunk.

Memory stays O(users × metric columns) (plus O(users × days) for the daily series): the assignments fix
the population (users without events get zeros), each user maps to a dense row, and every event chunk is
folded in with ``np.bincount``. Parquet files stream through ``pyarrow.parquet.ParquetFile.iter_batches``;
CSV through ``pandas.read_csv(chunksize)``.

Event log columns: user_id, note_id, ts, event ∈ {impression, click, like, collect, comment, share},
dwell_seconds (clicks), optional is_cold_start. Assignments: user_id, experiment, variant, assigned_at
(+ any per-user attribute, e.g. ``user_type``, carried into the table for segmentation).

Strict checks (one-line errors naming the column, the offending values with counts, and what was
expected): event names outside the vocabulary (case matters: ``"CLICK"`` is not ``"click"``), negative or
infinite ``dwell_seconds``, and events that match no assigned user at all. When events and assignments
store ``user_id`` with different types (e.g. int vs str), both are compared as normalized strings
(:func:`ab_analysis.validation.normalize_label`: ``7``, ``7.0`` and ``"7"`` are the same user).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from ab_analysis.errors import (
    ABAnalysisError,
    InputFileError,
    InvalidArgumentError,
    InvalidValuesError,
    MissingColumnError,
)
from ab_analysis.metrics import EVENT_TYPES, ColumnSpec, MetricDef
from ab_analysis.report import DailyLift, DataNote
from ab_analysis.validation import normalize_labels

__all__ = ["UserTable", "aggregate_events", "read_table"]

log = logging.getLogger(__name__)
SUFFIXES = (".parquet", ".csv")
EventsInput: TypeAlias = pd.DataFrame | str | Path | Iterable[pd.DataFrame]
DAY_NS = 86_400_000_000_000
#: Above this many user × day cells per column the daily series has no CI bands (point estimates only).
MAX_DAILY_CELLS = 5_000_000


@dataclass(frozen=True)
class UserTable:
    """The aggregated user-level table, the cumulative daily lifts (when events carry ``ts``), the count
    of dropped events and the data notes saying why."""

    users: pd.DataFrame
    daily: tuple[DailyLift, ...]
    dropped_events: int
    notes: tuple[DataNote, ...] = ()


def _check_file(p: Path, table: str) -> None:
    if p.suffix not in SUFFIXES:
        raise InvalidArgumentError(f"{table} file", str(p), f"a file ending in one of {list(SUFFIXES)!r}")
    if not p.is_file():
        raise InputFileError(table, str(p), "does not exist or is not a file; expected an existing file")
    if p.stat().st_size == 0:
        raise InputFileError(
            table, str(p), f"is empty (0 bytes); expected a {p.suffix[1:]} file with a header row"
        )


def read_table(path: str | Path, table: str) -> pd.DataFrame:
    """Read a whole ``.parquet`` or ``.csv`` file.

    Raises:
        InvalidArgumentError: unknown suffix, listing valid suffixes.
        InputFileError: missing, empty (0 bytes or no rows/columns) or unreadable file.
    """
    p = Path(path)
    _check_file(p, table)
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except pd.errors.EmptyDataError:
        raise InputFileError(table, str(p), "has no columns; expected a CSV header row") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputFileError(table, str(p), f"cannot be read as {p.suffix[1:]} ({first})") from None
    except Exception as exc:  # pyarrow raises its own hierarchy (ArrowInvalid, ...): report, don't trace
        if type(exc).__module__.startswith("pyarrow"):
            raise InputFileError(table, str(p), f"cannot be read as parquet ({exc})") from None
        raise
    if len(df.columns) == 0:
        raise InputFileError(table, str(p), "has no columns")
    return df


def _chunks(events: EventsInput, columns: list[str], chunk_size: int) -> Iterator[pd.DataFrame]:
    if isinstance(events, pd.DataFrame):
        for start in range(0, max(len(events), 1), chunk_size):
            yield events.iloc[start : start + chunk_size]
        return
    if isinstance(events, str | Path):
        p = Path(events)
        _check_file(p, "events")
        try:
            if p.suffix == ".parquet":
                import pyarrow.parquet as pq

                pf = pq.ParquetFile(p)
                cols = [c for c in columns if c in pf.schema_arrow.names]
                for batch in pf.iter_batches(batch_size=chunk_size, columns=cols):
                    yield batch.to_pandas()
            else:
                yield from pd.read_csv(p, chunksize=chunk_size, usecols=lambda c: c in columns)
        except ABAnalysisError:
            raise
        except pd.errors.EmptyDataError:
            raise InputFileError("events", str(p), "has no columns; expected a CSV header row") from None
        except Exception as exc:  # pyarrow/pandas parse errors: one line, no traceback
            if isinstance(exc, OSError | ValueError | UnicodeDecodeError) or type(exc).__module__.startswith(
                "pyarrow"
            ):
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputFileError(
                    "events", str(p), f"cannot be read as {p.suffix[1:]} ({first})"
                ) from None
            raise
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
    from ab_analysis.validation import check_unique_ids

    check_unique_ids(a["user_id"], "assignments", "user_id")
    return a.reset_index(drop=True)


def _is_numeric(s: pd.Series | pd.Index) -> bool:
    return bool(pd.api.types.is_numeric_dtype(s.dtype)) and not pd.api.types.is_bool_dtype(s.dtype)


@dataclass
class _Population:
    """The assigned users: one dense row each, their arm (0 control, i treatment i, -1 other) and
    assignment time; the id index is also kept as normalized strings for events of another id type."""

    frame: pd.DataFrame
    index: pd.Index
    arm: npt.NDArray[np.int64]
    assigned_ns: npt.NDArray[np.int64] | None
    k: int
    _str_index: pd.Index | None = None

    @property
    def n(self) -> int:
        return len(self.frame)

    def positions(self, ids: pd.Series) -> tuple[npt.NDArray[np.intp], bool]:
        """Row of each event's user (-1: unassigned) and whether the ids were normalized to strings."""
        if _is_numeric(ids) == _is_numeric(self.index):
            return np.asarray(self.index.get_indexer(ids)), False
        if self._str_index is None:
            self._str_index = pd.Index(normalize_labels(pd.Series(self.index)))
        return np.asarray(self._str_index.get_indexer(normalize_labels(ids))), True


def _population(a: pd.DataFrame, arms: Sequence[str], fold: bool) -> _Population:
    labels = normalize_labels(a["variant"], fold)
    arm = np.full(len(a), -1, dtype=np.int64)
    for i, name in enumerate(arms):
        arm[labels == name] = i
    assigned_ns = (
        _to_datetime(a["assigned_at"], "assignments", "assigned_at")
        .to_numpy(dtype="datetime64[ns]")
        .astype(np.int64)
        if "assigned_at" in a.columns
        else None
    )
    return _Population(a, pd.Index(a["user_id"]), arm, assigned_ns, len(arms))


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


def _dwell(chunk: pd.DataFrame, bad: dict[object, int]) -> npt.NDArray[np.float64]:
    """``dwell_seconds`` as floats (NaN → 0); negative and infinite values are tallied into ``bad``."""
    if "dwell_seconds" not in chunk.columns:
        raise MissingColumnError("events", "dwell_seconds", list(map(str, chunk.columns)))
    try:
        w = pd.to_numeric(chunk["dwell_seconds"]).to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise MissingColumnError("events", "dwell_seconds", None, "expected numbers of seconds") from None
    with np.errstate(invalid="ignore"):
        wrong = np.isinf(w) | (w < 0)
    for v, c in zip(*np.unique(w[wrong], return_counts=True), strict=True):
        bad[float(v)] = bad.get(float(v), 0) + int(c)
    return np.nan_to_num(w, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class _Accumulator:
    """Running per-user sums, per-(user, day) parts of the daily series and the tallies of what was
    dropped or wrong (raised once, after the last chunk, with the totals)."""

    pop: _Population
    specs: list[ColumnSpec]
    cold_set: pd.Index | None
    only_after_assignment: bool
    sums: dict[str, npt.NDArray[np.float64]]
    per_day: dict[int, dict[str, npt.NDArray[np.float64]]] = field(default_factory=dict)
    dropped: int = 0
    unassigned: int = 0
    before: int = 0
    total: int = 0
    normalized_ids: bool = False
    unknown_events: dict[object, int] = field(default_factory=dict)
    bad_dwell: dict[object, int] = field(default_factory=dict)
    per_day_overflow: bool = False

    def fold(self, chunk: pd.DataFrame) -> None:
        """Add one event chunk into the per-user sums (and the daily parts when it carries ``ts``)."""
        for col in ("user_id", "event"):
            if col not in chunk.columns:
                raise MissingColumnError("events", col, list(map(str, chunk.columns)))
        pop = self.pop
        pos, normalized = pop.positions(chunk["user_id"])
        self.normalized_ids |= normalized
        self.total += len(chunk)
        # factorize once: every event-name test below is on small integer codes
        ev_codes, ev_names = pd.factorize(chunk["event"], use_na_sentinel=True)
        names = [None if v is None else str(v) for v in ev_names]
        bad = [i for i, v in enumerate(names) if v not in EVENT_TYPES]
        if bad or (ev_codes < 0).any():
            counts = np.bincount(np.where(ev_codes < 0, len(names), ev_codes), minlength=len(names) + 1)
            for i in [*bad, len(names)]:
                if counts[i]:
                    key = "<missing>" if i == len(names) else names[i]
                    self.unknown_events[key] = self.unknown_events.get(key, 0) + int(counts[i])
        keep = pos >= 0
        self.unassigned += int((~keep).sum())
        ts_ns: npt.NDArray[np.int64] | None = None
        if "ts" in chunk.columns:
            ts_ns = (
                _to_datetime(chunk["ts"], "events", "ts").to_numpy(dtype="datetime64[ns]").astype(np.int64)
            )
            if self.only_after_assignment and pop.assigned_ns is not None:
                early = keep & (ts_ns < pop.assigned_ns[np.where(keep, pos, 0)])
                self.before += int(early.sum())
                keep &= ~early
        self.dropped += int((~keep).sum())
        needs_cold = any(s.cold_start is not None for s in self.specs)
        cold = _cold_mask(chunk, self.cold_set) if needs_cold else None
        dwell = _dwell(chunk, self.bad_dwell) if any(s.value == "dwell_seconds" for s in self.specs) else None
        weights: dict[str, npt.NDArray[np.float64]] = {}
        for s in self.specs:
            wanted = [i for i, v in enumerate(names) if v in (s.events or ())]
            mask = keep & np.isin(ev_codes, wanted)
            if s.cold_start is not None and cold is not None:
                mask &= cold if s.cold_start else ~cold
            w = dwell if (s.value == "dwell_seconds" and dwell is not None) else np.ones(len(chunk))
            w = np.where(mask, w, 0.0)
            weights[s.column] = w
            self.sums[s.column] += np.bincount(pos[mask], weights=w[mask], minlength=pop.n)
        if ts_ns is not None and keep.any():
            self._fold_days(pos[keep], (ts_ns // DAY_NS)[keep], {k: v[keep] for k, v in weights.items()})

    def _fold_days(
        self,
        pos: npt.NDArray[np.intp],
        day: npt.NDArray[np.int64],
        weights: dict[str, npt.NDArray[np.float64]],
    ) -> None:
        """Per-day dense per-user sums: one ``bincount`` per column over ``(day - first) * n + pos``."""
        n = self.pop.n
        first, span = int(day.min()), int(day.max() - day.min()) + 1
        if (len(self.per_day) + span) * n > MAX_DAILY_CELLS:
            self.per_day_overflow = True
            return
        key = (day - first) * n + pos
        for col, w in weights.items():
            dense = np.bincount(key, weights=w, minlength=span * n).reshape(span, n)
            for j in np.flatnonzero(dense.any(axis=1)):
                slot = self.per_day.setdefault(first + int(j), {})
                if col in slot:
                    slot[col] += dense[j]
                else:
                    slot[col] = dense[j].copy()

    def raise_problems(self) -> None:
        """The strict checks, after the whole log was read (the counts are totals).

        Raises:
            InvalidValuesError: unknown event names, negative/infinite dwell, no event of an assigned user.
        """
        if self.unknown_events:
            raise InvalidValuesError(
                "events",
                "event",
                "unknown event names (names are case-sensitive)",
                self.unknown_events,
                f"one of {list(EVENT_TYPES)!r}",
            )
        if self.bad_dwell:
            raise InvalidValuesError(
                "events",
                "dwell_seconds",
                "negative or infinite dwell times",
                self.bad_dwell,
                "finite seconds >= 0",
            )
        if self.total > 0 and self.unassigned == self.total:
            kind = "compared as normalized strings" if self.normalized_ids else "same dtype"
            example = self.pop.index[:3].tolist()
            raise InvalidValuesError(
                "events",
                "user_id",
                f"none of the {self.total} events matches an assigned user ({kind}); assignments user_id e.g. "
                f"{example!r} (dtype {self.pop.index.dtype})",
                {"<every event>": self.total},
                "user ids that occur in the assignments (check the experiment and the id format)",
            )

    def notes(self) -> list[DataNote]:
        """What was dropped and why, for the report."""
        out = []
        if self.unassigned:
            out.append(DataNote("dropped_events", f"{self.unassigned} events of users without an assignment"))
        if self.before:
            out.append(DataNote("dropped_events", f"{self.before} events before the user's assigned_at"))
        if self.normalized_ids:
            out.append(
                DataNote(
                    "user_id",
                    "events and assignments store user_id with different types: compared as strings",
                )
            )
        return out


def aggregate_events(
    events: EventsInput,
    assignments: pd.DataFrame,
    metrics: Sequence[MetricDef],
    *,
    control: str = "control",
    treatment: str | Sequence[str] = "treatment",
    experiment: str | None = None,
    cold_start_notes: Iterable[object] | None = None,
    only_after_assignment: bool = True,
    chunk_size: int = 1_000_000,
    normalize_labels: bool = False,
    alpha: float = 0.05,
) -> UserTable:
    """Build the user-level table the metrics need from an event log.

    Args:
        events: a DataFrame, a ``.parquet``/``.csv`` path (streamed) or an iterable of DataFrame chunks.
        assignments: user_id, variant, optional experiment/assigned_at and per-user attributes.
        metrics: definitions whose column specs carry ``events`` recipes.
        control: control variant (for the daily series).
        treatment: treatment variant(s) (for the daily series).
        experiment: which experiment to keep when the assignments hold several.
        cold_start_notes: note ids that are cold-start; else events need a boolean ``is_cold_start``.
        only_after_assignment: drop events before the user's ``assigned_at`` (pre-exposure activity).
        chunk_size: rows per chunk.
        normalize_labels: strip + case-fold variant labels (see :mod:`ab_analysis.validation`).
        alpha: level of the daily series' (unadjusted) intervals.

    Returns:
        :class:`UserTable` with one row per assigned user (every variant; :func:`analyze` checks them).

    Raises:
        MissingColumnError, InvalidArgumentError, InvalidValuesError, InputFileError, ABAnalysisError:
        naming the table, column or value.
    """
    from ab_analysis.validation import normalize_label

    if chunk_size < 1:
        raise InvalidArgumentError("chunk_size", chunk_size, "a positive number of rows")
    specs = _needed_specs(metrics)
    treatments = [treatment] if isinstance(treatment, str | int) else list(treatment)
    arms = [normalize_label(a, normalize_labels) or "" for a in (control, *treatments)]
    pop = _population(_assignment_frame(assignments, experiment), arms, normalize_labels)
    cold_set = None if cold_start_notes is None else pd.Index(list(cold_start_notes))
    acc = _Accumulator(
        pop, specs, cold_set, only_after_assignment, {s.column: np.zeros(pop.n) for s in specs}
    )
    wanted = ["user_id", "note_id", "ts", "event", "dwell_seconds", "is_cold_start"]
    for chunk in _chunks(events, wanted, chunk_size):
        if len(chunk) > 0:
            acc.fold(chunk)
    acc.raise_problems()
    if acc.dropped:
        log.info("dropped %d events of unassigned users or before assignment", acc.dropped)
    a = pop.frame
    users = a.drop(columns=[c for c in ("experiment",) if c in a.columns]).copy()
    for k, v in acc.sums.items():
        users[k] = v
    daily = _daily(acc.per_day, metrics, pop, arms, alpha) if acc.per_day and not acc.per_day_overflow else ()
    if acc.per_day_overflow:
        log.warning("no daily series: more than %d user × day cells", MAX_DAILY_CELLS)
    return UserTable(users, daily, acc.dropped, tuple(acc.notes()))


def _daily(
    per_day: dict[int, dict[str, npt.NDArray[np.float64]]],
    metrics: Sequence[MetricDef],
    pop: _Population,
    arms: Sequence[str],
    alpha: float,
) -> tuple[DailyLift, ...]:
    """Cumulative per-day estimates per metric and treatment arm, over the users assigned by that day,
    with the unadjusted relative-lift CI of each day (delta method, as the report's rows, raw data)."""
    from ab_analysis.analysis import grouped_moments
    from ab_analysis.estimators import Estimand, compare
    from ab_analysis.sequential import always_valid_look, default_tau

    days = np.array(sorted(per_day), dtype=np.int64)
    n = pop.n
    aday = pop.assigned_ns // DAY_NS if pop.assigned_ns is not None else np.full(n, np.iinfo(np.int64).min)
    iso = tuple(str(np.datetime64(int(x), "D")) for x in days)
    out = []
    cum: dict[str, npt.NDArray[np.float64]] = {}

    def cumulative(col: str) -> npt.NDArray[np.float64]:
        """(n, days) running sums of one column."""
        if col not in cum:
            zero = np.zeros(n)
            dense = np.column_stack([per_day[int(d)].get(col, zero) for d in days])
            cum[col] = np.cumsum(dense, axis=1)
        return cum[col]

    for m in metrics:
        if m.type == "quantile":
            continue
        cols = [m.numerator.column] + ([m.denominator.column] if m.denominator is not None else [])
        mats = [cumulative(c) for c in cols]
        est = Estimand("y", "d" if len(cols) == 2 else None)
        names = ["y", "d"][: len(cols)]
        per_arm: dict[int, list[tuple[float, float, float, float, float]]] = {i: [] for i in range(1, pop.k)}
        seq: dict[int, tuple[float, tuple[float, float, float], int]] = {
            i: (math.nan, (1.0, -math.inf, math.inf), 0) for i in range(1, pop.k)
        }
        for j, day in enumerate(days):
            exposed = np.where(aday <= day, pop.arm, -1)
            x = np.column_stack([mat[:, j] for mat in mats])
            mom = grouped_moments(names, x, exposed, pop.k)
            for i in range(1, pop.k):
                r = compare(mom[0], mom[i], est, alpha=alpha)
                mc, mt = mom[0].mean(), mom[i].mean()
                c = (
                    float(mc[0] / mc[1])
                    if len(cols) == 2 and mc[1]
                    else float(mc[0])
                    if len(cols) == 1
                    else np.nan
                )
                t = (
                    float(mt[0] / mt[1])
                    if len(cols) == 2 and mt[1]
                    else float(mt[0])
                    if len(cols) == 1
                    else np.nan
                )
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = float(np.float64(t) / np.float64(c) - 1)
                per_arm[i].append((c, t, rel, r.rel_ci_low, r.rel_ci_high))
                if r.status == "ok":
                    tau, prev, looks = seq[i]
                    tau = default_tau(r.abs_se, r.n_control, r.n_treatment) if math.isnan(tau) else tau
                    seq[i] = (tau, always_valid_look(r.abs_lift, r.abs_se, tau, alpha, prev), looks + 1)
        for i, vals in per_arm.items():
            c_, t_, rel_, lo_, hi_ = (tuple(float(v[k]) for v in vals) for k in range(5))
            raw = m.capping is not None or m.covariate is not None
            tau, (sp, slo, shi), looks = seq[i]
            out.append(DailyLift(m.name, iso, c_, t_, rel_, arms[i], lo_, hi_, raw, tau, sp, slo, shi, looks))
    return tuple(out)
