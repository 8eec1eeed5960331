"""Power, minimum detectable effect and sample size for a two-sided two-sample z-test.

Normal approximation (the usual planning convention): ``se = sigma * sqrt(1/n_c + 1/n_t)`` with a
common per-user standard deviation ``sigma`` (for a ratio metric: the delta-method linearization's).
"""

from __future__ import annotations

import math
from typing import Any

from ab_analysis.errors import InvalidArgumentError

__all__ = ["minimum_detectable_effect", "power", "sample_size"]


def _norm() -> Any:
    from scipy import stats  # lazy: ab_analysis imports this module eagerly (its `power` shadows the module)

    return stats.norm


def _check(alpha: float, sigma: float) -> None:
    if not 0 < alpha < 1:
        raise InvalidArgumentError("alpha", alpha, "a number strictly between 0 and 1")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise InvalidArgumentError("sigma", sigma, "a positive finite standard deviation")


def power(effect: float, sigma: float, n_control: float, n_treatment: float, alpha: float = 0.05) -> float:
    """Probability that the two-sided test rejects when the true absolute lift is ``effect``.

    Raises:
        InvalidArgumentError: non-positive sizes or sigma, alpha outside (0, 1).
    """
    _check(alpha, sigma)
    if n_control <= 0 or n_treatment <= 0:
        raise InvalidArgumentError("n_control/n_treatment", (n_control, n_treatment), "positive sizes")
    se = sigma * math.sqrt(1 / n_control + 1 / n_treatment)
    z = _norm().isf(alpha / 2)
    d = abs(effect) / se
    return float(_norm().sf(z - d) + _norm().cdf(-z - d))


def minimum_detectable_effect(
    sigma: float, n_control: float, n_treatment: float, alpha: float = 0.05, target_power: float = 0.8
) -> float:
    """Smallest absolute lift detected with probability ``target_power`` (ignoring the far tail).

    Raises:
        InvalidArgumentError: as :func:`power`, or ``target_power`` outside (0, 1).
    """
    _check(alpha, sigma)
    if not 0 < target_power < 1:
        raise InvalidArgumentError("target_power", target_power, "a number strictly between 0 and 1")
    if n_control <= 0 or n_treatment <= 0:
        raise InvalidArgumentError("n_control/n_treatment", (n_control, n_treatment), "positive sizes")
    se = sigma * math.sqrt(1 / n_control + 1 / n_treatment)
    return float((_norm().isf(alpha / 2) + _norm().ppf(target_power)) * se)


def sample_size(
    effect: float, sigma: float, alpha: float = 0.05, target_power: float = 0.8, treatment_share: float = 0.5
) -> int:
    """Total users (both arms) needed to detect ``effect`` with ``target_power``.

    Raises:
        InvalidArgumentError: zero effect, bad sigma/alpha/power, share outside (0, 1).
    """
    _check(alpha, sigma)
    if effect == 0 or not math.isfinite(effect):
        raise InvalidArgumentError("effect", effect, "a non-zero finite absolute lift")
    if not 0 < treatment_share < 1:
        raise InvalidArgumentError("treatment_share", treatment_share, "a number strictly between 0 and 1")
    if not 0 < target_power < 1:
        raise InvalidArgumentError("target_power", target_power, "a number strictly between 0 and 1")
    z = _norm().isf(alpha / 2) + _norm().ppf(target_power)
    k = 1 / (1 - treatment_share) + 1 / treatment_share
    return math.ceil((z * sigma / effect) ** 2 * k)
