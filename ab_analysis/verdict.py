"""Verdicts and intervals consistent with the multiple-testing correction.

Adjusted intervals: a row with raw p-value ``p`` and adjusted p-value ``p_adj`` (Holm, BH or none) gets
its interval at the level ``1 - alpha_row`` with ``alpha_row = alpha * p / p_adj`` — the level at which
the row's own test decides exactly as the correction does (Holm: ``alpha / m`` for the smallest p-value,
i.e. Bonferroni, and at most ``alpha / (m - k + 1)`` at step ``k``; BH: between ``alpha * k / m`` and ``alpha``;
``none``: ``alpha``; ``alpha / m`` when ``p`` underflows to 0). Hence **the shown interval excludes 0 exactly
when the row is significant** (``p_adj < alpha``). These are per-row decision intervals, not simultaneous
ones. The absolute interval is ``diff ± q se`` with the row's own distribution (Welch t / normal); the
relative one is Fieller's interval for ``T / C`` at the same quantile, ``{rho: (T - rho C)^2 <= q^2 (V_T +
rho^2 V_C)}``, which contains ``rho = 1`` exactly when the absolute test does not reject; when it is
unbounded (C not distinguishable from 0 at that level) the absolute interval divided by C is shown.

Verdicts (``direction``: which way is good): significant and good → ``win``; significant and bad →
``loss`` (harmful); otherwise ``inconclusive``. Guardrail metrics are ``violated`` (significant and bad)
or ``ok``. Rows without inference get ``n/a``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ab_analysis.estimators import LiftResult

__all__ = ["VERDICTS", "AdjustedCI", "adjusted_ci", "row_alpha", "verdict"]

VERDICTS = ("win", "loss", "inconclusive", "ok", "violated", "n/a")
NAN = math.nan


@dataclass(frozen=True)
class AdjustedCI:
    """Interval at the row's decision level ``1 - alpha_row`` (module docstring)."""

    alpha_row: float
    abs_low: float
    abs_high: float
    rel_low: float
    rel_high: float
    rel_method: str

    @property
    def level(self) -> float:
        """Coverage level ``1 - alpha_row``."""
        return 1 - self.alpha_row


def row_alpha(p: float, p_adj: float, alpha: float, m: int) -> float:
    """``alpha * p / p_adj`` (``alpha / m`` when both are 0); NaN without a p-value."""
    if not (math.isfinite(p) and math.isfinite(p_adj)):
        return NAN
    if p_adj <= 0:
        return alpha / max(m, 1)
    return alpha * p / p_adj


def _fieller(r: LiftResult, q: float) -> tuple[float, float] | None:
    c, t, a, b = r.control_mean, r.treatment_mean, r.control_var_mean, r.treatment_var_mean
    big_a = c * c - q * q * a
    if not (big_a > 0 and math.isfinite(big_a)):
        return None
    half_b = t * c
    cc = t * t - q * q * b
    disc = half_b * half_b - big_a * cc
    if disc < 0:  # pragma: no cover - impossible when big_a > 0 and b >= 0
        return None
    root = math.sqrt(disc)
    return (half_b - root) / big_a - 1, (half_b + root) / big_a - 1


def adjusted_ci(r: LiftResult, alpha_row: float) -> AdjustedCI | None:
    """Intervals of one ``ok`` row at level ``1 - alpha_row``; ``None`` without inference."""
    if r.status != "ok" or not (0 < alpha_row < 1):
        return None
    from scipy import stats

    dist = stats.t(r.df) if math.isfinite(r.df) else stats.norm()
    q = float(dist.isf(alpha_row / 2))
    lo, hi = r.abs_lift - q * r.abs_se, r.abs_lift + q * r.abs_se
    fieller = _fieller(r, q)
    if fieller is not None:
        return AdjustedCI(alpha_row, lo, hi, fieller[0], fieller[1], "fieller")
    c = r.control_mean
    if c == 0 or not math.isfinite(c):
        return AdjustedCI(alpha_row, lo, hi, NAN, NAN, "undefined")
    rl, rh = sorted((lo / c, hi / c))
    return AdjustedCI(alpha_row, lo, hi, rl, rh, "abs/control")


def verdict(status: str, significant: bool, abs_lift: float, direction: str, guardrail: bool) -> str:
    """``win``/``loss``/``inconclusive`` (or ``ok``/``violated`` for a guardrail; ``n/a`` without inference)."""
    if status != "ok":
        return "n/a"
    good = (abs_lift > 0) == (direction == "increase")
    if guardrail:
        return "violated" if significant and not good else "ok"
    if not significant:
        return "inconclusive"
    return "win" if good else "loss"
