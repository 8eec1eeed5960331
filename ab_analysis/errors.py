"""One error hierarchy for the A/B analysis package.

Every message names the offending argument or column, echoes the bad value and says what was expected.
All classes derive from :class:`ValueError` so callers that only know the standard library still catch them.
"""

from __future__ import annotations

__all__ = [
    "ABAnalysisError",
    "InvalidArgumentError",
    "MetricConfigError",
    "MissingColumnError",
]


class ABAnalysisError(ValueError):
    """Base class of every error raised by :mod:`ab_analysis`."""


class InvalidArgumentError(ABAnalysisError):
    """An argument has a value outside its domain (e.g. ``alpha=1.5``, an unknown variant)."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        self.name = name
        self.value = value
        self.expected = expected
        super().__init__(f"invalid {name}={value!r}: expected {expected}")


class MissingColumnError(ABAnalysisError):
    """A table lacks a required column or a column has an unusable type."""

    def __init__(self, table: str, column: str, available: list[str] | None = None, detail: str = "") -> None:
        self.table = table
        self.column = column
        avail = f"; available columns: {sorted(available)!r}" if available is not None else ""
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{table} table: column {column!r} is missing or unusable{extra}{avail}")


class MetricConfigError(ABAnalysisError):
    """A metric definition (YAML or Python) is invalid."""
