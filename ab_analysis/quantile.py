"""Quantile metrics (e.g. the median view duration per user): a two-sample test on one quantile.

CI method (order statistics, resampling-free): in each arm of ``n`` users the ``q``-quantile's
distribution-free confidence bounds are the order statistics of ranks
``floor(n q - z sqrt(n q (1 - q)))`` and ``ceil(n q + z sqrt(n q (1 - q)))`` (1-based, clipped to
``[1, n]``; the binomial normal approximation with ``z = z_{0.975}``), and the arm's standard error is their
distance divided by ``2 z`` (the Price–Bonett / order-statistic estimate of the quantile's sampling
spread). The two arms are independent, so the difference ``Q_T - Q_C`` has
``se = sqrt(se_C^2 + se_T^2)``; the test and the absolute interval use the normal distribution, the
relative interval the same log or delta method as the mean metrics. The point estimates are
``numpy.quantile`` (linear interpolation). Coverage is checked by simulation in the tests.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ab_analysis.estimators import LiftResult, RelativeCI, degenerate_result

__all__ = ["compare_quantile", "quantile_se"]

_Z = 1.959963984540054  # z_{0.975}: fixed, the spread estimate does not depend on the report's alpha


def quantile_se(x: npt.NDArray[np.float64], q: float) -> tuple[float, float]:
    """``(quantile, standard error)`` of one arm's sorted-or-not finite values (module docstring)."""
    v = np.sort(np.asarray(x, dtype=np.float64))
    n = v.size
    est = float(np.quantile(v, q))
    half = _Z * math.sqrt(n * q * (1 - q))
    lo = min(max(math.floor(n * q - half), 1), n)
    hi = min(max(math.ceil(n * q + half), 1), n)
    return est, float(v[hi - 1] - v[lo - 1]) / (2 * _Z)


def compare_quantile(
    control: npt.NDArray[np.float64],
    treatment: npt.NDArray[np.float64],
    q: float,
    *,
    alpha: float = 0.05,
    relative_ci: RelativeCI = "log",
) -> LiftResult:
    """Compare the ``q``-quantile of two arms (finite values only; NaN must be dropped before).

    Returns:
        A :class:`~ab_analysis.estimators.LiftResult` (``df`` is inf: normal distribution); status
        ``insufficient_data`` under 2 users in an arm, ``zero_variance`` when both spreads are 0.
    """
    from scipy import stats

    from ab_analysis.estimators import _relative_ci

    nc, nt = int(control.size), int(treatment.size)
    if nc == 0 or nt == 0:
        return degenerate_result(
            "empty_arm", nc, nt, alpha, f"an arm has no units (control={nc}, treatment={nt})"
        )
    if nc < 2 or nt < 2:
        return degenerate_result("insufficient_data", nc, nt, alpha, "each arm needs at least 2 units")
    qc, sc = quantile_se(control, q)
    qt, st = quantile_se(treatment, q)
    se = math.sqrt(sc**2 + st**2)
    if se == 0 or not math.isfinite(se):
        return degenerate_result(
            "zero_variance", nc, nt, alpha, "the quantile's order-statistic spread is 0 in both arms", qc, qt
        )
    diff = qt - qc
    z = float(stats.norm.isf(alpha / 2))
    stat = diff / se
    p = float(min(1.0, 2 * stats.norm.sf(abs(stat))))
    rel = qt / qc - 1 if qc != 0 else math.nan
    rlo, rhi, msg = _relative_ci(qc, sc**2 * nc, nc, qt, st**2 * nt, nt, alpha, False, relative_ci, z)
    return LiftResult(
        "ok", nc, nt, qc, qt, diff, se, diff - z * se, diff + z * se, rel, rlo, rhi, stat, math.inf, p,
        alpha, 0.0, msg, sc**2, st**2,
    )  # fmt: skip
