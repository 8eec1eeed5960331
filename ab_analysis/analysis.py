"""Analysis of a user-level table: metrics × (overall + segments) → :class:`~ab_analysis.report.Report`.

The user is the randomization unit: one row per user with a variant column, metric columns, optional
pre-period (CUPED) columns and optional segment columns. Rows of other variants are ignored. Rows whose
metric columns (numerator, denominator, covariates) are NaN are dropped for that metric only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ab_analysis.capping import cap_upper, pooled_cap
from ab_analysis.corrections import CORRECTIONS, adjust_pvalues
from ab_analysis.errors import InvalidArgumentError, MissingColumnError
from ab_analysis.estimators import Estimand, LiftResult, compare, degenerate_result
from ab_analysis.metrics import MetricDef, default_metrics, load_metrics
from ab_analysis.moments import Moments
from ab_analysis.report import DailyLift, MetricResult, Report
from ab_analysis.srm import srm_check

__all__ = ["AnalysisConfig", "analyze", "analyze_events", "grouped_moments", "resolve_metrics"]

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
    ) -> None:
        if not (isinstance(alpha, float | int) and 0 < alpha < 1):
            raise InvalidArgumentError("alpha", alpha, "a number strictly between 0 and 1, e.g. 0.05")
        if correction not in CORRECTIONS:
            raise InvalidArgumentError("correction", correction, f"one of {list(CORRECTIONS)!r}")
        if relative_ci not in ("log", "delta"):
            raise InvalidArgumentError("relative_ci", relative_ci, "one of ['log', 'delta']")
        self.alpha, self.correction, self.relative_ci = float(alpha), correction, relative_ci
        self.use_t, self.srm_threshold = use_t, srm_threshold


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


def _column(users: pd.DataFrame, name: str) -> npt.NDArray[np.float64]:
    if name not in users.columns:
        raise MissingColumnError("users", name, list(map(str, users.columns)))
    try:
        return pd.to_numeric(users[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        raise MissingColumnError(
            "users", name, None, f"expected numbers, got dtype {users[name].dtype}"
        ) from None


def _arm_codes(users: pd.DataFrame, variant_col: str, control: str, treatment: str) -> npt.NDArray[np.int64]:
    if variant_col not in users.columns:
        raise MissingColumnError("users", variant_col, list(map(str, users.columns)), "the variant column")
    if control == treatment:
        raise InvalidArgumentError("treatment", treatment, f"a variant different from control={control!r}")
    variants = users[variant_col]
    present = sorted(map(str, pd.unique(variants.dropna())))
    for name, value in (("control", control), ("treatment", treatment)):
        if value not in present:
            raise InvalidArgumentError(
                name, value, f"one of the variants in column {variant_col!r}: {present!r}"
            )
    arm = np.full(len(users), -1, dtype=np.int64)
    arm[(variants == control).to_numpy()] = 0
    arm[(variants == treatment).to_numpy()] = 1
    other = int((arm < 0).sum())
    if other:
        log.info("ignoring %d rows of variants other than %r/%r", other, control, treatment)
    return arm


def _metric_matrix(
    users: pd.DataFrame, m: MetricDef, arm: npt.NDArray[np.int64]
) -> tuple[list[str], npt.NDArray[np.float64], Estimand, float | None, npt.NDArray[np.bool_]]:
    cols = {"y": _column(users, m.numerator.column)}
    if m.denominator is not None:
        cols["d"] = _column(users, m.denominator.column)
    if m.covariate is not None:
        cols["x"] = _column(users, m.covariate.numerator)
        if m.covariate.denominator is not None:
            cols["xd"] = _column(users, m.covariate.denominator)
    cap: float | None = None
    if m.capping is not None:
        cap = pooled_cap(cols["y"][arm >= 0], m.capping)
        cols["y"] = cap_upper(cols["y"], cap)
    names = list(cols)
    x = np.column_stack([cols[k] for k in names])
    valid: npt.NDArray[np.bool_] = np.asarray(np.isfinite(x).all(axis=1), dtype=bool)
    est = Estimand(
        "y", "d" if "d" in cols else None, "x" if "x" in cols else None, "xd" if "xd" in cols else None
    )
    return names, np.where(valid[:, None], x, 0.0), est, cap, valid


_SegmentCodes = tuple[str, npt.NDArray[np.int64], list[str]]
_Group = tuple[str | None, str | None, int, int, list[Moments]]


def _segment_codes(users: pd.DataFrame, segments: Sequence[str]) -> list[_SegmentCodes]:
    """Per segment column: its name, each row's value code and the sorted distinct values."""
    seg_codes: list[_SegmentCodes] = []
    for s in segments:
        if s not in users.columns:
            raise MissingColumnError("users", s, list(map(str, users.columns)), "a segment column")
        codes, uniques = pd.factorize(users[s], sort=True)
        if len(uniques) > MAX_SEGMENT_VALUES:
            raise InvalidArgumentError(
                f"segments[{s!r}]",
                f"{len(uniques)} values",
                f"a column with at most {MAX_SEGMENT_VALUES} distinct values",
            )
        seg_codes.append((s, codes.astype(np.int64), [str(u) for u in uniques]))
    return seg_codes


def _groups(
    names: list[str],
    x: npt.NDArray[np.float64],
    valid: npt.NDArray[np.bool_],
    arm: npt.NDArray[np.int64],
    counts: tuple[int, int],
    seg_codes: list[_SegmentCodes],
) -> list[_Group]:
    """(segment, value, all control rows, all treatment rows, [control, treatment] moments) per group."""
    base_codes = np.where(valid, arm, -1)
    groups: list[_Group] = [(None, None, counts[0], counts[1], grouped_moments(names, x, base_codes, 2))]
    for s, codes, uniques in seg_codes:
        ok = (codes >= 0) & (arm >= 0)
        mom = grouped_moments(names, x, np.where(ok & valid, codes * 2 + arm, -1), 2 * len(uniques))
        allc = np.bincount(np.where(ok, codes * 2 + arm, 2 * len(uniques)), minlength=2 * len(uniques) + 1)
        groups += [
            (s, u, int(allc[2 * i]), int(allc[2 * i + 1]), mom[2 * i : 2 * i + 2])
            for i, u in enumerate(uniques)
        ]
    return groups


def _metric_rows(
    users: pd.DataFrame,
    m: MetricDef,
    arm: npt.NDArray[np.int64],
    counts: tuple[int, int],
    seg_codes: list[_SegmentCodes],
    cfg: AnalysisConfig,
) -> list[MetricResult]:
    """One metric's results, overall and per segment value (p-values not yet adjusted)."""
    names, x, est, cap, valid = _metric_matrix(users, m, arm)
    rows: list[MetricResult] = []
    for seg, val, n_c_all, n_t_all, (mc, mt) in _groups(names, x, valid, arm, counts, seg_codes):
        res: LiftResult
        if (mc.n == 0 or mt.n == 0) and n_c_all > 0 and n_t_all > 0:
            res = degenerate_result(
                "all_nan",
                n_c_all,
                n_t_all,
                cfg.alpha,
                f"metric columns are NaN for every user of an arm ({m.name!r})",
            )
        else:
            res = compare(mc, mt, est, alpha=cfg.alpha, use_t=cfg.use_t, relative_ci=cfg.relative_ci)  # type: ignore[arg-type]
        rows.append(MetricResult(m.name, m.type, seg, val, res, float("nan"), cap, m.covariate is not None))
    return rows


def analyze(
    users: pd.DataFrame,
    metrics: Sequence[MetricDef] | str | Path | None = None,
    *,
    control: str = "control",
    treatment: str = "treatment",
    variant_col: str = "variant",
    segments: Sequence[str] = (),
    alpha: float = 0.05,
    correction: str = "holm",
    relative_ci: str = "log",
    use_t: bool = True,
    expected_share: tuple[float, float] | None = None,
    daily: Sequence[DailyLift] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Report:
    """Analyse a user-level A/B table.

    Args:
        users: one row per user: ``variant_col``, metric columns, optional covariate/segment columns.
        metrics: metric definitions (list of :class:`MetricDef`), a YAML path, or ``None`` for the paper's.
        control: control variant name.
        treatment: treatment variant name.
        variant_col: column holding the variant.
        segments: columns whose values each get their own analysis (e.g. ``user_type``: new/returning).
        alpha: two-sided level; intervals have coverage ``1 - alpha``.
        correction: ``"holm"``, ``"bh"`` or ``"none"``; the family is every result row with a p-value.
        relative_ci: ``"log"`` or ``"delta"`` (see :mod:`ab_analysis.estimators`).
        use_t: Welch t (default) or normal.
        expected_share: planned (control, treatment) split for the SRM check; equal when ``None``.
        daily: cumulative daily lifts to attach (the event-log path computes them).
        metadata: free-form provenance copied into the report.

    Returns:
        A :class:`Report` (``.to_json()``, ``.to_markdown()``, ``.to_html(path)``).

    Raises:
        InvalidArgumentError: bad alpha/correction/variants/segments. MissingColumnError: absent columns.
    """
    cfg = AnalysisConfig(alpha, correction, relative_ci, use_t)
    if not isinstance(users, pd.DataFrame):
        raise InvalidArgumentError("users", type(users).__name__, "a pandas DataFrame")
    mdefs = resolve_metrics(metrics)
    arm = _arm_codes(users, variant_col, control, treatment)
    counts = (int((arm == 0).sum()), int((arm == 1).sum()))
    srm = srm_check(counts, expected_share, cfg.srm_threshold)
    seg_codes = _segment_codes(users, segments)
    rows = [r for m in mdefs for r in _metric_rows(users, m, arm, counts, seg_codes, cfg)]
    adj = adjust_pvalues([r.result.p_value for r in rows], cfg.correction)
    rows = [r.with_adjusted(a) for r, a in zip(rows, adj, strict=True)]
    meta = {"variant_column": variant_col, "n_rows": len(users), "segments": list(segments)}
    meta.update(metadata or {})
    return Report(
        tuple(rows),
        srm,
        control,
        treatment,
        cfg.alpha,
        cfg.correction,
        cfg.relative_ci,
        cfg.use_t,
        tuple(daily or ()),
        meta,
    )


def analyze_events(
    events: Any,
    assignments: pd.DataFrame,
    metrics: Sequence[MetricDef] | str | Path | None = None,
    *,
    control: str = "control",
    treatment: str = "treatment",
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
        treatment: treatment variant.
        experiment: which experiment of the assignments to analyse.
        cold_start_notes: ids of cold-start notes (else events need ``is_cold_start``).
        segments: per-user attribute columns of the assignments to segment by.
        chunk_size: event rows per chunk.
        **kwargs: passed to :func:`analyze` (alpha, correction, relative_ci, ...).

    Returns:
        A :class:`Report` with cumulative daily lifts when events carry ``ts``.
    """
    from ab_analysis.events import aggregate_events

    mdefs = resolve_metrics(metrics)
    table = aggregate_events(
        events,
        assignments,
        mdefs,
        control=control,
        treatment=treatment,
        experiment=experiment,
        cold_start_notes=cold_start_notes,
        chunk_size=chunk_size,
    )
    meta = {"source": "events", "dropped_events": table.dropped_events, "experiment": experiment}
    return analyze(
        table.users,
        mdefs,
        control=control,
        treatment=treatment,
        variant_col="variant",
        segments=segments,
        daily=table.daily,
        metadata=meta,
        **kwargs,
    )
