"""Sample-ratio mismatch: a chi-square goodness-of-fit test of arm sizes against the planned split.

The check is a gate with two thresholds: ``p < threshold`` (default 0.001) is a **fail** (the assignment
is broken: do not read the lifts), ``threshold <= p < warn_threshold`` (default 0.01) a **warning**
(look at the assignment before trusting the lifts), otherwise **ok**.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ab_analysis.errors import InvalidArgumentError

__all__ = ["SRM_STATUSES", "SRMResult", "srm_check", "worst_status"]

#: Gate statuses from best to worst ("insufficient_data": nobody counted, nothing to test).
SRM_STATUSES = ("ok", "insufficient_data", "warning", "fail")


@dataclass(frozen=True)
class SRMResult:
    """Outcome of :func:`srm_check`.

    ``status`` is ``"ok"``, ``"warning"``, ``"fail"`` or ``"insufficient_data"``; ``mismatch`` is True
    exactly when ``status == "fail"`` (``p_value < threshold``). ``segment``/``segment_value`` are set for
    a per-segment check and ``arms`` names the counts when known.
    """

    status: str
    counts: tuple[int, ...]
    expected_share: tuple[float, ...]
    chi2: float
    p_value: float
    threshold: float
    mismatch: bool
    warn_threshold: float = 0.01
    arms: tuple[str, ...] = ()
    segment: str | None = None
    segment_value: str | None = None

    @property
    def label(self) -> str:
        """``"overall"`` or ``"segment=value"``."""
        return "overall" if self.segment is None else f"{self.segment}={self.segment_value}"


def worst_status(results: Sequence[SRMResult]) -> str:
    """The worst gate status of several checks (``"ok"`` for none)."""
    return max((r.status for r in results), key=SRM_STATUSES.index, default="ok")


def srm_check(
    counts: Sequence[int],
    expected_share: Sequence[float] | None = None,
    threshold: float = 0.001,
    warn_threshold: float | None = None,
    *,
    arms: Sequence[str] = (),
    segment: str | None = None,
    segment_value: str | None = None,
) -> SRMResult:
    """Chi-square test of observed arm counts against expected shares.

    Args:
        counts: units per arm, e.g. ``(n_control, n_treatment)`` (two or more arms).
        expected_share: planned shares per arm (normalized); equal shares when ``None``.
        threshold: p-value below which the check fails (0.001 is customary).
        warn_threshold: p-value below which (and at or above ``threshold``) it warns; ``None`` →
            ``max(0.01, threshold)``.
        arms: arm names of ``counts`` (for the report).
        segment: segment column of a per-segment check.
        segment_value: its value.

    Returns:
        :class:`SRMResult`; status ``"insufficient_data"`` when no unit was counted.

    Raises:
        InvalidArgumentError: negative counts, shares of another length, non-positive shares,
            thresholds outside (0, 1) or ``warn_threshold < threshold``.
    """
    from scipy import stats  # lazy: the CLI's --help must not pay for scipy

    c = [int(v) for v in counts]
    if len(c) < 2 or any(v < 0 for v in c):
        raise InvalidArgumentError("counts", list(counts), "at least two non-negative counts")
    share = [1.0] * len(c) if expected_share is None else [float(v) for v in expected_share]
    if len(share) != len(c) or any(not (v > 0 and math.isfinite(v)) for v in share):
        raise InvalidArgumentError("expected_share", list(share), f"{len(c)} positive numbers")
    if not 0 < threshold < 1:
        raise InvalidArgumentError("srm_threshold", threshold, "a number strictly between 0 and 1")
    warn = max(0.01, threshold) if warn_threshold is None else warn_threshold
    if not (0 < warn < 1 and warn >= threshold):
        raise InvalidArgumentError("srm_warn", warn, f"a number in [srm_threshold={threshold}, 1), e.g. 0.01")
    total_share = sum(share)
    share = [v / total_share for v in share]
    total = sum(c)
    names = tuple(arms)
    if total == 0:
        return SRMResult(
            "insufficient_data", tuple(c), tuple(share), math.nan, math.nan, threshold, False, warn, names,
            segment, segment_value,
        )  # fmt: skip
    res = stats.chisquare(c, [s * total for s in share])
    p = float(res.pvalue)
    status = "fail" if p < threshold else ("warning" if p < warn else "ok")
    return SRMResult(
        status, tuple(c), tuple(share), float(res.statistic), p, threshold, status == "fail", warn, names,
        segment, segment_value,
    )  # fmt: skip
