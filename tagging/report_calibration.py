"""Calibration of the student's confidence: ECE and reliability bins (pure statistics).

A student tag is *correct* when its canonical text is one of the teacher's tags for the note; ECE over
:data:`ECE_BINS` equal-width confidence bins = sum over bins of (bin count / all tags) *
|bin accuracy - bin mean confidence|. The reliability diagram that plots it is
:func:`tagging.report_render.reliability_png`; the student report (:mod:`tagging.distill_report`)
computes it over its scored test notes.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from features.errors import ConfigError

__all__ = ["ECE_BINS", "Calibration", "ReliabilityBin", "calibration", "is_unit"]

ECE_BINS = 15


def is_unit(x: object) -> bool:
    """A real number in [0, 1] (numpy scalars included; NaN and bools are not)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and 0.0 <= float(x) <= 1.0


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin [lower, upper): its tag count, mean confidence and accuracy (None if empty)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error and the reliability curve; ``ece`` is None when there are no tags."""

    ece: float | None
    n_tags: int
    accuracy: float | None
    mean_confidence: float | None
    bins: tuple[ReliabilityBin, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration(
    confidences: Sequence[float], correct: Sequence[bool], *, n_bins: int = ECE_BINS
) -> Calibration:
    """ECE and reliability bins of predictions with ``confidences`` that were ``correct`` or not.

    Args:
        confidences: one confidence in [0, 1] per prediction.
        correct: whether each prediction was right.
        n_bins: equal-width bins over [0, 1]; a confidence of exactly 1 falls in the last bin.

    Raises:
        ConfigError: lengths differ, ``n_bins`` < 1, or a confidence is outside [0, 1] (or NaN).
    """
    if len(confidences) != len(correct):
        raise ConfigError(
            f"calibration: {len(confidences)} confidences but {len(correct)} correct flags; "
            "expected one flag per confidence"
        )
    if n_bins < 1:
        raise ConfigError(f"calibration: n_bins={n_bins!r}; expected an integer >= 1")
    bad = [c for c in confidences if not is_unit(c)]
    if bad:
        raise ConfigError(f"calibration: confidence {bad[0]!r} is not a number in [0, 1]")
    count, conf_sum, hit_sum = [0] * n_bins, [0.0] * n_bins, [0] * n_bins
    for c, ok in zip(confidences, correct, strict=True):
        b = min(int(c * n_bins), n_bins - 1)
        count[b] += 1
        conf_sum[b] += c
        hit_sum[b] += bool(ok)
    n = len(confidences)
    bins = tuple(
        ReliabilityBin(
            lower=round(b / n_bins, 6),
            upper=round((b + 1) / n_bins, 6),
            count=count[b],
            mean_confidence=round(conf_sum[b] / count[b], 6) if count[b] else None,
            accuracy=round(hit_sum[b] / count[b], 6) if count[b] else None,
        )
        for b in range(n_bins)
    )
    if n == 0:
        return Calibration(None, 0, None, None, bins)
    ece = sum(
        abs(hit_sum[b] / count[b] - conf_sum[b] / count[b]) * count[b] / n for b in range(n_bins) if count[b]
    )
    return Calibration(
        ece=round(ece, 6),
        n_tags=n,
        accuracy=round(sum(hit_sum) / n, 6),
        mean_confidence=round(sum(conf_sum) / n, 6),
        bins=bins,
    )
