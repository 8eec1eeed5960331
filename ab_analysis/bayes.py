"""Bayesian view of a comparison: chance to beat control and expected loss (risk), as gbstats reports it.

gbstats' ``EffectBayesianABTest`` with its default configuration (relative effect, improper flat prior)
has the posterior ``N(mu, sigma^2)`` of the relative lift with ``mu = (T - C) / C`` and the delta-method
variance ``sigma^2 = V_T / C^2 + T^2 V_C / C^4`` (``V_*``: the variance of each arm's estimate). Then

* chance to win ``= P(lift > 0) = Phi(mu / sigma)`` (for a ``direction: decrease`` metric ``P(lift < 0)``);
* risk (expected loss, relative) of shipping treatment ``= E[max(-lift, 0)] = sigma phi(mu/sigma) -
  mu Phi(-mu/sigma)``, of keeping control ``= E[max(lift, 0)] = mu Phi(mu/sigma) + sigma phi(mu/sigma)``
  (swapped for ``decrease`` metrics).

Computed here in closed form (gbstats is not imported at run time); a test cross-checks gbstats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ab_analysis.estimators import LiftResult

__all__ = ["BayesView", "bayes_view"]


@dataclass(frozen=True)
class BayesView:
    """Posterior summary of the relative lift (flat prior)."""

    chance_to_win: float
    risk_treatment: float
    risk_control: float
    rel_mean: float
    rel_sd: float


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def bayes_view(r: LiftResult, direction: str = "increase") -> BayesView | None:
    """The view of one ``ok`` result; ``None`` without inference or with a zero control mean."""
    c, t = r.control_mean, r.treatment_mean
    if r.status != "ok" or c == 0 or not (math.isfinite(c) and math.isfinite(t)):
        return None
    mu = (t - c) / c
    var = r.treatment_var_mean / c**2 + t**2 * r.control_var_mean / c**4
    if not (var > 0 and math.isfinite(var)):
        return None
    sd = math.sqrt(var)
    z = mu / sd
    up = _cdf(z)
    risk_ctrl = mu * up + sd * _pdf(z)
    risk_trt = sd * _pdf(z) - mu * _cdf(-z)
    if direction == "decrease":
        return BayesView(_cdf(-z), risk_ctrl, risk_trt, mu, sd)
    return BayesView(up, risk_trt, risk_ctrl, mu, sd)
