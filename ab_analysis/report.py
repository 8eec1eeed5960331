"""Report layer: result rows and the JSON document; Markdown in :mod:`ab_analysis.markdown`, HTML in
:mod:`ab_analysis.html`.

JSON schema (``schema_version`` 2; NaN/inf are written as ``null``)::

    {
      "schema_version": 2,
      "control": str, "treatment": str,                 # treatment: the first treatment arm
      "treatments": [str, ...], "arms": [control, *treatments],
      "alpha": float, "correction": "holm" | "bh" | "none",
      "ci": {"level": 1 - alpha, "adjusted": bool, "text": "95 % CI, Holm-adjusted", "method": str},
      "headline": {"text": str, "counts": {"win": int, "loss": int, "inconclusive": int, "ok": int,
                   "violated": int, "n/a": int}, "trusted": bool},
      "conventions": {name: sentence, ...},             # how every number was computed
      "srm": SRM,                                       # overall, over all arms
      "srm_segments": [SRM, ...],                       # one per value of each --segment column
      "srm_gate": {"status": "ok" | "warning" | "fail" | "insufficient_data", "threshold": float,
                   "warn_threshold": float, "failed": [scope], "warned": [scope]},
      "metrics": [{
          "metric", "arm", "type": "mean" | "ratio" | "quantile", "segment": str | null,
          "segment_value": str | null,
          "status": "ok" | "empty_arm" | "insufficient_data" | "zero_variance" | "all_nan" | "zero_denominator",
          "message", "n_control", "n_treatment", "control_mean", "treatment_mean",
          "abs_lift", "abs_se", "abs_ci": [low, high], "rel_lift", "rel_ci": [low, high],   # unadjusted
          "statistic", "df", "p_value", "p_adjusted", "significant",
          "ci_adjusted": {"level", "alpha_row", "abs": [low, high], "rel": [low, high], "rel_method"} | null,
          "direction": "increase" | "decrease", "guardrail": bool,
          "verdict": "win" | "loss" | "inconclusive" | "ok" | "violated" | "n/a",
          "trusted": bool,                              # false when an SRM check of its scope failed
          "capped_at": float | null, "cuped": bool, "theta": float,
          "variance_reduction": float | null,           # CUPED: 1 - var(adjusted) / var(raw)
          "bayes": {"chance_to_win", "risk_treatment", "risk_control", "rel_mean", "rel_sd"} | null,
          "sequential": {"p_value", "ci": [low, high], "tau", "looks"} | null,  # always-valid (mSPRT)
          "mde": {"abs", "rel", "power": 0.8, "alpha"} | null, "underpowered": bool}, ...],
      "data_notes": [{"topic": str, "text": str}, ...], # caps, CUPED, rows/events dropped and why
      "daily": [{"metric", "arm", "days": [iso date], "control": [...], "treatment": [...],
                 "rel_lift": [...], "rel_ci_low": [...], "rel_ci_high": [...], "raw": bool}],
      "metadata": {...}
    }

    SRM = {"status": "ok" | "warning" | "fail" | "insufficient_data", "counts": [int, ...],
           "arms": [str, ...], "expected_share": [...], "chi2", "p_value", "threshold",
           "warn_threshold", "mismatch": bool, "segment": str | null, "segment_value": str | null}

Changes from version 1: ``srm.status`` is now ``ok``/``warning``/``fail`` (v1: always ``ok``, with
``mismatch``); new keys ``treatments``, ``arms``, ``ci``, ``headline``, ``srm_segments``, ``srm_gate``,
``data_notes`` and per row ``arm``, ``ci_adjusted``, ``direction``, ``guardrail``, ``verdict``,
``trusted``, ``variance_reduction``, ``bayes``, ``sequential``, ``mde``, ``underpowered``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ab_analysis.estimators import LiftResult
from ab_analysis.io import atomic_write_text
from ab_analysis.srm import SRMResult, worst_status

__all__ = ["SCHEMA_VERSION", "DailyLift", "DataNote", "MetricResult", "Report", "RowExtras"]

SCHEMA_VERSION = 2
CORRECTION_NAMES = {"holm": "Holm-adjusted", "bh": "Benjamini–Hochberg-adjusted", "none": "unadjusted"}


@dataclass(frozen=True)
class RowExtras:
    """Per-row views beyond the frequentist lift: adjusted CI, Bayesian, sequential, power."""

    adjusted: Any = None  # verdict.AdjustedCI
    bayes: Any = None  # bayes.BayesView
    sequential: Any = None  # sequential.SequentialLook (the last look)
    sequential_tau: float = math.nan
    sequential_looks: int = 0
    mde_abs: float = math.nan
    mde_rel: float = math.nan
    variance_reduction: float = math.nan


@dataclass(frozen=True)
class MetricResult:
    """One row of a report: a metric for one treatment arm, overall (``segment is None``) or within one
    segment value. The fields after ``cuped`` are optional (schema 2)."""

    metric: str
    kind: str
    segment: str | None
    segment_value: str | None
    result: LiftResult
    p_adjusted: float
    capped_at: float | None
    cuped: bool
    arm: str | None = None
    direction: str = "increase"
    guardrail: bool = False
    trusted: bool = True
    extras: RowExtras = field(default_factory=RowExtras)
    min_effect: float | None = None

    def with_adjusted(self, p_adjusted: float) -> MetricResult:
        """Copy with the multiple-testing adjusted p-value filled in."""
        return replace(self, p_adjusted=p_adjusted)

    @property
    def significant(self) -> bool:
        """Adjusted p-value below alpha (False without inference)."""
        return self.result.status == "ok" and self.p_adjusted < self.result.alpha

    @property
    def verdict(self) -> str:
        """win / loss / inconclusive (guardrails: ok / violated); n/a without inference."""
        from ab_analysis.verdict import verdict

        return verdict(
            self.result.status, self.significant, self.result.abs_lift, self.direction, self.guardrail
        )

    @property
    def underpowered(self) -> bool:
        """Not significant, and the MDE (relative, 80 % power) exceeds ``min_effect`` when declared."""
        mde = self.extras.mde_rel
        if self.result.status != "ok" or self.significant or not math.isfinite(mde):
            return False
        return self.min_effect is None or mde > self.min_effect

    @property
    def scope(self) -> str:
        """``"all"`` or ``"segment=value"``."""
        return "all" if self.segment is None else f"{self.segment}={self.segment_value}"

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready dict (see the module docstring)."""
        r, x = self.result, self.extras
        adj, b, s = x.adjusted, x.bayes, x.sequential
        return {
            "metric": self.metric,
            "arm": self.arm,
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
            "ci_adjusted": None
            if adj is None
            else {
                "level": adj.level,
                "alpha_row": adj.alpha_row,
                "abs": [adj.abs_low, adj.abs_high],
                "rel": [adj.rel_low, adj.rel_high],
                "rel_method": adj.rel_method,
            },
            "direction": self.direction,
            "guardrail": self.guardrail,
            "verdict": self.verdict,
            "trusted": self.trusted,
            "capped_at": self.capped_at,
            "cuped": self.cuped,
            "theta": r.theta,
            "variance_reduction": x.variance_reduction,
            "bayes": None if b is None else asdict(b),
            "sequential": None
            if s is None
            else {
                "p_value": s.p_value,
                "ci": [s.ci_low, s.ci_high],
                "tau": x.sequential_tau,
                "looks": x.sequential_looks,
            },
            "mde": None
            if not math.isfinite(x.mde_abs)
            else {"abs": x.mde_abs, "rel": x.mde_rel, "power": 0.8, "alpha": r.alpha},
            "underpowered": self.underpowered,
        }


@dataclass(frozen=True)
class DailyLift:
    """Cumulative per-day estimates of one metric for one treatment arm, with the unadjusted CI of the
    relative lift per day. ``raw``: capping and CUPED of the metric are not applied in this series.
    ``seq_*``: the mSPRT's running always-valid p-value and confidence sequence of the absolute lift
    after the daily looks (its mixing scale ``seq_tau`` fixed at the first usable look)."""

    metric: str
    days: tuple[str, ...]
    control: tuple[float, ...]
    treatment: tuple[float, ...]
    rel_lift: tuple[float, ...]
    arm: str | None = None
    rel_ci_low: tuple[float, ...] = ()
    rel_ci_high: tuple[float, ...] = ()
    raw: bool = False
    seq_tau: float = math.nan
    seq_p: float = math.nan
    seq_low: float = math.nan
    seq_high: float = math.nan
    seq_looks: int = 0


@dataclass(frozen=True)
class DataNote:
    """One line of "what was done to the data" (topic: capping, cuped, dropped_rows, dropped_events, ...)."""

    topic: str
    text: str


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def conventions(relative_ci: str, use_t: bool, correction: str) -> dict[str, str]:
    """How every number was computed, one sentence per topic (JSON, Markdown and HTML show it)."""
    dist = "Welch t with Welch-Satterthwaite df" if use_t else "normal (z)"
    rel = (
        "log-scale delta method: (T/C)·exp(±q·se_log) − 1, se_log² = v_T/(n_T·T²) + v_C/(n_C·C²)"
        if relative_ci == "log"
        else "linear delta method on T/C − 1"
    )
    return {
        "unit": "user (randomization unit); one row per user",
        "arms": "each treatment arm is compared with control; the family for the correction is every "
        "row with a p-value (arms × metrics × segments)",
        "mean_metric": "per-user mean; sample variance with ddof=1",
        "ratio_metric": "sum(numerator)/sum(denominator) over users; per-user variance by the delta method "
        "with the numerator/denominator covariance",
        "quantile_metric": "numpy quantile per arm; se per arm from the order statistics bracketing the "
        "quantile (distribution-free, binomial ranks n·q ± 1.96·sqrt(n·q·(1−q)), se = spread / 3.92); normal test",
        "abs_lift": f"T − C; se = sqrt(v_T/n_T + v_C/n_C); two-sided p-value and CI from the {dist}",
        "rel_lift": f"T/C − 1; unadjusted CI (JSON rel_ci) by the {rel}",
        "adjusted_ci": "shown CIs are at the row's decision level 1 − α·p/p_adj, so a shown CI excludes 0 "
        "exactly when the row is significant after the correction; relative CI by Fieller's method at "
        "the same quantile (absolute CI / control mean when unbounded)",
        "verdict": "significant (p_adj < α) in the declared direction → win, against it → loss (harmful); "
        "else inconclusive; guardrails are violated (significant and harmful) or ok; greyed (untrusted) "
        "when the SRM check of the row's scope failed",
        "cuped": "y − θ(x − pooled mean of x), θ = cov(y,x)/var(x) on control and the arm pooled "
        "(delta-method linearizations for ratio metrics); variance reduction = 1 − var(adjusted)/var(raw)",
        "capping": "upper winsorization at the pooled quantile over all analysed arms, once per metric",
        "multiple_testing": f"{correction} over every result row with a p-value (arms × metrics × segments)",
        "srm": "chi-square goodness of fit of arm sizes against the expected split, overall and per segment "
        "value; fail when p < threshold, warning when p < warn threshold",
        "bayes": "gbstats-style flat-prior normal posterior of the relative lift: chance to win = "
        "P(lift in the good direction); risk = expected relative loss of shipping treatment (of keeping control)",
        "sequential": "mSPRT always-valid p-value and confidence sequence of the absolute lift (normal "
        "mixture, tau = 0.1 × per-user sd at the first look), over the daily cumulative looks when the "
        "events carry timestamps (overall rows of metrics without capping/CUPED), then the final sample",
        "mde": "minimum detectable absolute (relative: / control mean) lift at 80 % power, two-sided α, "
        "normal approximation with the observed per-arm variances; underpowered = not significant and "
        "MDE above the metric's min_effect (or any MDE when none is declared)",
        "missing": "users with NaN in a metric's columns are dropped for that metric only (counted below)",
    }


@dataclass(frozen=True)
class Report:
    """Everything an A/B analysis produced; serializers are thin views over it.

    ``treatment`` is the first treatment arm (``treatments`` lists them all; empty means
    ``(treatment,)``); ``srm`` is the overall check, ``srm_segments`` the per-segment ones.
    """

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
    treatments: tuple[str, ...] = ()
    srm_segments: tuple[SRMResult, ...] = ()
    notes: tuple[DataNote, ...] = ()

    @property
    def arms(self) -> tuple[str, ...]:
        """Control, then every treatment arm."""
        return (self.control, *(self.treatments or (self.treatment,)))

    @property
    def srm_status(self) -> str:
        """Worst status of the overall and the per-segment SRM checks."""
        return worst_status([self.srm, *self.srm_segments])

    @property
    def trusted(self) -> bool:
        """False when any SRM check failed."""
        return self.srm_status != "fail"

    @property
    def ci_text(self) -> str:
        """E.g. ``"95 % CI, Holm-adjusted (per-row decision level)"``."""
        lvl = f"{100 * (1 - self.alpha):g} % CI"
        if self.correction == "none":
            return f"{lvl}, unadjusted"
        return f"{lvl}, {CORRECTION_NAMES[self.correction]} (per-row decision level 1 − α·p/p_adj)"

    def verdict_counts(self) -> dict[str, int]:
        """Number of rows per verdict (every row, all arms and segments)."""
        from ab_analysis.verdict import VERDICTS

        counts = dict.fromkeys(VERDICTS, 0)
        for r in self.results:
            counts[r.verdict] += 1
        return counts

    def headline(self) -> str:
        """One sentence: the overall rows' verdicts (segments excluded), or why they are withheld."""
        overall = [r for r in self.results if r.segment is None]
        c = {
            k: sum(1 for r in overall if r.verdict == k)
            for k in ("win", "loss", "violated", "inconclusive", "ok", "n/a")
        }
        parts = [
            f"{c['win']} win{'s' if c['win'] != 1 else ''}",
            f"{c['loss']} loss{'es' if c['loss'] != 1 else ''} (harmful)",
            f"{c['violated']} guardrail{'s' if c['violated'] != 1 else ''} violated",
            f"{c['inconclusive']} inconclusive",
        ]
        if c["ok"]:
            parts.append(f"{c['ok']} guardrail{'s' if c['ok'] != 1 else ''} ok")
        if c["n/a"]:
            parts.append(f"{c['n/a']} without inference")
        text = ", ".join(parts) + f" ({self.ci_text.split(' (')[0]}, α = {self.alpha:g})"
        if self.srm_status == "fail":
            return "SAMPLE RATIO MISMATCH — verdicts withheld: " + text
        return text

    def srm_gate(self) -> dict[str, Any]:
        """Gate summary: worst status, thresholds, failed and warned scopes."""
        checks = [self.srm, *self.srm_segments]
        return {
            "status": self.srm_status,
            "threshold": self.srm.threshold,
            "warn_threshold": self.srm.warn_threshold,
            "failed": [s.label for s in checks if s.status == "fail"],
            "warned": [s.label for s in checks if s.status == "warning"],
        }

    def result(
        self,
        metric: str,
        segment: str | None = None,
        segment_value: str | None = None,
        arm: str | None = None,
    ) -> MetricResult:
        """The row of ``metric`` (overall and first treatment arm by default).

        Raises:
            KeyError: naming the metric and listing those available.
        """
        want = arm if arm is not None else self.treatment
        for r in self.results:
            if (
                r.metric == metric
                and r.segment == segment
                and r.segment_value == segment_value
                and (r.arm is None or r.arm == want)
            ):
                return r
        raise KeyError(
            f"no result for metric={metric!r} segment={segment!r}={segment_value!r} arm={want!r}; "
            f"metrics: {sorted({r.metric for r in self.results})!r}, arms: {list(self.arms)!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON document as a dict (NaN → None)."""
        doc = {
            "schema_version": SCHEMA_VERSION,
            "control": self.control,
            "treatment": self.treatment,
            "treatments": list(self.arms[1:]),
            "arms": list(self.arms),
            "alpha": self.alpha,
            "correction": self.correction,
            "ci": {
                "level": 1 - self.alpha,
                "adjusted": self.correction != "none",
                "text": self.ci_text,
                "method": conventions(self.relative_ci, self.use_t, self.correction)["adjusted_ci"],
            },
            "headline": {"text": self.headline(), "counts": self.verdict_counts(), "trusted": self.trusted},
            "conventions": conventions(self.relative_ci, self.use_t, self.correction),
            "srm": asdict(self.srm),
            "srm_segments": [asdict(s) for s in self.srm_segments],
            "srm_gate": self.srm_gate(),
            "metrics": [r.to_dict() for r in self.results],
            "data_notes": [asdict(n) for n in self.notes],
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
        """Markdown report; also written atomically to ``path`` when given."""
        from ab_analysis.markdown import render_markdown

        text = render_markdown(self)
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


def fmt(v: float | None) -> str:
    """A number with 4 significant digits; an em dash for None/NaN/inf."""
    return "—" if v is None or not math.isfinite(v) else f"{v:.4g}"


def pct(v: float | None) -> str:
    """A relative figure as ``+1.23%``; an em dash for None/NaN/inf."""
    return "—" if v is None or not math.isfinite(v) else f"{100 * v:+.2f}%"
