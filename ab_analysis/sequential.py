"""Always-valid inference for the difference in means: the mixture SPRT (mSPRT).

Following Johari, Koomen, Pekelis & Walsh ("Always valid inference", Operations Research 2022), with a
normal mixing distribution ``N(0, tau^2)`` over the effect and the plug-in variance
``V_n = v_T/n_T + v_C/n_C`` of the estimate ``D_n`` at look ``n``:

    Lambda_n = sqrt(V_n / (V_n + tau^2)) * exp(tau^2 * D_n^2 / (2 V_n (V_n + tau^2)))

The always-valid p-value is ``p_n = min(p_{n-1}, 1 / Lambda_n)``; the confidence sequence is the
running intersection of ``D_n ± sqrt(V_n (V_n + tau^2) / tau^2 * (log((V_n + tau^2) / V_n) - 2 log alpha))``.
Stopping whenever ``p_n < alpha`` keeps the type-I error at most ``alpha`` (asymptotically, for the plug-in
variance). Ratio metrics and CUPED work too: ``D_n`` and ``V_n`` come from :func:`~ab_analysis.compare`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ab_analysis.errors import InvalidArgumentError
from ab_analysis.estimators import Estimand, compare
from ab_analysis.moments import Moments

__all__ = ["SequentialLook", "SequentialResult", "always_valid_look", "default_tau", "msprt"]


@dataclass(frozen=True)
class SequentialLook:
    """One interim look: cumulative counts, estimate, always-valid p-value and confidence sequence."""

    n_control: int
    n_treatment: int
    estimate: float
    se: float
    p_value: float
    ci_low: float
    ci_high: float
    status: str


@dataclass(frozen=True)
class SequentialResult:
    """All looks of an mSPRT; ``rejected`` is True once some look had ``p_value < alpha``."""

    tau: float
    alpha: float
    looks: tuple[SequentialLook, ...]

    @property
    def rejected(self) -> bool:
        """Whether the always-valid p-value ever fell below alpha."""
        return any(lk.p_value < self.alpha for lk in self.looks)


def default_tau(se: float, n_control: int, n_treatment: int) -> float:
    """One tenth of the per-user standard deviation implied by ``se`` (the mixing scale used by default)."""
    return 0.1 * se / math.sqrt(1 / n_control + 1 / n_treatment)


def always_valid_look(
    estimate: float,
    se: float,
    tau: float,
    alpha: float,
    prev: tuple[float, float, float] = (1.0, -math.inf, math.inf),
) -> tuple[float, float, float]:
    """``(p, ci_low, ci_high)`` after one look at ``estimate ± se``, given the previous running values.

    Used alone (one look, ``prev`` the default) it is the always-valid p-value and confidence sequence at
    the final sample: valid, and conservative compared with a run that also looked earlier.
    """
    v = se**2
    t2 = tau**2
    log_lambda = 0.5 * math.log(v / (v + t2)) + t2 * estimate**2 / (2 * v * (v + t2))
    p = min(prev[0], math.exp(-log_lambda) if log_lambda > 0 else 1.0)
    radius = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2 * math.log(alpha)))
    return p, max(prev[1], estimate - radius), min(prev[2], estimate + radius)


def msprt(
    control_looks: Sequence[Moments],
    treatment_looks: Sequence[Moments],
    estimand: Estimand,
    *,
    alpha: float = 0.05,
    tau: float | None = None,
) -> SequentialResult:
    """Run the mSPRT over cumulative looks.

    Args:
        control_looks: cumulative control statistics at each look, in time order.
        treatment_looks: the same for treatment (same length).
        estimand: metric definition (mean, ratio, optional CUPED covariate).
        alpha: level of the always-valid test and of the confidence sequence.
        tau: standard deviation of the mixing distribution, in units of the absolute lift. ``None``: one
            tenth of the per-user standard deviation estimated at the first usable look (then fixed).

    Returns:
        :class:`SequentialResult`; looks without inference keep p=1 and an infinite interval.

    Raises:
        InvalidArgumentError: empty or unequal look sequences, bad alpha or tau.
    """
    if len(control_looks) == 0 or len(control_looks) != len(treatment_looks):
        raise InvalidArgumentError(
            "control_looks/treatment_looks",
            (len(control_looks), len(treatment_looks)),
            "two non-empty sequences of equal length",
        )
    if not 0 < alpha < 1:
        raise InvalidArgumentError("alpha", alpha, "a number strictly between 0 and 1")
    if tau is not None and not (tau > 0 and math.isfinite(tau)):
        raise InvalidArgumentError("tau", tau, "a positive finite number or None")
    p_run, lo_run, hi_run = 1.0, -math.inf, math.inf
    looks: list[SequentialLook] = []
    tau_used = tau
    for c, t in zip(control_looks, treatment_looks, strict=True):
        r = compare(c, t, estimand, alpha=alpha, use_t=False)
        if r.status != "ok":
            looks.append(SequentialLook(c.n, t.n, r.abs_lift, math.nan, p_run, lo_run, hi_run, r.status))
            continue
        if tau_used is None:
            tau_used = default_tau(r.abs_se, c.n, t.n)
        p_run, lo_run, hi_run = always_valid_look(
            r.abs_lift, r.abs_se, tau_used, alpha, (p_run, lo_run, hi_run)
        )
        looks.append(SequentialLook(c.n, t.n, r.abs_lift, r.abs_se, p_run, lo_run, hi_run, "ok"))
    return SequentialResult(tau_used if tau_used is not None else math.nan, alpha, tuple(looks))
