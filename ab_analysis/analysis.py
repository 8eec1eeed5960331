"""Analysis of a user-level table: arms × metrics × (overall + segments) → :class:`~ab_analysis.report.Report`.

The user is the randomization unit: one row per user with a variant column, metric columns, optional
pre-period (CUPED) columns and optional segment columns. Inputs are checked strictly
(:mod:`ab_analysis.validation`): every variant label must be an analysed arm (else an error, or with
``drop_unknown_variants`` the rows are dropped and counted), user ids must be unique, metric values must
be plausible for their kind and finite. Rows whose metric columns are NaN are dropped for that metric only
(and counted in the report's data notes). Each treatment arm is compared with control; the
multiple-testing family is every row with a p-value (arms × metrics × segments).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from ab_analysis.capping import cap_upper, pooled_cap
from ab_analysis.corrections import CORRECTIONS, adjust_pvalues
from ab_analysis.errors import InvalidArgumentError, MissingColumnError
from ab_analysis.estimators import Estimand, LiftResult, compare, degenerate_result
from ab_analysis.metrics import MetricDef, default_metrics, load_metrics
from ab_analysis.moments import Moments
from ab_analysis.report import DailyLift, DataNote, MetricResult, Report, RowExtras
from ab_analysis.srm import SRMResult, srm_check
from ab_analysis.validation import check_plausible, check_unique_ids, variant_codes

if TYPE_CHECKING:
    from ab_analysis.estimators import RelativeCI

__all__ = ["AnalysisConfig", "analyze", "analyze_events", "finish_rows", "grouped_moments", "resolve_metrics"]

log = logging.getLogger(__name__)
MAX_SEGMENT_VALUES = 100


class AnalysisConfig:
    """Validated knobs shared by :func:`analyze` and the CLI (kept tiny on purpose)."""

    def __init__(
        self,
        alpha: float = 0.05,
        correction: str = "holm",
        relative_ci: str = "log",
        use_t: bool = True,
        srm_threshold: float = 0.001,
        srm_warn: float = 0.01,
    ) -> None:
        if not (isinstance(alpha, float | int) and 0 < alpha < 1):
            raise InvalidArgumentError("alpha", alpha, "a number strictly between 0 and 1, e.g. 0.05")
        if correction not in CORRECTIONS:
            raise InvalidArgumentError("correction", correction, f"one of {list(CORRECTIONS)!r}")
        if relative_ci not in ("log", "delta"):
            raise InvalidArgumentError("relative_ci", relative_ci, "one of ['log', 'delta']")
        if not (isinstance(srm_threshold, float | int) and 0 < srm_threshold < 1):
            raise InvalidArgumentError("srm_threshold", srm_threshold, "a number strictly between 0 and 1")
        if not (isinstance(srm_warn, float | int) and srm_threshold <= srm_warn < 1):
            raise InvalidArgumentError(
                "srm_warn", srm_warn, f"a number in [srm_threshold={srm_threshold}, 1), e.g. 0.01"
            )
        self.alpha, self.correction, self.relative_ci = float(alpha), correction, relative_ci
        self.use_t, self.srm_threshold, self.srm_warn = use_t, float(srm_threshold), float(srm_warn)


def resolve_metrics(metrics: Sequence[MetricDef] | str | Path | None) -> list[MetricDef]:
    """``None`` → the paper's defaults; a path → YAML; a sequence → itself."""
    if metrics is None:
        return default_metrics()
    if isinstance(metrics, str | Path):
        return load_metrics(metrics)
    out = list(metrics)
    if not out or not all(isinstance(m, MetricDef) for m in out):
        raise InvalidArgumentError("metrics", metrics, "None, a YAML path or a non-empty list of MetricDef")
    return out


def grouped_moments(
    names: Sequence[str], x: npt.NDArray[np.float64], codes: npt.NDArray[np.int64], n_groups: int
) -> list[Moments]:
    """Moments of the rows of ``x`` (n, k) per group code in ``[0, n_groups)``; other codes are ignored.

    One ``bincount`` per sum and cross product: a single pass per statistic whatever the number of groups.
    """
    keep = (codes >= 0) & (codes < n_groups)
    c = np.where(keep, codes, n_groups)
    counts = np.bincount(c, minlength=n_groups + 1)[:n_groups]
    k = x.shape[1]
    sums = np.zeros((n_groups, k))
    cross = np.zeros((n_groups, k, k))
    for i in range(k):
        xi = np.where(keep, x[:, i], 0.0)
        sums[:, i] = np.bincount(c, weights=xi, minlength=n_groups + 1)[:n_groups]
        for j in range(i, k):
            v = np.bincount(c, weights=xi * x[:, j], minlength=n_groups + 1)[:n_groups]
            cross[:, i, j] = cross[:, j, i] = v
    return [
        Moments(
            tuple(names),
            int(counts[g]),
            tuple(float(v) for v in sums[g]),
            tuple(tuple(float(v) for v in row) for row in cross[g]),
        )
        for g in range(n_groups)
    ]


def _column(users: pd.DataFrame, name: str, table: str) -> npt.NDArray[np.float64]:
    if name not in users.columns:
        raise MissingColumnError(table, name, list(map(str, users.columns)))
    try:
        return pd.to_numeric(users[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise MissingColumnError(
            table, name, None, f"expected numbers, got dtype {users[name].dtype}"
        ) from None


@dataclass(frozen=True)
class _Arms:
    """The analysed arms: names (control first), each row's code (-1: not analysed), rows per arm."""

    names: tuple[str, ...]
    codes: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]

    @property
    def k(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class _Matrix:
    """One metric's variables (after capping), which rows are usable, the estimand and the cap."""

    names: list[str]
    x: npt.NDArray[np.float64]
    valid: npt.NDArray[np.bool_]
    estimand: Estimand
    cap: float | None


def _metric_matrix(users: pd.DataFrame, m: MetricDef, arms: _Arms, table: str) -> _Matrix:
    cols = {"y": (m.numerator.column, _column(users, m.numerator.column, table))}
    if m.denominator is not None:
        cols["d"] = (m.denominator.column, _column(users, m.denominator.column, table))
    if m.covariate is not None:
        cols["x"] = (m.covariate.numerator, _column(users, m.covariate.numerator, table))
        if m.covariate.denominator is not None:
            cols["xd"] = (m.covariate.denominator, _column(users, m.covariate.denominator, table))
    analysed = arms.codes >= 0
    check_plausible(table, m, cols, analysed)
    values = {k: v for k, (_, v) in cols.items()}
    cap: float | None = None
    if m.capping is not None:
        cap = pooled_cap(values["y"][analysed], m.capping)
        values["y"] = cap_upper(values["y"], cap)
    names = list(values)
    x = np.column_stack([values[k] for k in names])
    valid: npt.NDArray[np.bool_] = np.asarray(np.isfinite(x).all(axis=1), dtype=bool)
    est = Estimand(
        "y", "d" if "d" in cols else None, "x" if "x" in cols else None, "xd" if "xd" in cols else None
    )
    return _Matrix(names, np.where(valid[:, None], x, 0.0), valid, est, cap)


_SegmentCodes = tuple[str, npt.NDArray[np.int64], list[str]]
_Scope = tuple[str | None, str | None, npt.NDArray[np.bool_]]


def _segment_codes(users: pd.DataFrame, segments: Sequence[str], table: str) -> list[_SegmentCodes]:
    """Per segment column: its name, each row's value code and the sorted distinct values."""
    seg_codes: list[_SegmentCodes] = []
    for s in segments:
        if s not in users.columns:
            raise MissingColumnError(table, s, list(map(str, users.columns)), "a segment column")
        codes, uniques = pd.factorize(users[s], sort=True)
        if len(uniques) > MAX_SEGMENT_VALUES:
            raise InvalidArgumentError(
                f"segments[{s!r}]",
                f"{len(uniques)} values",
                f"a column with at most {MAX_SEGMENT_VALUES} distinct values",
            )
        seg_codes.append((s, codes.astype(np.int64), [str(u) for u in uniques]))
    return seg_codes


def _scopes(n: int, seg_codes: list[_SegmentCodes]) -> list[_Scope]:
    """(segment, value, row mask) for "all" and every segment value."""
    out: list[_Scope] = [(None, None, np.ones(n, dtype=bool))]
    for s, codes, uniques in seg_codes:
        out += [(s, u, codes == i) for i, u in enumerate(uniques)]
    return out


def _scope_moments(mx: _Matrix, arms: _Arms, mask: npt.NDArray[np.bool_]) -> tuple[list[int], list[Moments]]:
    """All rows per arm in the scope, and the moments of the usable ones."""
    codes = np.where(mask, arms.codes, -1)
    allc = np.bincount(codes[codes >= 0], minlength=arms.k)
    return [int(v) for v in allc], grouped_moments(mx.names, mx.x, np.where(mx.valid, codes, -1), arms.k)


def _pair(
    m: MetricDef, mx: _Matrix, n_all: list[int], mom: list[Moments], i: int, cfg: AnalysisConfig
) -> tuple[LiftResult, float]:
    """Control vs arm ``i`` of one scope: the result and the CUPED variance reduction (NaN without)."""
    mc, mt = mom[0], mom[i]
    if (mc.n == 0 or mt.n == 0) and n_all[0] > 0 and n_all[i] > 0:
        msg = f"metric columns are NaN for every user of an arm ({m.name!r})"
        return degenerate_result("all_nan", n_all[0], n_all[i], cfg.alpha, msg), math.nan
    kw: dict[str, Any] = {"alpha": cfg.alpha, "use_t": cfg.use_t, "relative_ci": cfg.relative_ci}
    res = compare(mc, mt, mx.estimand, **kw)
    vr = math.nan
    if mx.estimand.covariate_numerator is not None and res.status == "ok":
        raw = compare(mc, mt, Estimand(mx.estimand.numerator, mx.estimand.denominator), **kw)
        if raw.status == "ok" and raw.abs_se > 0:
            vr = 1 - (res.abs_se / raw.abs_se) ** 2
    return res, vr


def _quantile_rows(
    users: pd.DataFrame, m: MetricDef, arms: _Arms, scopes: list[_Scope], cfg: AnalysisConfig, table: str
) -> tuple[list[tuple[str | None, str | None, int, LiftResult, float]], int]:
    from ab_analysis.quantile import compare_quantile

    y = _column(users, m.numerator.column, table)
    check_plausible(table, m, {"y": (m.numerator.column, y)}, arms.codes >= 0)
    valid = np.isfinite(y)
    out = []
    for seg, val, mask in scopes:
        c = y[mask & valid & (arms.codes == 0)]
        for i in range(1, arms.k):
            t = y[mask & valid & (arms.codes == i)]
            rci = cast("RelativeCI", cfg.relative_ci)
            res = compare_quantile(c, t, float(m.quantile or 0.5), alpha=cfg.alpha, relative_ci=rci)
            out.append((seg, val, i, res, math.nan))
    return out, int(((arms.codes >= 0) & ~valid).sum())


def _metric_rows(
    users: pd.DataFrame, m: MetricDef, arms: _Arms, scopes: list[_Scope], cfg: AnalysisConfig, table: str
) -> tuple[list[MetricResult], list[DataNote]]:
    """One metric's rows for every arm and scope (p-values not yet adjusted) and its data notes."""
    notes: list[DataNote] = []
    cap: float | None = None
    if m.type == "quantile":
        found, n_nan = _quantile_rows(users, m, arms, scopes, cfg, table)
    else:
        mx = _metric_matrix(users, m, arms, table)
        cap = mx.cap
        found = []
        for seg, val, mask in scopes:
            n_all, mom = _scope_moments(mx, arms, mask)
            found += [(seg, val, i, *_pair(m, mx, n_all, mom, i, cfg)) for i in range(1, arms.k)]
        n_nan = int(((arms.codes >= 0) & ~mx.valid).sum())
        if cap is not None:
            notes.append(
                DataNote(
                    "capping",
                    f"{m.name}: {m.numerator.column} capped at {cap:.6g} (pooled {m.capping:g} quantile)",
                )
            )
    if n_nan:
        notes.append(
            DataNote("dropped_rows", f"{m.name}: {n_nan} users without a value (NaN) left out of this metric")
        )
    rows = [
        MetricResult(
            m.name,
            m.type,
            seg,
            val,
            res,
            math.nan,
            cap,
            m.covariate is not None,
            arms.names[i],
            m.direction,
            m.guardrail,
            True,
            RowExtras(variance_reduction=vr),
            m.min_effect,
        )
        for seg, val, i, res, vr in found
    ]
    for r in rows:
        if r.cuped and r.segment is None and r.result.status == "ok":
            notes.append(
                DataNote(
                    "cuped",
                    f"{m.name} ({r.arm}): θ = {r.result.theta:.4g}, variance reduction "
                    f"{100 * r.extras.variance_reduction:.1f} %",
                )
            )
    return rows, notes


def _srm_checks(
    arms: _Arms, seg_codes: list[_SegmentCodes], expected: Sequence[float] | None, cfg: AnalysisConfig
) -> tuple[SRMResult, list[SRMResult]]:
    kw: dict[str, Any] = {"threshold": cfg.srm_threshold, "warn_threshold": cfg.srm_warn, "arms": arms.names}
    overall = srm_check([int(v) for v in arms.counts], expected, **kw)
    per: list[SRMResult] = []
    for s, codes, uniques in seg_codes:
        ok = (codes >= 0) & (arms.codes >= 0)
        tab = np.bincount(codes[ok] * arms.k + arms.codes[ok], minlength=arms.k * len(uniques))
        for i, u in enumerate(uniques):
            c = [int(v) for v in tab[i * arms.k : (i + 1) * arms.k]]
            per.append(srm_check(c, expected, segment=s, segment_value=u, **kw))
    return overall, per


def finish_rows(
    rows: list[MetricResult],
    cfg: AnalysisConfig,
    srm: SRMResult,
    srm_segments: list[SRMResult],
    daily: Sequence[DailyLift] = (),
) -> list[MetricResult]:
    """Adjusted p-values, adjusted CIs, Bayesian / sequential / power views and the SRM trust flag.

    Public so that another front end (e.g. the SQL path) that builds :class:`MetricResult` rows from its own
    :func:`~ab_analysis.estimators.compare` calls gets the same report: pass every row of the family.
    """
    from ab_analysis.bayes import bayes_view
    from ab_analysis.power import minimum_detectable_effect
    from ab_analysis.sequential import SequentialLook, always_valid_look, default_tau
    from ab_analysis.verdict import adjusted_ci, row_alpha

    adj = adjust_pvalues([r.result.p_value for r in rows], cfg.correction)
    m = sum(1 for p in adj if not math.isnan(p))
    failed = {(s.segment, s.segment_value) for s in srm_segments if s.status == "fail"}
    # the daily looks chain into a row's mSPRT only where they measure the same thing (no capping/CUPED)
    looks = {(d.metric, d.arm): d for d in daily if not d.raw and d.seq_looks > 0}
    out = []
    for r, p_adj in zip(rows, adj, strict=True):
        x = r.result
        extras = r.extras
        if x.status == "ok":
            seq, tau, n_looks = None, math.nan, 0
            if x.abs_se > 0 and x.n_control > 0 and x.n_treatment > 0:
                d = looks.get((r.metric, r.arm)) if r.segment is None else None
                prev: tuple[float, float, float] = (1.0, -math.inf, math.inf)
                if d is not None:
                    tau, prev, n_looks = d.seq_tau, (d.seq_p, d.seq_low, d.seq_high), d.seq_looks
                else:
                    tau = default_tau(x.abs_se, x.n_control, x.n_treatment)
                p, lo, hi = always_valid_look(x.abs_lift, x.abs_se, tau, cfg.alpha, prev)
                n_looks += 1
                seq = SequentialLook(x.n_control, x.n_treatment, x.abs_lift, x.abs_se, p, lo, hi, "ok")
            sigma = x.abs_se / math.sqrt(1 / x.n_control + 1 / x.n_treatment)
            mde = (
                minimum_detectable_effect(sigma, x.n_control, x.n_treatment, cfg.alpha)
                if sigma > 0
                else math.nan
            )
            c = abs(x.control_mean)
            extras = replace(
                extras,
                adjusted=adjusted_ci(x, row_alpha(x.p_value, p_adj, cfg.alpha, m)),
                bayes=bayes_view(x, r.direction),
                sequential=seq,
                sequential_tau=tau,
                sequential_looks=n_looks,
                mde_abs=mde,
                mde_rel=mde / c if c > 0 else math.nan,
            )
        trusted = srm.status != "fail" and (r.segment, r.segment_value) not in failed
        out.append(replace(r, p_adjusted=p_adj, extras=extras, trusted=trusted))
    return out


def analyze(
    users: pd.DataFrame,
    metrics: Sequence[MetricDef] | str | Path | None = None,
    *,
    control: str = "control",
    treatment: str | Sequence[str] = "treatment",
    variant_col: str = "variant",
    segments: Sequence[str] = (),
    alpha: float = 0.05,
    correction: str = "holm",
    relative_ci: str = "log",
    use_t: bool = True,
    expected_share: Sequence[float] | None = None,
    daily: Sequence[DailyLift] | None = None,
    metadata: dict[str, Any] | None = None,
    srm_threshold: float = 0.001,
    srm_warn: float = 0.01,
    drop_unknown_variants: bool = False,
    normalize_labels: bool = False,
    user_col: str | None = "user_id",
    notes: Sequence[DataNote] = (),
    table: str = "users",
) -> Report:
    """Analyse a user-level A/B table.

    Args:
        users: one row per user: ``variant_col``, metric columns, optional covariate/segment columns.
        metrics: metric definitions (list of :class:`MetricDef`), a YAML path, or ``None`` for the paper's.
        control: control variant label.
        treatment: treatment label, or several (each compared with control).
        variant_col: column holding the variant (labels compared as strings, see
            :mod:`ab_analysis.validation`).
        segments: columns whose values each get their own analysis (e.g. ``user_type``: new/returning).
        alpha: two-sided level; unadjusted intervals have coverage ``1 - alpha``.
        correction: ``"holm"``, ``"bh"`` or ``"none"``; the family is every result row with a p-value.
        relative_ci: ``"log"`` or ``"delta"`` (see :mod:`ab_analysis.estimators`).
        use_t: Welch t (default) or normal.
        expected_share: planned shares (control, *treatments) for the SRM check; equal when ``None``.
        daily: cumulative daily lifts to attach (the event-log path computes them).
        metadata: free-form provenance copied into the report.
        srm_threshold: SRM fails below this p-value (default 0.001).
        srm_warn: SRM warns below this p-value (default 0.01; at least ``srm_threshold``).
        drop_unknown_variants: drop (and count) rows whose label is no arm instead of raising.
        normalize_labels: also strip whitespace and case-fold the labels.
        user_col: user id column checked for duplicates when present (``None``: no check).
        notes: data notes from an earlier stage (e.g. dropped events), put first.
        table: table name used in error messages.

    Returns:
        A :class:`Report` (``.to_json()``, ``.to_markdown()``, ``.to_html(path)``).

    Raises:
        InvalidArgumentError: bad alpha/correction/thresholds/arms/segments. MissingColumnError: absent
        columns. InvalidValuesError: unknown labels, duplicate ids, implausible or infinite values.
    """
    cfg = AnalysisConfig(alpha, correction, relative_ci, use_t, srm_threshold, srm_warn)
    if not isinstance(users, pd.DataFrame):
        raise InvalidArgumentError("users", type(users).__name__, "a pandas DataFrame")
    mdefs = resolve_metrics(metrics)
    treatments = [treatment] if isinstance(treatment, str | int) else list(treatment)
    if not treatments:
        raise InvalidArgumentError("treatment", treatment, "at least one treatment label")
    if variant_col not in users.columns:
        raise MissingColumnError(table, variant_col, list(map(str, users.columns)), "the variant column")
    vc = variant_codes(
        users[variant_col],
        [control, *treatments],
        table=table,
        column=variant_col,
        drop_unknown=drop_unknown_variants,
        fold=normalize_labels,
    )
    if user_col is not None and user_col in users.columns:
        check_unique_ids(users[user_col], table, user_col)
    arms = _Arms(vc.arms, vc.codes, np.bincount(vc.codes[vc.codes >= 0], minlength=len(vc.arms)))
    all_notes = list(notes)
    if vc.dropped:
        from ab_analysis.errors import format_counts

        all_notes.append(
            DataNote(
                "dropped_rows",
                f"{sum(vc.dropped.values())} rows of other variants dropped: {format_counts(vc.dropped)}",
            )
        )
    seg_codes = _segment_codes(users, segments, table)
    srm, srm_segments = _srm_checks(arms, seg_codes, expected_share, cfg)
    scopes = _scopes(len(users), seg_codes)
    rows: list[MetricResult] = []
    for m in mdefs:
        r, n = _metric_rows(users, m, arms, scopes, cfg, table)
        rows += r
        all_notes += n
    rows = finish_rows(rows, cfg, srm, srm_segments, tuple(daily or ()))
    meta = {"variant_column": variant_col, "n_rows": len(users), "segments": list(segments)}
    meta.update(metadata or {})
    report = Report(
        tuple(rows),
        srm,
        arms.names[0],
        arms.names[1],
        cfg.alpha,
        cfg.correction,
        cfg.relative_ci,
        cfg.use_t,
        tuple(daily or ()),
        meta,
        arms.names[1:],
        tuple(srm_segments),
        tuple(all_notes),
    )
    _log_srm(report)
    return report


def _log_srm(report: Report) -> None:
    # INFO, not WARNING: the report shows the gate (banner, JSON) and the CLI prints its own one line.
    gate = report.srm_gate()
    if gate["status"] == "fail":
        log.info("sample ratio mismatch (p < %g) in %s", gate["threshold"], ", ".join(gate["failed"]))
    elif gate["status"] == "warning":
        log.info("sample ratio warning (p < %g) in %s", gate["warn_threshold"], ", ".join(gate["warned"]))


def analyze_events(
    events: Any,
    assignments: pd.DataFrame,
    metrics: Sequence[MetricDef] | str | Path | None = None,
    *,
    control: str = "control",
    treatment: str | Sequence[str] = "treatment",
    experiment: str | None = None,
    cold_start_notes: Any = None,
    segments: Sequence[str] = (),
    chunk_size: int = 1_000_000,
    **kwargs: Any,
) -> Report:
    """Aggregate an event log per user (chunked, see :mod:`ab_analysis.events`), then :func:`analyze`.

    Args:
        events: DataFrame, ``.parquet``/``.csv`` path or iterable of chunks.
        assignments: user_id, variant, optional experiment/assigned_at and per-user attributes.
        metrics: as in :func:`analyze`; every column needs an ``events`` recipe.
        control: control variant.
        treatment: treatment variant(s).
        experiment: which experiment of the assignments to analyse.
        cold_start_notes: ids of cold-start notes (else events need ``is_cold_start``).
        segments: per-user attribute columns of the assignments to segment by.
        chunk_size: event rows per chunk.
        **kwargs: passed to :func:`analyze` (alpha, correction, srm_threshold, drop_unknown_variants, ...).

    Returns:
        A :class:`Report` with cumulative daily lifts (and their CIs) when events carry ``ts``.
    """
    from ab_analysis.events import aggregate_events

    mdefs = resolve_metrics(metrics)
    treatments = [treatment] if isinstance(treatment, str | int) else list(treatment)
    table = aggregate_events(
        events,
        assignments,
        mdefs,
        control=control,
        treatment=treatments,
        experiment=experiment,
        cold_start_notes=cold_start_notes,
        chunk_size=chunk_size,
        normalize_labels=bool(kwargs.get("normalize_labels", False)),
        alpha=float(kwargs.get("alpha", 0.05)),
    )
    meta = {"source": "events", "dropped_events": table.dropped_events, "experiment": experiment}
    return analyze(
        table.users,
        mdefs,
        control=control,
        treatment=treatments,
        variant_col="variant",
        segments=segments,
        daily=table.daily,
        metadata=meta,
        notes=table.notes,
        table="per-user (assignments + aggregated events)",
        **kwargs,
    )
