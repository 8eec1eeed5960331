"""A/B sufficient statistics computed by SQL inside the engine that holds the events.

One query per metric set turns an event log (parquet files, read by the engine itself: the events never
enter Python) and an assignments table into per-arm, per-segment :class:`~ab_analysis.moments.Moments`:
users' counts, sums and cross-product sums of each metric's variables. The same statistics core as the
in-memory path (:func:`~ab_analysis.estimators.compare`, :func:`~ab_analysis.corrections.adjust_pvalues`,
:func:`~ab_analysis.srm.srm_check`) then builds the :class:`~ab_analysis.report.Report`.

The query follows :mod:`ab_analysis.events` rule for rule: only events of assigned users at/after their
``assigned_at`` count; each column spec counts its event types (or sums their ``dwell_seconds``, NULL/NaN
as 0), optionally only on cold-start notes; users without events get zeros; capping is the pooled
(control + that treatment) linear-interpolation quantile, the definition of ``numpy.quantile``; CUPED
covariates come from assignment columns; rows with a non-finite covariate drop out of that metric only.

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
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias

import pandas as pd

from ab_analysis.analysis import MAX_SEGMENT_VALUES, AnalysisConfig, resolve_metrics
from ab_analysis.corrections import adjust_pvalues
from ab_analysis.errors import ABAnalysisError, InvalidArgumentError, MissingColumnError
from ab_analysis.estimators import Estimand, LiftResult, compare, degenerate_result
from ab_analysis.metrics import EVENT_TYPES, ColumnSpec, MetricDef
from ab_analysis.moments import Moments
from ab_analysis.report import MetricResult, Report
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
    "analyze_sql_arms",
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
        memory_limit: duckdb memory limit; beyond it duckdb spills to ``temp_directory``.
        temp_directory: duckdb spill directory (``None``: a fresh directory under the system temp dir).
        spark: an existing ``SparkSession`` to use (``None``: a ``local[1]`` session is started).
        spark_master: master URL for the session started here.
        spark_driver_memory: driver memory for the session started here.
    """

    engine: Literal["duckdb", "spark"] = "duckdb"
    threads: int | None = None
    memory_limit: str = "1GB"
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
        use_ts,
        cold,
        tuple((spec_alias[s.column], s) for s in specs),
        tuple((a, c) for c, a in cov_alias.items()),
        tuple((f"s{i}", s) for i, s in enumerate(segments)),
        _metric_plans(mdefs, spec_alias, cov_alias),
    )


# ----------------------------------------------------------------------------------------------- query


def label_expr(column: str, d: Dialect, fold: bool) -> str:
    """A label compared as a string; ``fold``: also trimmed and lower-cased (the arm names are too)."""
    text = f"CAST({d.ident(column)} AS STRING)"
    return f"lower(trim({text}))" if fold else text


def _uid(prefix: str, family: bool, d: Dialect) -> str:
    """The join key: the id itself, or (ids of another type on the other side) its string form."""
    col = f"{prefix}{d.ident('user_id')}"
    return f"CAST({col} AS STRING)" if family else col


def _assignments_cte(plan: Plan, d: Dialect) -> str:
    q = d.ident
    arms = " ".join(f"WHEN {d.param(f'arm{i}')} THEN {i}" for i in range(plan.n_arms))
    label = label_expr("variant", d, plan.fold_labels)
    cols = [f"{_uid('', plan.ids_as_strings, d)} AS uid", f"CASE {label} {arms} ELSE -1 END AS arm"]
    if plan.use_ts:
        cols.append(f"{q('assigned_at')} AS asg_at")
    for alias, col in plan.covariates:
        x = f"CAST({q(col)} AS DOUBLE)"
        finite = f"{x} IS NOT NULL AND NOT isnan({x}) AND abs({x}) < CAST('Infinity' AS DOUBLE)"
        cols.append(f"CASE WHEN {finite} THEN {x} END AS {alias}")
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
    sums = [
        f"CAST(SUM(CASE WHEN {_spec_condition(s, plan, d)} THEN "
        f"{dwell if s.value == 'dwell_seconds' else '1'} ELSE 0 END) AS DOUBLE) AS {alias}"
        for alias, s in plan.specs
    ]
    join = f"  FROM {EVENTS} e JOIN a ON {_uid('e.', plan.ids_as_strings, d)} = a.uid\n"
    if plan.cold == "notes":
        join += f"  LEFT JOIN {COLD_NOTES} cn ON e.{q('note_id')} = cn.note_id\n"
    where = f"  WHERE (a.asg_at IS NULL OR e.{q('ts')} >= a.asg_at)\n" if plan.use_ts else ""
    body = ",\n         ".join(["a.uid AS uid", "COUNT(*) AS n_ev", *sums])
    return f"ev AS (\n  SELECT {body}\n{join}{where}  GROUP BY a.uid\n)"


def _capped(plan: Plan) -> list[tuple[_MetricPlan, int]]:
    """(metric, treatment arm) pairs that need a cap: capping pools control with each treatment."""
    return [(m, t) for m in plan.metrics if m.metric.capping is not None for t in range(1, plan.n_arms)]


def _user_ctes(plan: Plan, d: Dialect) -> str:
    keep = ["a.arm AS arm", *(f"a.{a} AS {a}" for a, _ in plan.covariates + plan.segments)]
    keep += ["COALESCE(ev.n_ev, 0) AS n_ev"]
    keep += [f"COALESCE(ev.{a}, CAST(0 AS DOUBLE)) AS {a}" for a, _ in plan.specs]
    u = "u AS (\n  SELECT " + ",\n         ".join(keep) + "\n  FROM a LEFT JOIN ev ON a.uid = ev.uid\n)"
    capped = _capped(plan)
    if not capped:
        return u
    caps = ",\n         ".join(
        f"{d.quantile}(CASE WHEN arm IN (0, {t}) THEN {m.variables[0].column} END, "
        f"{float(m.metric.capping or 0)!r}) AS cap{m.index}_{t}"
        for m, t in capped
    )
    ycols = ",\n         ".join(
        f"CASE WHEN caps.cap{m.index}_{t} IS NULL OR u.{m.variables[0].column} <= caps.cap{m.index}_{t} "
        f"THEN u.{m.variables[0].column} ELSE caps.cap{m.index}_{t} END AS y{m.index}_{t}"
        for m, t in capped
    )
    return (
        f"{u},\ncaps AS (\n  SELECT {caps}\n  FROM u\n),\n"
        f"m AS (\n  SELECT u.*, caps.*,\n         {ycols}\n  FROM u CROSS JOIN caps\n)"
    )


def _moment_columns(plan: Plan) -> list[str]:
    """``SUM``s of every metric's variables and cross products (per treatment where capping differs)."""
    out = []
    capped = {(m.index, t) for m, t in _capped(plan)}
    for m in plan.metrics:
        pairs = range(1, plan.n_arms) if m.metric.capping is not None else [0]
        for p in pairs:
            cols = [f"y{m.index}_{p}" if (m.index, p) in capped else m.variables[0].column]
            cols += [v.column for v in m.variables[1:]]
            nullable = [v.column for v in m.variables if v.nullable]
            valid = " AND ".join(f"{c} IS NOT NULL" for c in nullable) or "TRUE"
            pre = f"m{m.index}_{p}"
            out.append(f"SUM(CASE WHEN {valid} THEN 1 ELSE 0 END) AS {pre}_n")
            for i, ci in enumerate(cols):
                out.append(f"SUM(CASE WHEN {valid} THEN {ci} END) AS {pre}_s{i}")
                for j in range(i, len(cols)):
                    out.append(f"SUM(CASE WHEN {valid} THEN {ci} * {cols[j]} END) AS {pre}_c{i}_{j}")
    return out


def render_query(plan: Plan, dialect: Dialect) -> str:
    """The one query: per-user aggregates, caps, then per-arm (x segment value) sufficient statistics.

    Result rows: ``arm`` (0 control, 1.. treatments, -1 other variants), per segment ``g{i}`` (0 when
    the row is grouped by segment ``s{i}``) and ``s{i}``, ``n_all`` (users), ``n_ev`` (events kept), and
    per metric ``m{k}_{p}_n``, ``_s{i}``, ``_c{i}_{j}`` (``p``: the treatment a capped metric's cap pools
    with control, else 0).
    """
    ctes = [_assignments_cte(plan, dialect), _events_cte(plan, dialect), _user_ctes(plan, dialect)]
    source = "m" if _capped(plan) else "u"
    head = ["arm"]
    for alias, _ in plan.segments:
        head += [f"GROUPING({alias}) AS g{alias[1:]}", alias]
    caps = [f"MAX(cap{m.index}_{t}) AS cap{m.index}_{t}" for m, t in _capped(plan)]
    cols = [*head, "COUNT(*) AS n_all", "SUM(n_ev) AS n_ev", *caps, *_moment_columns(plan)]
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
        cur = self.con.execute(sql, dict(params)) if params else self.con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


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
        except duckdb.IOException as exc:
            raise InvalidArgumentError(
                "events", files if len(files) > 1 else files[0], f"readable parquet ({exc})"
            ) from None
        if isinstance(assignments, pd.DataFrame):
            con.register(ASSIGNMENTS, assignments)
        else:
            af = resolve_events(assignments)
            rel = con.read_csv(af) if all(f.endswith(".csv") for f in af) else con.read_parquet(af)
            rel.create_view(ASSIGNMENTS)
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
            "ORDER BY n DESC LIMIT 5",
            params,
        )
        examples = ", ".join(f"{r['u']!r} x{r['n']}" for r in ex)
        raise ABAnalysisError(
            f"assignments table, column 'user_id': {int(row['n']) - int(row['nd'])} duplicate user_id rows "
            f"(e.g. {examples}): expected one assignment per user"
        )
    for i, s in enumerate(segments):
        if int(row[f"k{i}"]) > MAX_SEGMENT_VALUES:
            raise InvalidArgumentError(
                f"segments[{s!r}]",
                f"{row[f'k{i}']} values",
                f"a column with at most {MAX_SEGMENT_VALUES} distinct values",
            )
    label = label_expr("variant", eng.dialect, fold)
    rows = eng.fetch(f"SELECT {label} AS v, COUNT(*) AS n FROM {ASSIGNMENTS}{where} GROUP BY {label}", params)
    counts = {("<missing>" if r["v"] is None else str(r["v"])): int(r["n"]) for r in rows}
    for i, name in enumerate(arms):
        if name not in counts:
            role = "control" if i == 0 else "treatment"
            present = sorted(k for k in counts if k != "<missing>")
            raise InvalidArgumentError(role, name, f"a label present in column 'variant': {present!r}")
    unknown = {k: v for k, v in sorted(counts.items()) if k not in arms}
    if unknown and not drop_unknown:
        raise InvalidArgumentError(
            "assignments.variant",
            unknown,
            f"only the analysed arms {list(arms)!r} (labels compared as strings"
            f"{', trimmed and lower-cased' if fold else ''}); name the arm as a treatment or pass "
            "drop_unknown_variants=True (--drop-unknown-variants) to drop these rows",
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
    checks = [("bad_event", "event", bad_event, f"one of {list(EVENT_TYPES)!r} (names are case-sensitive)")]
    if uses_dwell:
        checks.append(("bad_dwell", "dwell_seconds", bad_dwell, "finite seconds >= 0"))
    for key, col, cond, expected in checks:
        if int(row[key] or 0):
            v = f"CAST({q(col)} AS STRING)"
            rows = eng.fetch(
                f"SELECT {v} AS v, COUNT(*) AS n FROM {EVENTS} WHERE {cond} GROUP BY {v} ORDER BY n DESC LIMIT 10",
                {},
            )
            found = {("<missing>" if r["v"] is None else str(r["v"])): int(r["n"]) for r in rows}
            raise InvalidArgumentError(f"events.{col}", found, expected)
    return int(row["n"])


# ------------------------------------------------------------------------------------------ statistics


@dataclass(frozen=True)
class GroupMoments:
    """Control and treatment statistics of one metric within one group (overall or a segment value).

    ``n_control_all``/``n_treatment_all`` count every user of the arm in the group, including those a
    non-finite covariate drops from the moments.
    """

    segment: str | None
    segment_value: str | None
    n_control_all: int
    n_treatment_all: int
    control: Moments
    treatment: Moments


@dataclass(frozen=True)
class MetricMoments:
    """One metric against one treatment: estimand, cap (pooled over control + this treatment), groups."""

    metric: MetricDef
    treatment: str
    estimand: Estimand
    cap: float | None
    groups: tuple[GroupMoments, ...]


@dataclass(frozen=True)
class SQLStats:
    """What the query returned, as sufficient statistics.

    Args:
        arms: control first, then the treatments.
        counts: assigned users per arm (for the SRM check), same order as ``arms``.
        n_assigned: assigned users of every variant (after the experiment filter).
        n_events: events in the log; ``dropped_events`` of them are of unassigned users or before assignment.
        metrics: per treatment, per metric (in that order).
        engine: engine name; query: the SQL text that ran.
    """

    arms: tuple[str, ...]
    counts: tuple[int, ...]
    n_assigned: int
    n_events: int
    dropped_events: int
    metrics: tuple[MetricMoments, ...]
    engine: str
    query: str
    dropped_variants: dict[str, int] = field(default_factory=dict)
    ids_as_strings: bool = False


_Row = dict[str, Any]


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


def _split_rows(
    rows: list[_Row], plan: Plan
) -> tuple[dict[int, _Row], list[tuple[str, list[tuple[str, dict[int, _Row]]]]]]:
    """Result rows → overall rows per arm, and per segment its sorted values with rows per arm."""
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
    segs = [
        (col, [(str(v), by_seg[j][v]) for v in sorted(by_seg[j])]) for j, (_, col) in enumerate(plan.segments)
    ]
    return overall, segs


def _metric_moments(
    plan: Plan, rows: list[_Row], arms: Sequence[str]
) -> tuple[dict[int, _Row], tuple[MetricMoments, ...]]:
    overall, segs = _split_rows(rows, plan)
    groups: list[tuple[str | None, str | None, dict[int, _Row]]] = [(None, None, overall)]
    groups += [(s, v, per_arm) for s, values in segs for v, per_arm in values]
    out = []
    for t in range(1, len(arms)):
        for m in plan.metrics:
            p = t if m.metric.capping is not None else 0
            pre, names = f"m{m.index}_{p}", tuple(v.name for v in m.variables)
            cap: float | None = None
            if m.metric.capping is not None:
                raw = next((r.get(f"cap{m.index}_{t}") for r in overall.values()), None)
                cap = float("nan") if raw is None else float(raw)
            gm = tuple(
                GroupMoments(
                    s,
                    v,
                    int(per_arm[0]["n_all"]) if 0 in per_arm else 0,
                    int(per_arm[t]["n_all"]) if t in per_arm else 0,
                    _moments(per_arm.get(0), pre, names),
                    _moments(per_arm.get(t), pre, names),
                )
                for s, v, per_arm in groups
            )
            out.append(MetricMoments(m.metric, arms[t], m.estimand, cap, gm))
    return overall, tuple(out)


def _arms(control: str, treatments: Sequence[str]) -> tuple[str, ...]:
    arms = (control, *treatments)
    if not treatments or not all(isinstance(a, str) and a for a in arms):
        raise InvalidArgumentError("treatments", list(treatments), "one or more non-empty variant labels")
    if len(set(arms)) != len(arms):
        raise InvalidArgumentError(
            "treatments", list(treatments), f"distinct labels, none equal to control={control!r}"
        )
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
            ``events`` recipe (covariates come from assignment columns).
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
        ABAnalysisError: duplicate assignments, a metric column without an events recipe.
    """
    cfg = EngineConfig(engine) if isinstance(engine, str) else engine  # type: ignore[arg-type]
    mdefs = resolve_metrics(metrics)
    needed_specs(mdefs)
    arms = _arms(control, treatments)
    if normalize_labels:
        arms = tuple(a.strip().lower() for a in arms)
        _arms(arms[0], arms[1:])
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
            eng, where, params, arms, segments, fold=normalize_labels, drop_unknown=drop_unknown_variants
        )
        n_events = _check_events(eng, plan)
        sql = render_query(plan, eng.dialect)
        log.debug("ab sql (%s):\n%s", cfg.engine, sql)
        rows = eng.fetch(sql, {**params, **{f"arm{i}": a for i, a in enumerate(arms)}})
    overall, mm = _metric_moments(plan, rows, arms)
    kept = sum(int(r["n_ev"] or 0) for r in overall.values())
    if n_events > 0 and kept == 0:
        raise InvalidArgumentError(
            "events.user_id",
            f"none of the {n_events} events matches an assigned user at/after assignment",
            "user ids that occur in the assignments (check the experiment, the id format and assigned_at)",
        )
    counts = tuple(int(overall[i]["n_all"]) if i in overall else 0 for i in range(len(arms)))
    n_assigned = sum(int(r["n_all"]) for r in overall.values())
    return SQLStats(
        arms, counts, n_assigned, n_events, n_events - kept, mm, cfg.engine, sql, unknown, plan.ids_as_strings
    )


# ------------------------------------------------------------------------------------------------ report


def _result(mm: MetricMoments, g: GroupMoments, cfg: AnalysisConfig) -> MetricResult:
    """One report row from a group's moments: the in-memory path's rules, the same estimator."""
    res: LiftResult
    if (g.control.n == 0 or g.treatment.n == 0) and g.n_control_all > 0 and g.n_treatment_all > 0:
        res = degenerate_result(
            "all_nan",
            g.n_control_all,
            g.n_treatment_all,
            cfg.alpha,
            f"metric columns are NaN for every user of an arm ({mm.metric.name!r})",
        )
    else:
        res = compare(
            g.control,
            g.treatment,
            mm.estimand,
            alpha=cfg.alpha,
            use_t=cfg.use_t,
            relative_ci=cfg.relative_ci,  # type: ignore[arg-type]
        )
    m = mm.metric
    return MetricResult(
        m.name, m.type, g.segment, g.segment_value, res, float("nan"), mm.cap, m.covariate is not None
    )


def analyze_sql_arms(
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
    alpha: float = 0.05,
    correction: str = "holm",
    relative_ci: str = "log",
    use_t: bool = True,
    expected_share: Sequence[float] | None = None,
    srm_threshold: float = 0.001,
) -> dict[str, Report]:
    """Each treatment against control from one query; one :class:`Report` per treatment.

    The multiple-testing family is every result row of every treatment (metrics x segments x
    treatments); the SRM check covers all arms. Arguments as in :func:`sql_moments` and
    :func:`ab_analysis.analysis.analyze`; ``expected_share`` has one share per arm (control first).

    Returns:
        Treatment label -> :class:`Report` (``metadata["source"] == "sql"``).
    """
    cfg = AnalysisConfig(alpha, correction, relative_ci, use_t, srm_threshold)
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
    srm = srm_check(stats.counts, expected_share, cfg.srm_threshold)
    rows = [(mm.treatment, _result(mm, g, cfg)) for mm in stats.metrics for g in mm.groups]
    adj = adjust_pvalues([r.result.p_value for _, r in rows], cfg.correction)
    meta = {
        "source": "sql",
        "engine": stats.engine,
        "events": str(events),
        "n_events": stats.n_events,
        "dropped_events": stats.dropped_events,
        "experiment": experiment,
        "variant_column": "variant",
        "n_rows": stats.n_assigned,
        "segments": list(segments),
        "arms": list(stats.arms),
        "dropped_variants": dict(stats.dropped_variants),
        "user_id_compared_as_strings": stats.ids_as_strings,
    }
    return {
        t: Report(
            tuple(r.with_adjusted(a) for (tr, r), a in zip(rows, adj, strict=True) if tr == t),
            srm,
            control,
            t,
            cfg.alpha,
            cfg.correction,
            cfg.relative_ci,
            cfg.use_t,
            (),
            dict(meta),
        )
        for t in stats.arms[1:]
    }


def analyze_sql(
    events: str | Path,
    assignments: AssignmentsInput,
    metrics: Sequence[MetricDef] | str | Path | None = None,
    *,
    control: str = "control",
    treatment: str = "treatment",
    **kwargs: Any,
) -> Report:
    """Two-arm A/B report with the sufficient statistics computed by SQL where the events are.

    Example:
        >>> rep = analyze_sql("events/*.parquet", "assignments.parquet", engine="duckdb")  # doctest: +SKIP

    Args:
        events: parquet file, directory or glob; read by the engine, never loaded into Python.
        assignments: DataFrame or parquet/CSV path (user_id, variant, optional experiment, assigned_at,
            covariates, segments).
        metrics: as in :func:`ab_analysis.analysis.analyze`.
        control: control variant.
        treatment: treatment variant.
        **kwargs: :func:`analyze_sql_arms` keywords (engine, experiment, cold_start_notes, segments,
            alpha, correction, relative_ci, use_t, expected_share, srm_threshold, only_after_assignment).

    Returns:
        The :class:`Report` the in-memory :func:`~ab_analysis.analysis.analyze_events` gives (without the
        daily series).

    Raises:
        See :func:`sql_moments`.
    """
    if not isinstance(treatment, str):
        raise InvalidArgumentError(
            "treatment", treatment, "one variant label (analyze_sql_arms takes several)"
        )
    return analyze_sql_arms(events, assignments, metrics, control=control, treatments=(treatment,), **kwargs)[
        treatment
    ]
