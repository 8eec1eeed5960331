"""Winsorization of heavy-tailed per-user metrics.

Convention: the cap is the ``quantile`` of the metric over the users of *both analysed arms pooled*
(NaN ignored), computed once per metric before any segmentation, and only the upper tail is capped.
Pooling keeps the cap independent of the treatment label, so capping cannot manufacture a lift.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ab_analysis.errors import InvalidArgumentError

__all__ = ["cap_upper", "pooled_cap"]


def pooled_cap(values: npt.NDArray[np.float64], quantile: float) -> float:
    """Upper cap: the ``quantile`` of the finite values (NaN when there are none).

    Raises:
        InvalidArgumentError: ``quantile`` outside (0, 1).
    """
    if not 0 < quantile < 1:
        raise InvalidArgumentError("capping", quantile, "a quantile strictly between 0 and 1, e.g. 0.999")
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return float("nan")
    return float(np.quantile(finite, quantile))


def cap_upper(values: npt.NDArray[np.float64], cap: float) -> npt.NDArray[np.float64]:
    """Values clipped from above at ``cap`` (a new array; NaN stays NaN; a NaN cap changes nothing)."""
    if not np.isfinite(cap):
        return values.copy()
    return np.minimum(values, cap)
