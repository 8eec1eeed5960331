"""The simulated experiment's metrics (ab_analysis definitions) and the number formats of its outputs.

The report metrics are the paper's four (:data:`METRIC_NAMES`, ab_analysis defaults). The arm
comparisons add :data:`WARM_METRIC`: page-view CTR on the impressions that are not cold-start, the
check that exploration does not buy fresh-note exposure with the warm notes' clicks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "COMPARISON_METRICS",
    "METRIC_NAMES",
    "WARM_METRIC",
    "metric_defs",
    "metric_figures",
    "num",
    "p_text",
    "pct",
]

METRIC_NAMES = ("view_duration_per_user", "interactions_per_user", "pv_ctr", "pv_ctr_cold_start")
WARM_METRIC = "pv_ctr_warm"
COMPARISON_METRICS = (*METRIC_NAMES, WARM_METRIC)

_WARM = {
    "name": WARM_METRIC,
    "type": "ratio",
    "numerator": {"column": "warm_clicks", "events": ["click"], "cold_start": False},
    "denominator": {"column": "warm_impressions", "events": ["impression"], "cold_start": False},
}
# Pre-period CUPED covariates: the same columns over the pre-period, prefixed ``pre_``.
_COVARIATES = {
    "view_duration_per_user": {"numerator": "pre_view_duration"},
    "interactions_per_user": {"numerator": "pre_interactions"},
    "pv_ctr": {"numerator": "pre_clicks", "denominator": "pre_impressions"},
    "pv_ctr_cold_start": {"numerator": "pre_cold_start_clicks", "denominator": "pre_cold_start_impressions"},
    WARM_METRIC: {"numerator": "pre_warm_clicks", "denominator": "pre_warm_impressions"},
}


def metric_defs(cuped: bool, names: Sequence[str] = METRIC_NAMES) -> list[Any]:
    """ab_analysis :class:`~ab_analysis.metrics.MetricDef` of ``names`` (the paper's four come from the
    ab_analysis defaults), with their pre-period CUPED covariates when ``cuped``."""
    from ab_analysis import default_metrics
    from ab_analysis.metrics import parse_metrics

    known = {m.name: m.model_dump(exclude_none=True) for m in default_metrics()} | {WARM_METRIC: _WARM}
    docs = [known[n] for n in names]
    if cuped:
        docs = [d | {"covariate": _COVARIATES[d["name"]]} for d in docs]
    return parse_metrics(docs, source="simulator metrics")


def metric_figures(r: Any) -> dict[str, Any]:
    """JSON figures of one metric of an ``ab_analysis`` report (``report.result(name)``): status,
    means, relative lift with its CI, raw and adjusted p-value, significance, CUPED."""
    x = r.result
    return {
        "status": x.status,
        "control_mean": num(x.control_mean),
        "treatment_mean": num(x.treatment_mean),
        "lift": num(x.rel_lift),
        "ci": [num(x.rel_ci_low), num(x.rel_ci_high)],
        "p_value": num(x.p_value),
        "p_adjusted": num(r.p_adjusted),
        "significant": bool(r.significant),
        "cuped": bool(r.cuped),
    }


def num(v: float | None) -> float | None:
    """``v`` rounded to 6 decimals; None for None, NaN and infinities."""
    return round(float(v), 6) if v is not None and math.isfinite(v) else None


def pct(v: float | None) -> str:
    """A relative figure as ``+12.34%`` (``n/a`` for None)."""
    return "n/a" if v is None else f"{100 * v:+.2f}%"


def p_text(p: float | None) -> str:
    """``p = 0.0123``; ``p < 1e-06`` when it underflows to 0 (never print "p = 0")."""
    if p is None:
        return "p = n/a"
    return "p < 1e-06" if p < 1e-6 else f"p = {p:.3g}"
