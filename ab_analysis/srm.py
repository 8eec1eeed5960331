"""Sample-ratio mismatch: a chi-square goodness-of-fit test of arm sizes against the planned split."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from ab_analysis.errors import InvalidArgumentError

__all__ = ["SRMResult", "srm_check"]


@dataclass(frozen=True)
class SRMResult:
    """Outcome of :func:`srm_check`.

    ``mismatch`` is True when ``p_value < threshold``: the assignment is suspect and lifts should not
    be trusted until it is explained.
    """

    status: str
    counts: tuple[int, ...]
    expected_share: tuple[float, ...]
    chi2: float
    p_value: float
    threshold: float
    mismatch: bool


def srm_check(
    counts: Sequence[int], expected_share: Sequence[float] | None = None, threshold: float = 0.001
) -> SRMResult:
    """Chi-square test of observed arm counts against expected shares.

    Args:
        counts: units per arm, e.g. ``(n_control, n_treatment)``.
        expected_share: planned shares per arm (normalized); equal shares when ``None``.
        threshold: p-value below which a mismatch is flagged (0.001 is customary).

    Returns:
        :class:`SRMResult`; status ``"insufficient_data"`` when no unit was counted.

    Raises:
        InvalidArgumentError: negative counts, shares of another length, non-positive shares.
    """
    c = [int(v) for v in counts]
    if len(c) < 2 or any(v < 0 for v in c):
        raise InvalidArgumentError("counts", list(counts), "at least two non-negative counts")
    share = [1.0] * len(c) if expected_share is None else [float(v) for v in expected_share]
    if len(share) != len(c) or any(not (v > 0 and math.isfinite(v)) for v in share):
        raise InvalidArgumentError("expected_share", list(share), f"{len(c)} positive numbers")
    if not 0 < threshold < 1:
        raise InvalidArgumentError("threshold", threshold, "a number strictly between 0 and 1")
    total_share = sum(share)
    share = [v / total_share for v in share]
    total = sum(c)
    if total == 0:
        return SRMResult("insufficient_data", tuple(c), tuple(share), math.nan, math.nan, threshold, False)
    res = stats.chisquare(c, [s * total for s in share])
    p = float(res.pvalue)
    return SRMResult("ok", tuple(c), tuple(share), float(res.statistic), p, threshold, p < threshold)
