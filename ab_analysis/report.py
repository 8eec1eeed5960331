"""Report layer: result rows, the JSON document, Markdown; HTML lives in :mod:`ab_analysis.html`.

JSON schema (``schema_version`` 1; NaN/inf are written as ``null``)::

    {
      "schema_version": 1,
      "control": str, "treatment": str, "alpha": float,
      "correction": "holm" | "bh" | "none",
      "conventions": {name: sentence, ...},          # how every number was computed
      "srm": {"status", "counts": [n_c, n_t], "expected_share", "chi2", "p_value", "threshold", "mismatch"},
      "metrics": [{
          "metric", "type": "mean" | "ratio", "segment": str | null, "segment_value": str | null,
          "status": "ok" | "empty_arm" | "insufficient_data" | "zero_variance" | "all_nan" | "zero_denominator",
          "message", "n_control", "n_treatment", "control_mean", "treatment_mean",
          "abs_lift", "abs_se", "abs_ci": [low, high], "rel_lift", "rel_ci": [low, high],
          "statistic", "df", "p_value", "p_adjusted", "significant",
          "capped_at": float | null, "cuped": bool, "theta": float}, ...],
      "daily": [{"metric", "days": [iso date], "control": [...], "treatment": [...], "rel_lift": [...]}],
      "metadata": {...}
    }
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ab_analysis.estimators import LiftResult
from ab_analysis.io import atomic_write_text
from ab_analysis.srm import SRMResult

__all__ = ["SCHEMA_VERSION", "DailyLift", "MetricResult", "Report"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class MetricResult:
    """One row of a report: a metric overall (``segment is None``) or within one segment value."""

    metric: str
    kind: str
    segment: str | None
    segment_value: str | None
    result: LiftResult
    p_adjusted: float
    capped_at: float | None
    cuped: bool

    def with_adjusted(self, p_adjusted: float) -> MetricResult:
        """Copy with the multiple-testing adjusted p-value filled in."""
        return replace(self, p_adjusted=p_adjusted)

    @property
    def significant(self) -> bool:
        """Adjusted p-value below alpha (False without inference)."""
        return self.result.status == "ok" and self.p_adjusted < self.result.alpha

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict (see the module docstring)."""
        r = self.result
        return {
            "metric": self.metric,
            "type": self.kind,
            "segment": self.segment,
            "segment_value": self.segment_value,
            "status": r.status,
            "message": r.message,
            "n_control": r.n_control,
            "n_treatment": r.n_treatment,
            "control_mean": r.control_mean,
            "treatment_mean": r.treatment_mean,
            "abs_lift": r.abs_lift,
            "abs_se": r.abs_se,
            "abs_ci": [r.abs_ci_low, r.abs_ci_high],
            "rel_lift": r.rel_lift,
            "rel_ci": [r.rel_ci_low, r.rel_ci_high],
            "statistic": r.statistic,
            "df": r.df,
            "p_value": r.p_value,
            "p_adjusted": self.p_adjusted,
            "significant": self.significant,
            "capped_at": self.capped_at,
            "cuped": self.cuped,
            "theta": r.theta,
        }


@dataclass(frozen=True)
class DailyLift:
    """Cumulative per-day point estimates of one metric (capping and CUPED not applied)."""

    metric: str
    days: tuple[str, ...]
    control: tuple[float, ...]
    treatment: tuple[float, ...]
    rel_lift: tuple[float, ...]


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def _conventions(relative_ci: str, use_t: bool, correction: str) -> dict[str, str]:
    dist = "Welch t with Welch-Satterthwaite df" if use_t else "normal (z)"
    rel = (
        "log-scale delta method: (T/C)·exp(±q·se_log) − 1, se_log² = v_T/(n_T·T²) + v_C/(n_C·C²)"
        if relative_ci == "log"
        else "linear delta method on T/C − 1"
    )
    return {
        "unit": "user (randomization unit); one row per user",
        "mean_metric": "per-user mean; sample variance with ddof=1",
        "ratio_metric": "sum(numerator)/sum(denominator) over users; per-user variance by the delta method "
        "with the numerator/denominator covariance",
        "abs_lift": f"T − C; se = sqrt(v_T/n_T + v_C/n_C); two-sided p-value and CI from the {dist}",
        "rel_lift": f"T/C − 1; CI by the {rel}",
        "cuped": "y − θ(x − pooled mean of x), θ = cov(y,x)/var(x) on both arms pooled "
        "(delta-method linearizations for ratio metrics)",
        "capping": "upper winsorization at the pooled (both arms) quantile, once per metric",
        "multiple_testing": f"{correction} over every result row with a p-value (metrics × segments)",
        "srm": "chi-square goodness of fit of arm sizes against the expected split",
        "missing": "users with NaN in a metric's columns are dropped for that metric only",
    }


@dataclass(frozen=True)
class Report:
    """Everything an A/B analysis produced; serializers are thin views over it."""

    results: tuple[MetricResult, ...]
    srm: SRMResult
    control: str
    treatment: str
    alpha: float
    correction: str
    relative_ci: str
    use_t: bool
    daily: tuple[DailyLift, ...] = ()
    metadata: dict[str, Any] | None = None

    def result(
        self, metric: str, segment: str | None = None, segment_value: str | None = None
    ) -> MetricResult:
        """The row of ``metric`` (overall by default).

        Raises:
            KeyError: naming the metric and listing those available.
        """
        for r in self.results:
            if r.metric == metric and r.segment == segment and r.segment_value == segment_value:
                return r
        raise KeyError(
            f"no result for metric={metric!r} segment={segment!r}={segment_value!r}; "
            f"metrics: {sorted({r.metric for r in self.results})!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document as a dict (NaN → None)."""
        doc = {
            "schema_version": SCHEMA_VERSION,
            "control": self.control,
            "treatment": self.treatment,
            "alpha": self.alpha,
            "correction": self.correction,
            "conventions": _conventions(self.relative_ci, self.use_t, self.correction),
            "srm": asdict(self.srm),
            "metrics": [r.to_dict() for r in self.results],
            "daily": [asdict(d) for d in self.daily],
            "metadata": dict(self.metadata or {}),
        }
        cleaned: dict[str, Any] = _clean(doc)
        return cleaned

    def to_json(self, path: str | Path | None = None, indent: int = 2) -> str:
        """JSON text; also written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    def to_markdown(self, path: str | Path | None = None) -> str:
        """Markdown summary table; also written atomically to ``path`` when given."""
        lines = [f"# A/B report: {self.treatment} vs {self.control}", ""]
        s = self.srm
        lines.append(
            f"**Sample ratio check**: counts {list(s.counts)}, p = {_fmt(s.p_value)}"
            + (" — **MISMATCH: do not trust the lifts**" if s.mismatch else " (ok)")
        )
        lines += [
            "",
            f"alpha = {self.alpha}, correction = {self.correction}, relative CI = {self.relative_ci}",
            "",
        ]
        lines.append(
            "| metric | segment | status | n C / T | control | treatment | abs lift [CI] "
            "| rel lift [CI] | p | p adj |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in self.results:
            x = r.result
            seg = "all" if r.segment is None else f"{r.segment}={r.segment_value}"
            lines.append(
                f"| {r.metric} | {seg} | {x.status} | {x.n_control} / {x.n_treatment} | {_fmt(x.control_mean)} "
                f"| {_fmt(x.treatment_mean)} | {_fmt(x.abs_lift)} [{_fmt(x.abs_ci_low)}, {_fmt(x.abs_ci_high)}] "
                f"| {_pct(x.rel_lift)} [{_pct(x.rel_ci_low)}, {_pct(x.rel_ci_high)}] | {_fmt(x.p_value)} "
                f"| {_fmt(r.p_adjusted)}{' *' if r.significant else ''} |"
            )
        lines += ["", "Conventions:", ""]
        lines += [
            f"- **{k}**: {v}" for k, v in _conventions(self.relative_ci, self.use_t, self.correction).items()
        ]
        text = "\n".join(lines) + "\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_html(self, path: str | Path | None = None) -> str:
        """Self-contained HTML (inline PNG plots); also written atomically to ``path`` when given."""
        from ab_analysis.html import render_html  # matplotlib stays unimported until a plot is wanted

        text = render_html(self)
        if path is not None:
            atomic_write_text(path, text)
        return text


def _fmt(v: float) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.4g}"


def _pct(v: float) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:+.2f}%"
