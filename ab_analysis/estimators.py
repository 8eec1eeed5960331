"""Two-arm lift estimators over :class:`~ab_analysis.moments.Moments` (pure functions).

Conventions (the same as tea-tasting's defaults, which the tests cross-check):

* **Mean metric** ``E[y]`` per user; **ratio metric** ``sum(num) / sum(den)`` over users (the randomization
  unit), whose per-user variance comes from the delta method with the numerator/denominator covariance.
* **Absolute lift** ``T - C``; standard error ``sqrt(v_T/n_T + v_C/n_C)``; Welch's t distribution with
  Welch–Satterthwaite degrees of freedom (``use_t=False``: the normal distribution); two-sided p-value.
* **Relative lift** ``T / C - 1``. ``relative_ci="log"`` (default): delta method on ``log T - log C``,
  ``CI = (T/C) * exp(±q * se_log) - 1`` (asymmetric, never below -100%); ``relative_ci="delta"``: linear
  delta method ``se = sqrt(v_T/(n_T C^2) + T^2 v_C/(n_C C^4))``, ``CI = T/C - 1 ± q * se``.
* **CUPED**: ``y - theta * (x - mean_pooled(x))`` with ``theta = cov(y, x) / var(x)`` from both arms
  pooled; for ratio metrics ``y`` and ``x`` are the delta-method linearizations of the ratios.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from ab_analysis.errors import InvalidArgumentError
from ab_analysis.moments import Moments

__all__ = [
    "STATUSES",
    "Estimand",
    "LiftResult",
    "compare",
    "degenerate_result",
]

#: Every status a result can carry; only "ok" has p-values and intervals.
STATUSES = ("ok", "empty_arm", "insufficient_data", "zero_variance", "all_nan", "zero_denominator")

RelativeCI = Literal["log", "delta"]
NAN = float("nan")


@dataclass(frozen=True)
class Estimand:
    """What to estimate from the variables of a :class:`Moments`.

    Args:
        numerator: variable whose mean (or sum, for a ratio) is the metric.
        denominator: for a ratio metric ``sum(numerator) / sum(denominator)``; ``None`` for a mean.
        covariate_numerator: CUPED pre-period covariate (for a ratio metric: its numerator).
        covariate_denominator: for a ratio covariate, its denominator; ``None`` for a plain covariate.
    """

    numerator: str
    denominator: str | None = None
    covariate_numerator: str | None = None
    covariate_denominator: str | None = None

    @property
    def kind(self) -> str:
        """``"mean"`` or ``"ratio"``."""
        return "mean" if self.denominator is None else "ratio"


@dataclass(frozen=True)
class LiftResult:
    """Comparison of treatment against control for one metric.

    Only ``status == "ok"`` results carry standard errors, intervals and p-values; the others keep the
    counts and whatever means could be computed, with NaN elsewhere and a ``message`` saying why.
    ``control_var_mean``/``treatment_var_mean`` are the variances of each arm's (CUPED-adjusted) metric
    estimate (``v / n``); the adjusted intervals, the Bayesian view and the MDE are built from them.
    """

    status: str
    n_control: int
    n_treatment: int
    control_mean: float
    treatment_mean: float
    abs_lift: float
    abs_se: float
    abs_ci_low: float
    abs_ci_high: float
    rel_lift: float
    rel_ci_low: float
    rel_ci_high: float
    statistic: float
    df: float
    p_value: float
    alpha: float
    theta: float = 0.0
    message: str = ""
    control_var_mean: float = NAN
    treatment_var_mean: float = NAN


def degenerate_result(
    status: str,
    n_control: int,
    n_treatment: int,
    alpha: float,
    message: str,
    control_mean: float = NAN,
    treatment_mean: float = NAN,
) -> LiftResult:
    """A result without inference, for data that cannot support it (status other than "ok")."""
    if status not in STATUSES or status == "ok":
        raise InvalidArgumentError("status", status, f"one of {list(STATUSES[1:])!r}")
    diff = treatment_mean - control_mean
    rel = treatment_mean / control_mean - 1 if control_mean not in (0.0,) else NAN
    return LiftResult(
        status,
        n_control,
        n_treatment,
        control_mean,
        treatment_mean,
        diff,
        NAN,
        NAN,
        NAN,
        rel,
        NAN,
        NAN,
        NAN,
        NAN,
        NAN,
        alpha,
        0.0,
        message,
    )


def _ratio_and_grad(
    mean: npt.NDArray[np.float64], num: int, den: int | None
) -> tuple[float, npt.NDArray[np.float64]]:
    g = np.zeros(mean.shape[0])
    if den is None:
        g[num] = 1.0
        return float(mean[num]), g
    r = float(mean[num] / mean[den])
    g[num] = 1.0 / mean[den]
    g[den] = -r / mean[den]
    return r, g


def _welch_df(vc: float, nc: int, vt: float, nt: float) -> float:
    with np.errstate(all="ignore"):
        a, b = np.float64(vc) / nc, np.float64(vt) / nt
        denom = a * a / (nc - 1) + b * b / (nt - 1)
        df = (a + b) * (a + b) / denom
    return float(df) if np.isfinite(df) and denom > 0 else math.inf


def _relative_ci(
    rc: float,
    vc: float,
    nc: int,
    rt: float,
    vt: float,
    nt: int,
    alpha: float,
    use_t: bool,
    method: str,
    q: float,
) -> tuple[float, float, str]:
    """Relative-lift interval (see the module docstring); NaN with a message when undefined."""
    if rc == 0:
        return NAN, NAN, "control mean is 0: relative lift undefined"
    rc, rt = np.float64(rc), np.float64(rt)  # overflow gives inf, not an error
    with np.errstate(all="ignore"):
        if method == "log":
            if not (rc > 0 and rt > 0):
                return NAN, NAN, "log relative CI needs positive means; use relative_ci='delta'"
            lvc, lvt = np.float64(vc) / rc**2, np.float64(vt) / rt**2
            se_log = np.sqrt(lvc / nc + lvt / nt)
            if not np.isfinite(se_log):
                return NAN, NAN, "relative CI overflows (a mean is too close to 0)"
            ldf = _welch_df(float(lvc), nc, float(lvt), nt) if use_t else math.inf
            ldist = stats.t(ldf) if use_t and math.isfinite(ldf) else stats.norm()
            half = np.exp(float(ldist.ppf(1 - alpha / 2)) * se_log)
            ratio = np.float64(rt) / rc
            return float(ratio / half - 1), float(ratio * half - 1), ""
        rel = np.float64(rt) / rc - 1
        se_rel = np.sqrt(np.float64(vt) / nt / rc**2 + np.float64(rt) ** 2 * vc / nc / np.float64(rc) ** 4)
        if not np.isfinite(se_rel):
            return NAN, NAN, "relative CI overflows (a mean is too close to 0)"
        return float(rel - q * se_rel), float(rel + q * se_rel), ""


def _check_common(alpha: float, relative_ci: str) -> None:
    if not (isinstance(alpha, float | int) and 0.0 < alpha < 1.0):
        raise InvalidArgumentError("alpha", alpha, "a number strictly between 0 and 1, e.g. 0.05")
    if relative_ci not in ("log", "delta"):
        raise InvalidArgumentError("relative_ci", relative_ci, "one of ['log', 'delta']")


@dataclass(frozen=True)
class _Linearized:
    """Per-arm metric value and its gradient over the :class:`Moments` variables (after CUPED)."""

    rc: float
    gc: npt.NDArray[np.float64]
    rt: float
    gt: npt.NDArray[np.float64]
    theta: float = 0.0


def _indices(
    control: Moments, treatment: Moments, estimand: Estimand
) -> tuple[int, int | None, int | None, int | None]:
    """Positions of the estimand's variables; raises on mismatched arms or unknown names."""
    if control.names != treatment.names:
        raise InvalidArgumentError(
            "treatment.names", treatment.names, f"the control's names {control.names!r}"
        )
    idx = [
        None if v is None else control.index(v)
        for v in (
            estimand.numerator,
            estimand.denominator,
            estimand.covariate_numerator,
            estimand.covariate_denominator,
        )
    ]
    num, den, xnum, xden = idx
    if num is None:  # pragma: no cover - dataclass requires it
        raise InvalidArgumentError("estimand.numerator", None, "a variable name")
    return num, den, xnum, xden


def _cuped(
    control: Moments,
    treatment: Moments,
    estimand: Estimand,
    lin: _Linearized,
    idx: tuple[int, int | None, int, int | None],
) -> _Linearized | str:
    """CUPED adjustment of both arms with a pooled theta; a message when a covariate denominator is 0."""
    num, den, xnum, xden = idx
    mc, mt = control.mean(), treatment.mean()
    pooled = control + treatment
    mp, sp = pooled.mean(), pooled.cov()
    if xden is not None and mp[xden] == 0:
        return f"the covariate denominator {estimand.covariate_denominator!r} sums to 0"
    _, gy = _ratio_and_grad(mp, num, den)
    xp, gx = _ratio_and_grad(mp, xnum, xden)
    var_x = float(gx @ sp @ gx)
    theta = float(gy @ sp @ gx) / var_x if var_x > 0 else 0.0
    if (xden is not None) and (mc[xden] == 0 or mt[xden] == 0):
        return f"the covariate denominator {estimand.covariate_denominator!r} is 0 in an arm"
    xc, gxc = _ratio_and_grad(mc, xnum, xden)
    xt, gxt = _ratio_and_grad(mt, xnum, xden)
    return _Linearized(
        lin.rc - theta * (xc - xp),
        lin.gc - theta * gxc,
        lin.rt - theta * (xt - xp),
        lin.gt - theta * gxt,
        theta,
    )


def _test(
    diff: float, se: float, vc: float, nc: int, vt: float, nt: int, alpha: float, use_t: bool
) -> tuple[float, float, float, float]:
    """Welch (or normal) test of ``diff / se``: ``(df, quantile, statistic, two-sided p-value)``."""
    df = _welch_df(vc, nc, vt, nt) if use_t else math.inf
    dist = stats.t(df) if use_t and math.isfinite(df) else stats.norm()
    q = float(dist.ppf(1 - alpha / 2))
    stat = diff / se
    p = float(min(1.0, 2 * dist.sf(abs(stat))))
    return df, q, stat, p


def compare(
    control: Moments,
    treatment: Moments,
    estimand: Estimand,
    *,
    alpha: float = 0.05,
    use_t: bool = True,
    relative_ci: RelativeCI = "log",
) -> LiftResult:
    """Compare two arms (Welch t / delta method / optional CUPED); see the module docstring.

    Args:
        control: sufficient statistics of the control arm.
        treatment: sufficient statistics of the treatment arm (same variable names).
        estimand: which variables form the metric and the covariate.
        alpha: two-sided significance level; intervals have coverage ``1 - alpha``.
        use_t: Student/Welch t (default) or the normal distribution.
        relative_ci: ``"log"`` or ``"delta"`` interval for the relative lift.

    Returns:
        A :class:`LiftResult`; degenerate data gives a non-"ok" status instead of an exception.

    Raises:
        InvalidArgumentError: bad ``alpha``/``relative_ci``, mismatched names or unknown variables.
    """
    _check_common(alpha, relative_ci)
    num, den, xnum, xden = _indices(control, treatment, estimand)
    nc, nt = control.n, treatment.n
    if nc == 0 or nt == 0:
        return degenerate_result(
            "empty_arm", nc, nt, alpha, f"an arm has no units (control={nc}, treatment={nt})"
        )
    mc, mt = control.mean(), treatment.mean()
    if den is not None and (mc[den] == 0 or mt[den] == 0):
        return degenerate_result(
            "zero_denominator", nc, nt, alpha, f"the denominator {estimand.denominator!r} sums to 0 in an arm"
        )
    rc, gc = _ratio_and_grad(mc, num, den)
    rt, gt = _ratio_and_grad(mt, num, den)
    if nc < 2 or nt < 2:
        return degenerate_result(
            "insufficient_data", nc, nt, alpha, "each arm needs at least 2 units for a variance", rc, rt
        )
    lin = _Linearized(rc, gc, rt, gt)
    if xnum is not None:
        adjusted = _cuped(control, treatment, estimand, lin, (num, den, xnum, xden))
        if isinstance(adjusted, str):
            return degenerate_result("zero_denominator", nc, nt, alpha, adjusted)
        lin = adjusted
    return _infer(control, treatment, lin, alpha, use_t, relative_ci)


def _infer(
    control: Moments,
    treatment: Moments,
    lin: _Linearized,
    alpha: float,
    use_t: bool,
    relative_ci: RelativeCI,
) -> LiftResult:
    """Absolute and relative lift with intervals and p-value from the linearized arms."""
    nc, nt = control.n, treatment.n
    rc, rt = lin.rc, lin.rt
    sc, st = control.cov(), treatment.cov()
    vc, vt = float(lin.gc @ sc @ lin.gc), float(lin.gt @ st @ lin.gt)
    diff = rt - rc
    se = math.sqrt(max(vc, 0.0) / nc + max(vt, 0.0) / nt)
    if not math.isfinite(se) or se == 0.0:
        return degenerate_result(
            "zero_variance", nc, nt, alpha, "both arms have zero variance: no test is possible", rc, rt
        )
    df, q, stat, p = _test(diff, se, vc, nc, vt, nt, alpha, use_t)
    rel = rt / rc - 1 if rc != 0 else NAN
    rlo, rhi, message = _relative_ci(rc, vc, nc, rt, vt, nt, alpha, use_t, relative_ci, q)
    return LiftResult(
        "ok",
        nc,
        nt,
        rc,
        rt,
        diff,
        se,
        diff - q * se,
        diff + q * se,
        rel,
        rlo,
        rhi,
        stat,
        df,
        p,
        alpha,
        lin.theta,
        message,
        max(vc, 0.0) / nc,
        max(vt, 0.0) / nt,
    )
