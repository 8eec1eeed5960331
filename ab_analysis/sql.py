"""A/B sufficient statistics computed by SQL inside the engine that holds the events.

One query per metric set turns an event log (parquet files, read by the engine itself: the events never
enter Python) and an assignments table into per-arm, per-segment :class:`~ab_analysis.moments.Moments`:
users' counts, sums and cross-product sums of each metric's variables. The same statistics core as the
in-memory path (:func:`~ab_analysis.estimators.compare`, :func:`~ab_analysis.corrections.adjust_pvalues`,
:func:`~ab_analysis.srm.srm_check`, :func:`~ab_analysis.analysis.finish_rows`) then builds the
:class:`~ab_analysis.report.Report`.

The query follows :mod:`ab_analysis.events` rule for rule: only events of assigned users at/after their
``assigned_at`` count; each column spec counts its event types (or sums their ``dwell_seconds``, NULL/NaN
as 0), optionally only on cold-start notes; users without events get zeros; capping is the quantile
pooled over every analysed arm with linear interpolation (``numpy.quantile``'s definition); CUPED
covariates come from assignment columns; rows with a NaN covariate drop out of that metric only. The
strict input checks (variant labels, duplicate ids, event names, dwell, per-user proportions) run in the
engine too, with the in-memory path's messages.

Engines: ``"duckdb"`` (this module; larger than memory through ``memory_limit`` + ``temp_directory``) and
``"spark"`` (:mod:`ab_analysis.spark`, pyspark imported lazily). The SQL text is the same for both; the
few dialect differences (identifier quotes, parameter markers, the exact quantile function) sit in
:class:`Dialect`. User strings (variant labels, experiment) travel as query parameters; column names are
checked against the table's schema and quoted.
"""

from __future__ import annotations

import contextlib
import glob as globlib
import logging
import math
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias

import pandas as pd

from ab_analysis.analysis import MAX_SEGMENT_VALUES, AnalysisConfig, finish_rows, resolve_metrics
from ab_analysis.errors import (
    ABAnalysisError,
    InputFileError,
    InvalidArgumentError,
    InvalidValuesError,
    MissingColumnError,
    format_counts,
)
from ab_analysis.estimators import Estimand, LiftResult, compare, degenerate_result
from ab_analysis.metrics import EVENT_TYPES, ColumnSpec, MetricDef
from ab_analysis.moments import Moments
from ab_analysis.report import DataNote, MetricResult, Report, RowExtras
from ab_analysis.srm import srm_check

__all__ = [
    "DUCKDB",
    "SPARK",
    "Dialect",
    "EngineConfig",
    "GroupMoments",
    "MetricMoments",
    "SQLStats",
    "analyze_sql",
    "render_query",
    "sql_moments",
]

log = logging.getLogger(__name__)
ENGINES = ("duckdb", "spark")
EVENTS, ASSIGNMENTS, COLD_NOTES = "ab_events", "ab_assignments", "ab_cold_notes"


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines' SQL: identifier quotes, parameter markers, the exact quantile."""

    name: str
    quote: str
    param_marker: str
    quantile: str

    def ident(self, name: str) -> str:
        """A quoted identifier (the quote character doubled inside)."""
        return f"{self.quote}{name.replace(self.quote, self.quote * 2)}{self.quote}"

    def param(self, name: str) -> str:
        """A named query parameter."""
        return f"{self.param_marker}{name}"


#: duckdb: ``quantile_cont`` and Spark: ``percentile`` are both exact with linear interpolation at
#: ``(n - 1) * q``, the ``numpy.quantile`` default the in-memory capping uses.
DUCKDB = Dialect("duckdb", '"', "$", "quantile_cont")
SPARK = Dialect("spark", "`", ":", "percentile")


@dataclass(frozen=True)
class EngineConfig:
    """How to run the query.

    Args:
        engine: ``"duckdb"`` (in process) or ``"spark"`` (pyspark; local mode unless ``spark`` is given).
        threads: duckdb threads (``None``: duckdb's default, one per core).
        memory_limit: duckdb memory limit; beyond it duckdb spills to ``temp_directory``. The default
            keeps a 2M-user aggregate with 2 threads mostly in memory (1 GB made the two threads'
            partial aggregates spill: 209 s vs 164 s at 100M events, process peak ~1.0-1.2 GiB either way).
        temp_directory: duckdb spill directory (``None``: a fresh directory under the system temp dir).
        spark: an existing ``SparkSession`` to use (``None``: a ``local[1]`` session is started).
        spark_master: master URL for the session started here.
        spark_driver_memory: driver memory for the session started here.
    """

    engine: Literal["duckdb", "spark"] = "duckdb"
    threads: int | None = None
    memory_limit: str = "1500MB"
    temp_directory: str | None = None
    spark: Any = field(default=None, compare=False)
    spark_master: str = "local[1]"
    spark_driver_memory: str = "1g"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidArgumentError("engine", self.engine, f"one of {list(ENGINES)!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise InvalidArgumentError("threads", self.threads, "a positive number of threads or None")


class Engine(Protocol):
    """A SQL engine holding the views ``ab_events``, ``ab_assignments`` (and ``ab_cold_notes``)."""

    dialect: Dialect

    def columns(self, table: str) -> dict[str, str]:
        """Column name -> type family (``number``, ``string``, ``timestamp``, ``boolean``, ``other``)."""
        ...

    def fetch(self, sql: str, params: Mapping[str, object]) -> list[dict[str, Any]]:
        """Run a query with named parameters; rows as dicts."""
        ...


def type_family(sql_type: str) -> str:
    """Coarse family of an engine's type name (duckdb or Spark spelling)."""
    t = sql_type.lower()
    if t.startswith(("timestamp", "date")):
        return "timestamp"
    if t.startswith(("bool",)):
        return "boolean"
    if t.startswith(("varchar", "string", "char", "enum")):
        return "string"
    numeric = ("tinyint", "smallint", "int", "bigint", "hugeint", "uinteger", "ubigint", "usmallint")
    if t.startswith((*numeric, "utinyint", "integer", "long", "short", "byte", "float", "double")) or (
        t.startswith(("decimal", "real", "uhugeint"))
    ):
        return "number"
    return "other"


def engine_error(engine: str, exc: BaseException) -> ABAnalysisError:
    """An engine's failure as one line naming the engine (the first line of its message)."""
    first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return ABAnalysisError(f"{engine} could not read or aggregate the inputs: {type(exc).__name__}: {first}")


# ---------------------------------------------------------------------------------------------- inputs


def resolve_events(events: str | Path) -> list[str]:
    """The parquet files of a path or glob (local); a URL (``s3://…``) is passed to the engine as is.

    Raises:
        InvalidArgumentError: no file matches, naming the glob.
    """
    text = str(events)
    if "://" in text:
        return [text]
    p = Path(text)
    files = [str(p)] if p.is_file() else sorted(globlib.glob(text, recursive=True))
    if p.is_dir():
        files = sorted(str(f) for f in p.glob("*.parquet"))
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise InvalidArgumentError(
            "events", text, "a parquet file, directory or glob matching at least one file"
        )
    return files


def needed_specs(metrics: Sequence[MetricDef]) -> list[ColumnSpec]:
    """The distinct column specs of the metrics; each needs an ``events`` recipe.

    Raises:
        ABAnalysisError: a column without a recipe, or one column defined twice differently.
    """
    specs: dict[str, ColumnSpec] = {}
    for m in metrics:
        if m.type not in ("mean", "ratio"):
            raise ABAnalysisError(
                f"metric {m.name!r}: type {m.type!r} needs the per-user values; the SQL path computes "
                "sufficient statistics (mean and ratio metrics): drop it here or use the in-memory path"
            )
        for c in m.columns():
            if c.events is None:
                raise ABAnalysisError(
                    f"metric {m.name!r}: column {c.column!r} has no 'events' recipe; "
                    f"the SQL event path needs one (expected e.g. events: [click])"
                )
            unknown = [e for e in c.events if e not in EVENT_TYPES]
            if unknown:
                raise ABAnalysisError(
                    f"metric {m.name!r}: unknown event types {unknown!r}: expected {list(EVENT_TYPES)!r}"
                )
            if c.column in specs and specs[c.column] != c:
                raise ABAnalysisError(f"column {c.column!r} is defined twice with different recipes")
            specs[c.column] = c
    return list(specs.values())


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class _Var:
    """One Moments variable of a metric: its name (y, d, x, xd) and per-user SQL column."""

    name: str
    column: str
    nullable: bool


@dataclass(frozen=True)
class _MetricPlan:
    index: int
    metric: MetricDef
    variables: tuple[_Var, ...]
    estimand: Estimand


@dataclass(frozen=True)
class Plan:
    """Everything the query text depends on (validated names only)."""

    n_arms: int
    experiment_filter: bool
    fold_labels: bool
    ids_as_strings: bool
    families: tuple[tuple[str, str], ...]  # (events user_id, assignments user_id, variant) type families
    use_ts: bool
    cold: Literal["notes", "column"] | None
    specs: tuple[tuple[str, ColumnSpec], ...]
    covariates: tuple[tuple[str, str], ...]
    segments: tuple[tuple[str, str], ...]
    metrics: tuple[_MetricPlan, ...]


def _metric_plans(
    mdefs: Sequence[MetricDef], spec_alias: Mapping[str, str], cov_alias: Mapping[str, str]
) -> tuple[_MetricPlan, ...]:
    out = []
    for i, m in enumerate(mdefs):
        vs = [_Var("y", spec_alias[m.numerator.column], False)]
        if m.denominator is not None:
            vs.append(_Var("d", spec_alias[m.denominator.column], False))
        if m.covariate is not None:
            for name, col in (("x", m.covariate.numerator), ("xd", m.covariate.denominator)):
                if col is not None:
                    vs.append(_Var(name, spec_alias.get(col) or cov_alias[col], col not in spec_alias))
        names = {v.name for v in vs}
        est = Estimand(
            "y", "d" if "d" in names else None, "x" if "x" in names else None, "xd" if "xd" in names else None
        )
        out.append(_MetricPlan(i, m, tuple(vs), est))
    return tuple(out)


def _check_columns(
    table: str, source: str, present: Mapping[str, str], needed: Iterable[tuple[str, str]]
) -> None:
    for col, why in needed:
        if col not in present:
            detail = f"{why}; in {source}" if why else f"in {source}"
            raise MissingColumnError(table, col, list(present), detail)


def build_plan(
    mdefs: Sequence[MetricDef],
    ev_cols: Mapping[str, str],
    as_cols: Mapping[str, str],
    *,
    n_arms: int,
    experiment: str | None,
    fold_labels: bool = False,
    cold_notes: bool,
    segments: Sequence[str],
    only_after_assignment: bool,
    sources: tuple[str, str],
) -> Plan:
    """Validate the columns both tables need and fix the aliases of the query.

    Raises:
        MissingColumnError: naming the table, the column, the source and the columns present.
        InvalidArgumentError: duplicate segments, user_id types that cannot join.
    """
    specs = needed_specs(mdefs)
    ev_src, as_src = sources
    _check_columns("events", ev_src, ev_cols, [("user_id", ""), ("event", "")])
    _check_columns("assignments", as_src, as_cols, [("user_id", ""), ("variant", "the variant column")])
    fam_e, fam_a = ev_cols["user_id"], as_cols["user_id"]
    if fam_e != fam_a and {fam_e, fam_a} != {"number", "string"}:
        raise MissingColumnError(
            "events",
            "user_id",
            None,
            f"type {fam_e} cannot be joined with the assignments' user_id type {fam_a}",
        )
    if any(s.value == "dwell_seconds" for s in specs):
        _check_columns("events", ev_src, ev_cols, [("dwell_seconds", "summed by a metric")])
    cold: Literal["notes", "column"] | None = None
    if any(s.cold_start is not None for s in specs):
        cold = "notes" if cold_notes else "column"
        need = (
            ("note_id", "needed for cold_start")
            if cold_notes
            else ("is_cold_start", "or pass cold_start_notes")
        )
        _check_columns("events", ev_src, ev_cols, [need])
    if len(set(segments)) != len(segments):
        raise InvalidArgumentError("segments", list(segments), "distinct column names")
    _check_columns("assignments", as_src, as_cols, [(s, "a segment column") for s in segments])
    spec_alias = {s.column: f"v{i}" for i, s in enumerate(specs)}
    cov_names = sorted(
        {
            c
            for m in mdefs
            if m.covariate is not None
            for c in (m.covariate.numerator, m.covariate.denominator)
            if c is not None and c not in spec_alias
        }
    )
    _check_columns("assignments", as_src, as_cols, [(c, "a CUPED covariate column") for c in cov_names])
    cov_alias = {c: f"c{i}" for i, c in enumerate(cov_names)}
    use_ts = only_after_assignment and "ts" in ev_cols and "assigned_at" in as_cols
    return Plan(
        n_arms,
        experiment is not None,
        fold_labels,
        fam_e != fam_a,
        (("e.user_id", fam_e), ("user_id", fam_a), ("variant", as_cols["variant"])),
        use_ts,
        cold,
        tuple((spec_alias[s.column], s) for s in specs),
        tuple((a, c) for c, a in cov_alias.items()),
        tuple((f"s{i}", s) for i, s in enumerate(segments)),
        _metric_plans(mdefs, spec_alias, cov_alias),
    )


# ----------------------------------------------------------------------------------------------- query


def as_text(expr: str, family: str) -> str:
    """A value as the in-memory path's label text (:func:`ab_analysis.validation.normalize_label`):
    integers and integral floats as their digits, booleans as ``True``/``False``, else ``CAST``."""
    if family == "number":
        digits = f"CAST(CAST({expr} AS BIGINT) AS STRING)"
        return f"CASE WHEN {expr} = floor({expr}) THEN {digits} ELSE CAST({expr} AS STRING) END"
    if family == "boolean":
        return f"CASE WHEN {expr} THEN 'True' WHEN NOT {expr} THEN 'False' END"
    return f"CAST({expr} AS STRING)"


def label_expr(column: str, d: Dialect, fold: bool, family: str = "string") -> str:
    """A label compared as text; ``fold``: also trimmed and lower-cased (the arm names are too)."""
    text = as_text(d.ident(column), family)
    return f"lower(trim({text}))" if fold else text


def _uid(prefix: str, plan: Plan, d: Dialect) -> str:
    """The join key: the id itself, or (ids of another type on the other side) its text form."""
    col = f"{prefix}{d.ident('user_id')}"
    return as_text(col, dict(plan.families)[f"{prefix}user_id"]) if plan.ids_as_strings else col


def _assignments_cte(plan: Plan, d: Dialect) -> str:
    q = d.ident
    arms = " ".join(f"WHEN {d.param(f'arm{i}')} THEN {i}" for i in range(plan.n_arms))
    label = label_expr("variant", d, plan.fold_labels, dict(plan.families)["variant"])
    cols = [f"{_uid('', plan, d)} AS uid", f"CASE {label} {arms} ELSE -1 END AS arm"]
    if plan.use_ts:
        cols.append(f"{q('assigned_at')} AS asg_at")
    for alias, col in plan.covariates:
        x = f"CAST({q(col)} AS DOUBLE)"
        finite = f"{x} IS NOT NULL AND NOT isnan({x}) AND abs({x}) < CAST('Infinity' AS DOUBLE)"
        cols.append(f"CASE WHEN {finite} THEN {x} END AS {alias}")
        cols.append(f"CASE WHEN abs({x}) = CAST('Infinity' AS DOUBLE) THEN 1 ELSE 0 END AS {alias}_inf")
    cols += [f"{q(col)} AS {alias}" for alias, col in plan.segments]
    where = (
        f"\n  WHERE CAST({q('experiment')} AS STRING) = {d.param('experiment')}"
        if plan.experiment_filter
        else ""
    )
    return "a AS (\n  SELECT " + ",\n         ".join(cols) + f"\n  FROM {ASSIGNMENTS}{where}\n)"


def _spec_condition(spec: ColumnSpec, plan: Plan, d: Dialect) -> str:
    events = spec.events or ()
    if any(e not in EVENT_TYPES for e in events):  # pragma: no cover - needed_specs checked
        raise ABAnalysisError(f"unknown event types in {events!r}")
    cond = f"e.{d.ident('event')} IN ({', '.join(repr(str(e)) for e in events)})"
    if spec.cold_start is not None:
        cold = (
            "cn.note_id IS NOT NULL"
            if plan.cold == "notes"
            else f"COALESCE(CAST(e.{d.ident('is_cold_start')} AS BOOLEAN), FALSE)"
        )
        cond += f" AND {cold}" if spec.cold_start else f" AND NOT {cold}"
    return cond


def _events_cte(plan: Plan, d: Dialect) -> str:
    q = d.ident
    dw = f"CAST(e.{q('dwell_seconds')} AS DOUBLE)"
    dwell = f"CASE WHEN {dw} IS NULL OR isnan({dw}) THEN CAST(0 AS DOUBLE) ELSE {dw} END"
    # kept: at/after assignment; the joined-but-early events are counted for the report's notes
    kept = f"(a.asg_at IS NULL OR e.{q('ts')} >= a.asg_at)" if plan.use_ts else "TRUE"
    # COUNT(CASE ...) keeps an 8-byte state per group where SUM(integer) keeps a 128-bit one: with ~2M
    # users the aggregate then stays inside duckdb's memory limit instead of spilling
    sums = [
        (
            f"SUM(CASE WHEN {kept} AND {_spec_condition(s, plan, d)} THEN {dwell} ELSE CAST(0 AS DOUBLE) END)"
            if s.value == "dwell_seconds"
            else f"CAST(COUNT(CASE WHEN {kept} AND {_spec_condition(s, plan, d)} THEN 1 END) AS DOUBLE)"
        )
        + f" AS {alias}"
        for alias, s in plan.specs
    ]
    join = f"  FROM {EVENTS} e JOIN a ON {_uid('e.', plan, d)} = a.uid\n"
    if plan.cold == "notes":
        join += f"  LEFT JOIN {COLD_NOTES} cn ON e.{q('note_id')} = cn.note_id\n"
    n_ev = f"COUNT(CASE WHEN {kept} THEN 1 END)" if plan.use_ts else "COUNT(*)"
    body = ",\n         ".join(["a.uid AS uid", "COUNT(*) AS n_join", f"{n_ev} AS n_ev", *sums])
    return f"ev AS (\n  SELECT {body}\n{join}  GROUP BY a.uid\n)"


def _capped(plan: Plan) -> list[_MetricPlan]:
    """Metrics with a cap: one pooled quantile over every analysed arm (the in-memory convention)."""
    return [m for m in plan.metrics if m.metric.capping is not None]


def _user_ctes(plan: Plan, d: Dialect) -> str:
    keep = ["a.arm AS arm", *(f"a.{a} AS {a}" for a, _ in plan.covariates + plan.segments)]
    keep += [f"a.{a}_inf AS {a}_inf" for a, _ in plan.covariates]
    keep += ["COALESCE(ev.n_join, 0) AS n_join", "COALESCE(ev.n_ev, 0) AS n_ev"]
    keep += [f"COALESCE(ev.{a}, CAST(0 AS DOUBLE)) AS {a}" for a, _ in plan.specs]
    u = "u AS (\n  SELECT " + ",\n         ".join(keep) + "\n  FROM a LEFT JOIN ev ON a.uid = ev.uid\n)"
    capped = _capped(plan)
    if not capped:
        return u
    caps = ",\n         ".join(
        f"{d.quantile}(CASE WHEN arm >= 0 THEN {m.variables[0].column} END, "
        f"{float(m.metric.capping or 0)!r}) AS cap{m.index}"
        for m in capped
    )
    ycols = ",\n         ".join(
        f"CASE WHEN caps.cap{m.index} IS NULL OR u.{m.variables[0].column} <= caps.cap{m.index} "
        f"THEN u.{m.variables[0].column} ELSE caps.cap{m.index} END AS y{m.index}"
        for m in capped
    )
    return (
        f"{u},\ncaps AS (\n  SELECT {caps}\n  FROM u\n),\n"
        f"m AS (\n  SELECT u.*, caps.*,\n         {ycols}\n  FROM u CROSS JOIN caps\n)"
    )


def _moment_columns(plan: Plan) -> list[str]:
    """``SUM``s of every metric's variables and cross products, and its plausibility counts."""
    out = []
    capped = {m.index for m in _capped(plan)}
    for m in plan.metrics:
        cols = [f"y{m.index}" if m.index in capped else m.variables[0].column]
        cols += [v.column for v in m.variables[1:]]
        nullable = [v.column for v in m.variables if v.nullable]
        pre = f"m{m.index}"
        # users with a non-finite covariate leave this metric only (as in the in-memory path)
        valid = " AND ".join(f"{c} IS NOT NULL" for c in nullable)
        lo, hi = (f"CASE WHEN {valid} THEN ", " END") if valid else ("", "")
        out.append(
            f"SUM(CASE WHEN {valid} THEN 1 ELSE 0 END) AS {pre}_n" if valid else f"COUNT(*) AS {pre}_n"
        )
        for i, ci in enumerate(cols):
            out.append(f"SUM({lo}{ci}{hi}) AS {pre}_s{i}")
            for j in range(i, len(cols)):
                out.append(f"SUM({lo}{ci} * {cols[j]}{hi}) AS {pre}_c{i}_{j}")
        bad = _implausible(m)
        if bad:
            out.append(f"SUM(CASE WHEN {bad} THEN 1 ELSE 0 END) AS {pre}_bad")
    return out


def _implausible(m: _MetricPlan) -> str:
    """Per-user condition the in-memory plausibility check rejects (events give no negatives)."""
    if m.metric.value_kind != "proportion":
        return ""
    y = m.variables[0].column
    return f"{y} > {m.variables[1].column}" if m.metric.type == "ratio" else f"{y} > 1"


def render_query(plan: Plan, dialect: Dialect) -> str:
    """The one query: per-user aggregates, caps, then per-arm (x segment value) sufficient statistics.

    Result rows: ``arm`` (0 control, 1.. treatments, -1 other variants), per segment ``g{i}`` (0 when
    the row is grouped by segment ``s{i}``) and ``s{i}``, ``n_all`` (users), ``n_join``/``n_ev``
    (their events, all / kept), ``cap{k}``, and per metric ``m{k}_n``, ``_s{i}``, ``_c{i}_{j}``
    (``_bad``: implausible users), per covariate ``c{i}_inf`` (users with an infinite value).
    """
    ctes = [_assignments_cte(plan, dialect), _events_cte(plan, dialect), _user_ctes(plan, dialect)]
    source = "m" if _capped(plan) else "u"
    head = ["arm"]
    for alias, _ in plan.segments:
        head += [f"GROUPING({alias}) AS g{alias[1:]}", alias]
    cols = [*head, "COUNT(*) AS n_all", "SUM(n_join) AS n_join", "SUM(n_ev) AS n_ev"]
    cols += [f"MAX(cap{m.index}) AS cap{m.index}" for m in _capped(plan)]
    cols += [f"SUM({a}_inf) AS {a}_inf" for a, _ in plan.covariates]
    cols += _moment_columns(plan)
    if plan.segments:
        sets = ", ".join(["(arm)", *(f"(arm, {a})" for a, _ in plan.segments)])
        group = f"GROUP BY GROUPING SETS ({sets})"
    else:
        group = "GROUP BY arm"
    return "WITH " + ",\n".join(ctes) + "\nSELECT " + ",\n       ".join(cols) + f"\nFROM {source}\n{group}"


# ---------------------------------------------------------------------------------------------- duckdb


class DuckDBEngine:
    """duckdb in process: events read by ``read_parquet`` (never materialized in Python)."""

    dialect = DUCKDB

    def __init__(self, con: Any) -> None:
        self.con = con

    def columns(self, table: str) -> dict[str, str]:
        return {str(r[0]): type_family(str(r[1])) for r in self.con.execute(f"DESCRIBE {table}").fetchall()}

    def fetch(self, sql: str, params: Mapping[str, object]) -> list[dict[str, Any]]:
        import duckdb

        try:
            cur = self.con.execute(sql, dict(params)) if params else self.con.execute(sql)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        except duckdb.Error as exc:  # unreadable files, bad CSV values, ...: one line, not a trace
            raise engine_error("duckdb", exc) from None


AssignmentsInput: TypeAlias = pd.DataFrame | str | Path


@contextlib.contextmanager
def _open_duckdb(
    cfg: EngineConfig, files: list[str], assignments: AssignmentsInput, cold_notes: list[object] | None
) -> Iterator[Engine]:
    import duckdb

    with contextlib.ExitStack() as stack:
        tmp = cfg.temp_directory or stack.enter_context(tempfile.TemporaryDirectory(prefix="ab-sql-duckdb-"))
        config: dict[str, Any] = {
            "memory_limit": cfg.memory_limit,
            "temp_directory": tmp,
            "preserve_insertion_order": False,
        }
        if cfg.threads is not None:
            config["threads"] = cfg.threads
        con = duckdb.connect(config=config)
        stack.callback(con.close)
        con.execute("SET TimeZone = 'UTC'")  # naive timestamps mean UTC, as pd.to_datetime(utc=True) does
        try:
            con.read_parquet(files).create_view(EVENTS)
            if isinstance(assignments, pd.DataFrame):
                con.register(ASSIGNMENTS, assignments)
            else:
                af = resolve_events(assignments)
                rel = con.read_csv(af) if all(f.endswith(".csv") for f in af) else con.read_parquet(af)
                rel.create_view(ASSIGNMENTS)
        except duckdb.Error as exc:  # a 0-byte or foreign file in the glob, a CSV without a header, ...
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise InputFileError(
                "events or assignments", str(files[0] if len(files) == 1 else files), first
            ) from None
        if cold_notes is not None:
            con.register(COLD_NOTES, pd.DataFrame({"note_id": cold_notes}))
        yield DuckDBEngine(con)


@contextlib.contextmanager
def open_engine(
    cfg: EngineConfig, files: list[str], assignments: AssignmentsInput, cold_notes: list[object] | None
) -> Iterator[Engine]:
    """An engine with the views ``ab_events``, ``ab_assignments`` and (with notes) ``ab_cold_notes``."""
    if cfg.engine == "spark":
        from ab_analysis.spark import open_spark

        with open_spark(cfg, files, assignments, cold_notes) as eng:
            yield eng
    else:
        with _open_duckdb(cfg, files, assignments, cold_notes) as eng:
            yield eng


# ------------------------------------------------------------------------------------ assignments check


def _experiments(
    eng: Engine, as_cols: Mapping[str, str], experiment: str | None
) -> tuple[str, dict[str, object]]:
    """The experiment filter (WHERE clause and its parameter), checked as the in-memory path does."""
    q = eng.dialect.ident
    if "experiment" not in as_cols:
        return "", {}
    rows = eng.fetch(
        f"SELECT DISTINCT CAST({q('experiment')} AS STRING) AS e FROM {ASSIGNMENTS} "
        f"WHERE {q('experiment')} IS NOT NULL",
        {},
    )
    exps = sorted(str(r["e"]) for r in rows)
    if experiment is None and len(exps) > 1:
        raise InvalidArgumentError("experiment", None, f"one of {exps!r} (the assignments hold several)")
    if experiment is None:
        return "", {}
    if experiment not in exps:
        raise InvalidArgumentError("experiment", experiment, f"one of {exps!r}")
    where = f" WHERE CAST({q('experiment')} AS STRING) = {eng.dialect.param('experiment')}"
    return where, {"experiment": experiment}


def _check_assignments(
    eng: Engine,
    where: str,
    params: Mapping[str, object],
    arms: Sequence[str],
    segments: Sequence[str],
    *,
    fold: bool,
    drop_unknown: bool,
    family: str = "string",
) -> dict[str, int]:
    """Unique user ids, few segment values, every arm present, no unknown label (unless dropped).

    Returns:
        Rows per label that is no analysed arm (dropped; empty unless ``drop_unknown``).

    Raises:
        ABAnalysisError: duplicate user ids. InvalidArgumentError: too many segment values, an arm
            without rows, labels that are no arm (naming them with their row counts).
    """
    q = eng.dialect.ident
    uid = q("user_id")
    distinct = "".join(f", COUNT(DISTINCT {q(s)}) AS k{i}" for i, s in enumerate(segments))
    (row,) = eng.fetch(
        f"SELECT COUNT(*) AS n, COUNT(DISTINCT {uid}) AS nd{distinct} FROM {ASSIGNMENTS}{where}", params
    )
    if int(row["n"]) > int(row["nd"]):
        ex = eng.fetch(
            f"SELECT {uid} AS u, COUNT(*) AS n FROM {ASSIGNMENTS}{where} GROUP BY {uid} HAVING COUNT(*) > 1 "
            "ORDER BY n DESC LIMIT 8",
            params,
        )
        raise InvalidValuesError(
            "assignments",
            "user_id",
            f"{int(row['n']) - int(row['nd'])} duplicate user_id rows",
            {r["u"]: int(r["n"]) for r in ex},
            "one row per user (aggregate per user first)",
        )
    for i, s in enumerate(segments):
        if int(row[f"k{i}"]) > MAX_SEGMENT_VALUES:
            raise InvalidArgumentError(
                f"segments[{s!r}]",
                f"{row[f'k{i}']} values",
                f"a column with at most {MAX_SEGMENT_VALUES} distinct values",
            )
    label = label_expr("variant", eng.dialect, fold, family)
    rows = eng.fetch(f"SELECT {label} AS v, COUNT(*) AS n FROM {ASSIGNMENTS}{where} GROUP BY {label}", params)
    counts = {("<missing>" if r["v"] is None else str(r["v"])): int(r["n"]) for r in rows}
    for i, name in enumerate(arms):
        if name not in counts:
            role = "control" if i == 0 else "treatment"
            present = sorted(k for k in counts if k != "<missing>")
            raise InvalidArgumentError(role, name, f"a label present in column 'variant': {present!r}")
    unknown = {k: v for k, v in sorted(counts.items()) if k not in arms}
    if unknown and not drop_unknown:
        raise InvalidValuesError(
            "assignments",
            "variant",
            "labels that are no analysed arm",
            unknown,
            f"one of {list(arms)!r}",
            "fix the labels, name the arm with --treatment, pass --normalize-labels (strip + "
            "case-fold) or --drop-unknown-variants to drop these rows",
        )
    return unknown


def _check_events(eng: Engine, plan: Plan) -> int:
    """Event names in the vocabulary, finite non-negative dwell; one scan of those columns.

    Returns:
        The number of events in the log.

    Raises:
        InvalidArgumentError: naming the column, the offending values with counts, what was expected.
    """
    q = eng.dialect.ident
    names = ", ".join(repr(e) for e in EVENT_TYPES)
    bad_event = f"{q('event')} IS NULL OR CAST({q('event')} AS STRING) NOT IN ({names})"
    dw = f"CAST({q('dwell_seconds')} AS DOUBLE)"
    bad_dwell = f"{dw} < 0 OR abs({dw}) = CAST('Infinity' AS DOUBLE)"
    uses_dwell = any(s.value == "dwell_seconds" for _, s in plan.specs)
    cols = f"COUNT(*) AS n, SUM(CASE WHEN {bad_event} THEN 1 ELSE 0 END) AS bad_event"
    cols += f", SUM(CASE WHEN {bad_dwell} THEN 1 ELSE 0 END) AS bad_dwell" if uses_dwell else ""
    (row,) = eng.fetch(f"SELECT {cols} FROM {EVENTS}", {})
    checks = [
        (
            "bad_event",
            "event",
            bad_event,
            "unknown event names (names are case-sensitive)",
            f"one of {list(EVENT_TYPES)!r}",
        )
    ]
    if uses_dwell:
        checks.append(
            (
                "bad_dwell",
                "dwell_seconds",
                bad_dwell,
                "negative or infinite dwell times",
                "finite seconds >= 0",
            )
        )
    for key, col, cond, problem, expected in checks:
        if int(row[key] or 0):
            v = f"CAST({q(col)} AS STRING)"
            rows = eng.fetch(
                f"SELECT {v} AS v, COUNT(*) AS n FROM {EVENTS} WHERE {cond} GROUP BY {v} ORDER BY n DESC LIMIT 10",
                {},
            )
            found = {("<missing>" if r["v"] is None else str(r["v"])): int(r["n"]) for r in rows}
            raise InvalidValuesError("events", col, problem, found, expected)
    return int(row["n"])


# ------------------------------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class GroupMoments:
    """One metric's statistics per arm within one scope (overall, or one segment value).

    ``n_all`` counts every user of each arm in the scope, including those a non-finite covariate drops
    from ``moments``; both tuples are in arm order (control first).
    """

    segment: str | None
    segment_value: str | None
    n_all: tuple[int, ...]
    moments: tuple[Moments, ...]


@dataclass(frozen=True)
class MetricMoments:
    """One metric: its estimand, its cap (pooled over the analysed arms), users without a value, groups."""

    metric: MetricDef
    estimand: Estimand
    cap: float | None
    n_invalid: int
    groups: tuple[GroupMoments, ...]


@dataclass(frozen=True)
class SQLStats:
    """What the query returned, as sufficient statistics.

    Args:
        arms: control first, then the treatments (as compared: normalized when asked).
        counts: assigned users per arm (the SRM check), same order as ``arms``.
        segment_counts: (segment, value, users per arm) for the per-segment SRM checks.
        n_assigned: assigned users of every variant (after the experiment filter).
        n_events: events in the log; ``unassigned_events`` matched no assigned user and
            ``early_events`` came before the user's ``assigned_at`` (both dropped).
        metrics: one entry per metric, in definition order.
        engine: engine name; query: the SQL text that ran.
        dropped_variants: rows per label that is no analysed arm (with ``drop_unknown_variants``).
        ids_as_strings: events and assignments store ``user_id`` with different types (joined as text).
    """

    arms: tuple[str, ...]
    counts: tuple[int, ...]
    segment_counts: tuple[tuple[str, str, tuple[int, ...]], ...]
    n_assigned: int
    n_events: int
    unassigned_events: int
    early_events: int
    metrics: tuple[MetricMoments, ...]
    engine: str
    query: str
    dropped_variants: dict[str, int] = field(default_factory=dict)
    ids_as_strings: bool = False

    @property
    def dropped_events(self) -> int:
        """Events of unassigned users or before assignment."""
        return self.unassigned_events + self.early_events


_Row = dict[str, Any]
_Scopes = list[tuple[str | None, str | None, dict[int, _Row]]]


def _moments(row: _Row | None, pre: str, names: tuple[str, ...]) -> Moments:
    k = len(names)
    if row is None or not row[f"{pre}_n"]:
        return Moments(names, 0, (0.0,) * k, tuple((0.0,) * k for _ in range(k)))
    sums = tuple(float(row[f"{pre}_s{i}"] or 0.0) for i in range(k))
    cross = [[0.0] * k for _ in range(k)]
    for i in range(k):
        for j in range(i, k):
            cross[i][j] = cross[j][i] = float(row[f"{pre}_c{i}_{j}"] or 0.0)
    return Moments(names, int(row[f"{pre}_n"]), sums, tuple(tuple(r) for r in cross))


def _is_value(v: object) -> bool:
    return v is not None and not (isinstance(v, float) and v != v)


def _scopes(rows: list[_Row], plan: Plan) -> _Scopes:
    """Result rows → [(segment, value, rows per arm)]: overall first, then each segment's sorted values."""
    overall: dict[int, _Row] = {}
    by_seg: list[dict[Any, dict[int, _Row]]] = [{} for _ in plan.segments]
    for r in rows:
        flags = [int(r[f"g{a[1:]}"]) for a, _ in plan.segments]
        if all(flags):
            overall[int(r["arm"])] = r
            continue
        j = flags.index(0)
        v = r[plan.segments[j][0]]
        if _is_value(v):
            by_seg[j].setdefault(v, {})[int(r["arm"])] = r
    out: _Scopes = [(None, None, overall)]
    for j, (_, col) in enumerate(plan.segments):
        out += [(col, str(v), by_seg[j][v]) for v in sorted(by_seg[j])]
    return out


def _analysed_sum(per_arm: dict[int, _Row], key: str) -> int:
    return sum(int(r[key] or 0) for arm, r in per_arm.items() if arm >= 0)


def _check_plausible(plan: Plan, overall: dict[int, _Row]) -> None:
    """The in-memory plausibility checks, from the counts the query returned.

    Raises:
        InvalidValuesError: infinite covariates, per-user proportions above 1.
    """
    for alias, col in plan.covariates:
        n = _analysed_sum(overall, f"{alias}_inf")
        if n:
            raise InvalidValuesError(
                "assignments", col, "infinite values", {"inf/-inf": n}, "finite numbers (NaN drops the row)"
            )
    for m in plan.metrics:
        n = _analysed_sum(overall, f"m{m.index}_bad") if _implausible(m) else 0
        if n:
            y = m.metric.numerator.column
            d = m.metric.denominator.column if m.metric.denominator is not None else "1"
            raise InvalidValuesError(
                "per-user (assignments + aggregated events)",
                y,
                f"exceeds {d!r} (per-user {m.metric.name} > 1) for proportion metric {m.metric.name!r}",
                {f"users with {y} > {d}": n},
                f"{y} <= {d} per user (or declare kind: continuous)",
            )


def _metric_moments(plan: Plan, scopes: _Scopes, n_arms: int) -> tuple[MetricMoments, ...]:
    overall = scopes[0][2]
    out = []
    for m in plan.metrics:
        pre, names = f"m{m.index}", tuple(v.name for v in m.variables)
        cap: float | None = None
        if m.metric.capping is not None:
            raw = next((r.get(f"cap{m.index}") for r in overall.values()), None)
            cap = float("nan") if raw is None else float(raw)
        groups = tuple(
            GroupMoments(
                seg,
                val,
                tuple(int(per_arm[i]["n_all"]) if i in per_arm else 0 for i in range(n_arms)),
                tuple(_moments(per_arm.get(i), pre, names) for i in range(n_arms)),
            )
            for seg, val, per_arm in scopes
        )
        n_valid = sum(mo.n for mo in groups[0].moments)
        out.append(MetricMoments(m.metric, m.estimand, cap, sum(groups[0].n_all) - n_valid, groups))
    return tuple(out)


def _arms(control: str, treatments: Sequence[str], fold: bool) -> tuple[str, ...]:
    arms = (control, *treatments)
    if not treatments or not all(isinstance(a, str) and a for a in arms):
        raise InvalidArgumentError("treatment", list(treatments), "one or more non-empty variant labels")
    if fold:
        arms = tuple(a.strip().casefold() for a in arms)
    if len(set(arms)) != len(arms):
        raise InvalidArgumentError("arms", list(arms), "distinct control and treatment labels")
    return arms


def sql_moments(
    events: str | Path,
    assignments: AssignmentsInput,
    metrics: Sequence[MetricDef] | str | Path | None = None,
    *,
    control: str = "control",
    treatments: Sequence[str] = ("treatment",),
    experiment: str | None = None,
    cold_start_notes: Iterable[object] | None = None,
    segments: Sequence[str] = (),
    only_after_assignment: bool = True,
    normalize_labels: bool = False,
    drop_unknown_variants: bool = False,
    engine: EngineConfig | str = "duckdb",
) -> SQLStats:
    """Per-arm, per-segment sufficient statistics of every metric, computed in the engine.

    Args:
        events: parquet file, directory or glob (``'dir/*.parquet'``; URLs go to the engine as they are).
        assignments: DataFrame, or parquet/CSV path or glob: user_id, variant, optional experiment,
            assigned_at, covariate and segment columns.
        metrics: metric definitions, a YAML path, or ``None`` for the defaults; every column needs an
            ``events`` recipe (covariates come from assignment columns); no quantile metrics.
        control: control variant.
        treatments: treatment variants (each compared with control).
        experiment: which experiment of the assignments to keep.
        cold_start_notes: ids of cold-start notes (else events need a boolean ``is_cold_start``).
        segments: assignment columns whose values each get their own statistics.
        only_after_assignment: count only events at/after the user's ``assigned_at``.
        normalize_labels: compare variant labels trimmed and lower-cased (else exact strings).
        drop_unknown_variants: drop users whose label is no analysed arm (else an error naming them).
        engine: ``"duckdb"``, ``"spark"`` or an :class:`EngineConfig`.

    Returns:
        :class:`SQLStats`.

    Raises:
        InvalidArgumentError: empty glob, unknown variant/experiment, bad engine.
        MissingColumnError: naming the table, the column and the columns present.
        InvalidValuesError: unknown labels or event names, duplicate ids, negative dwell, implausible values.
        ABAnalysisError: a metric column without an events recipe, a quantile metric.
    """
    cfg = EngineConfig(engine) if isinstance(engine, str) else engine  # type: ignore[arg-type]
    mdefs = resolve_metrics(metrics)
    needed_specs(mdefs)
    arms = _arms(control, treatments, normalize_labels)
    files = resolve_events(events)
    notes = None if cold_start_notes is None else list(dict.fromkeys(cold_start_notes))
    as_src = "a DataFrame" if isinstance(assignments, pd.DataFrame) else repr(str(assignments))
    with open_engine(cfg, files, assignments, notes) as eng:
        ev_cols, as_cols = eng.columns(EVENTS), eng.columns(ASSIGNMENTS)
        where, params = _experiments(eng, as_cols, experiment)
        plan = build_plan(
            mdefs,
            ev_cols,
            as_cols,
            n_arms=len(arms),
            experiment=experiment if params else None,
            fold_labels=normalize_labels,
            cold_notes=notes is not None,
            segments=segments,
            only_after_assignment=only_after_assignment,
            sources=(repr(str(events)), as_src),
        )
        unknown = _check_assignments(
            eng,
            where,
            params,
            arms,
            segments,
            fold=normalize_labels,
            drop_unknown=drop_unknown_variants,
            family=as_cols["variant"],
        )
        n_events = _check_events(eng, plan)
        sql = render_query(plan, eng.dialect)
        log.debug("ab sql (%s):\n%s", cfg.engine, sql)
        rows = eng.fetch(sql, {**params, **{f"arm{i}": a for i, a in enumerate(arms)}})
    scopes = _scopes(rows, plan)
    overall = scopes[0][2]
    _check_plausible(plan, overall)
    joined = sum(int(r["n_join"] or 0) for r in overall.values())
    kept = sum(int(r["n_ev"] or 0) for r in overall.values())
    if n_events > 0 and joined == 0:
        raise InvalidValuesError(
            "events",
            "user_id",
            f"none of the {n_events} events matches an assigned user",
            {"<every event>": n_events},
            "user ids that occur in the assignments (check the experiment and the id format)",
        )
    n = len(arms)
    counts = tuple(int(overall[i]["n_all"]) if i in overall else 0 for i in range(n))
    seg_counts = tuple(
        (str(seg), str(val), tuple(int(p[i]["n_all"]) if i in p else 0 for i in range(n)))
        for seg, val, p in scopes[1:]
    )
    return SQLStats(
        arms,
        counts,
        seg_counts,
        sum(int(r["n_all"]) for r in overall.values()),
        n_events,
        n_events - joined,
        joined - kept,
        _metric_moments(plan, scopes, n),
        cfg.engine,
        sql,
        unknown,
        plan.ids_as_strings,
    )


# ------------------------------------------------------------------------------------------------ report


def _pair(mm: MetricMoments, g: GroupMoments, i: int, cfg: AnalysisConfig) -> tuple[LiftResult, float]:
    """Control vs arm ``i`` in one scope, by the in-memory rules: result and CUPED variance reduction."""
    mc, mt = g.moments[0], g.moments[i]
    if (mc.n == 0 or mt.n == 0) and g.n_all[0] > 0 and g.n_all[i] > 0:
        msg = f"metric columns are NaN for every user of an arm ({mm.metric.name!r})"
        return degenerate_result("all_nan", g.n_all[0], g.n_all[i], cfg.alpha, msg), math.nan
    kw: dict[str, Any] = {"alpha": cfg.alpha, "use_t": cfg.use_t, "relative_ci": cfg.relative_ci}
    res = compare(mc, mt, mm.estimand, **kw)
    vr = math.nan
    if mm.estimand.covariate_numerator is not None and res.status == "ok":
        raw = compare(mc, mt, Estimand(mm.estimand.numerator, mm.estimand.denominator), **kw)
        if raw.status == "ok" and raw.abs_se > 0:
            vr = 1 - (res.abs_se / raw.abs_se) ** 2
    return res, vr


def _rows(stats: SQLStats, cfg: AnalysisConfig) -> tuple[list[MetricResult], list[DataNote]]:
    """Report rows (metric, then scope, then arm: the in-memory order) and the metrics' data notes."""
    rows: list[MetricResult] = []
    notes: list[DataNote] = []
    for mm in stats.metrics:
        m = mm.metric
        for g in mm.groups:
            for i in range(1, len(stats.arms)):
                res, vr = _pair(mm, g, i, cfg)
                rows.append(
                    MetricResult(
                        m.name,
                        m.type,
                        g.segment,
                        g.segment_value,
                        res,
                        math.nan,
                        mm.cap,
                        m.covariate is not None,
                        stats.arms[i],
                        m.direction,
                        m.guardrail,
                        True,
                        RowExtras(variance_reduction=vr),
                        m.min_effect,
                    )
                )
        if mm.cap is not None:
            text = f"{m.name}: {m.numerator.column} capped at {mm.cap:.6g} (pooled {m.capping:g} quantile)"
            notes.append(DataNote("capping", text))
        if mm.n_invalid:
            text = f"{m.name}: {mm.n_invalid} users without a value (NaN) left out of this metric"
            notes.append(DataNote("dropped_rows", text))
        for r in rows:
            if r.metric == m.name and r.cuped and r.segment is None and r.result.status == "ok":
                text = (
                    f"{m.name} ({r.arm}): θ = {r.result.theta:.4g}, variance reduction "
                    f"{100 * r.extras.variance_reduction:.1f} %"
                )
                notes.append(DataNote("cuped", text))
    return rows, notes


def _input_notes(stats: SQLStats) -> list[DataNote]:
    out = []
    if stats.unassigned_events:
        out.append(
            DataNote("dropped_events", f"{stats.unassigned_events} events of users without an assignment")
        )
    if stats.early_events:
        out.append(DataNote("dropped_events", f"{stats.early_events} events before the user's assigned_at"))
    if stats.ids_as_strings:
        text = "events and assignments store user_id with different types: compared as strings"
        out.append(DataNote("user_id", text))
    if stats.dropped_variants:
        n = sum(stats.dropped_variants.values())
        text = f"{n} rows of other variants dropped: {format_counts(stats.dropped_variants)}"
        out.append(DataNote("dropped_rows", text))
    return out


def analyze_sql(
    events: str | Path,
    assignments: AssignmentsInput,
    metrics: Sequence[MetricDef] | str | Path | None = None,
    *,
    control: str = "control",
    treatment: str | Sequence[str] = "treatment",
    experiment: str | None = None,
    cold_start_notes: Iterable[object] | None = None,
    segments: Sequence[str] = (),
    only_after_assignment: bool = True,
    normalize_labels: bool = False,
    drop_unknown_variants: bool = False,
    engine: EngineConfig | str = "duckdb",
    alpha: float = 0.05,
    correction: str = "holm",
    relative_ci: str = "log",
    use_t: bool = True,
    expected_share: Sequence[float] | None = None,
    srm_threshold: float = 0.001,
    srm_warn: float = 0.01,
) -> Report:
    """A/B report with the sufficient statistics computed by SQL where the events are.

    The same report as :func:`~ab_analysis.analysis.analyze_events` (rows, SRM gate, adjusted CIs,
    Bayesian/sequential/MDE views, data notes) except the daily series, which stays on the in-memory path.

    Example:
        >>> rep = analyze_sql("events/*.parquet", "assignments.parquet", engine="duckdb")  # doctest: +SKIP

    Args:
        events: parquet file, directory or glob; read by the engine, never loaded into Python.
        assignments: DataFrame or parquet/CSV path (user_id, variant, optional experiment, assigned_at,
            covariates, segments).
        metrics: as in :func:`~ab_analysis.analysis.analyze` (mean and ratio metrics).
        control: control variant.
        treatment: treatment variant, or several (each compared with control; one family).
        experiment, cold_start_notes, segments, only_after_assignment, normalize_labels,
            drop_unknown_variants, engine: see :func:`sql_moments`.
        alpha, correction, relative_ci, use_t, expected_share, srm_threshold, srm_warn: see
            :func:`~ab_analysis.analysis.analyze`.

    Returns:
        A :class:`Report` (``metadata["source"] == "sql"``).

    Raises:
        See :func:`sql_moments`; InvalidArgumentError for bad alpha/correction/thresholds.
    """
    cfg = AnalysisConfig(alpha, correction, relative_ci, use_t, srm_threshold, srm_warn)
    treatments = [treatment] if isinstance(treatment, str) else list(treatment)
    stats = sql_moments(
        events,
        assignments,
        metrics,
        control=control,
        treatments=treatments,
        experiment=experiment,
        cold_start_notes=cold_start_notes,
        segments=segments,
        only_after_assignment=only_after_assignment,
        normalize_labels=normalize_labels,
        drop_unknown_variants=drop_unknown_variants,
        engine=engine,
    )
    if stats.dropped_events:
        log.info("dropped %d events of unassigned users or before assignment", stats.dropped_events)
    kw: dict[str, Any] = {"threshold": cfg.srm_threshold, "warn_threshold": cfg.srm_warn, "arms": stats.arms}
    srm = srm_check(stats.counts, expected_share, **kw)
    srm_segments = [
        srm_check(c, expected_share, segment=s, segment_value=v, **kw) for s, v, c in stats.segment_counts
    ]
    rows, metric_notes = _rows(stats, cfg)
    rows = finish_rows(rows, cfg, srm, srm_segments)
    meta = {
        "variant_column": "variant",
        "n_rows": stats.n_assigned,
        "segments": list(segments),
        "source": "sql",
        "engine": stats.engine,
        "events": str(events),
        "n_events": stats.n_events,
        "dropped_events": stats.dropped_events,
        "experiment": experiment,
    }
    report = Report(
        tuple(rows),
        srm,
        stats.arms[0],
        stats.arms[1],
        cfg.alpha,
        cfg.correction,
        cfg.relative_ci,
        cfg.use_t,
        (),
        meta,
        stats.arms[1:],
        tuple(srm_segments),
        tuple(_input_notes(stats) + metric_notes),
    )
    gate = report.srm_gate()
    if gate["status"] in ("fail", "warning"):
        log.warning(
            "sample ratio %s in %s", gate["status"], ", ".join(gate.get("failed") or gate.get("warned") or [])
        )
    return report
