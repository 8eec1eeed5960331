"""One error hierarchy for the A/B analysis package.

Every message names the offending argument or column, echoes the bad value and says what was expected.
All classes derive from :class:`ValueError` so callers that only know the standard library still catch them.

Exit statuses of ``tagllm ab report`` (the CLI maps them once, in :mod:`ab_analysis.cli`):

* ``0``: report written (an SRM warning or failure still exits 0 unless ``--fail-on-srm``);
* ``2``: any :class:`ABAnalysisError` (bad argument, column, value or file) — a usage error, one line;
* ``3``: the reports were written but the sample-ratio check failed and ``--fail-on-srm`` was given
  (:data:`EXIT_SRM_FAILED`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "EXIT_SRM_FAILED",
    "EXIT_USAGE",
    "ABAnalysisError",
    "InputFileError",
    "InvalidArgumentError",
    "InvalidValuesError",
    "MetricConfigError",
    "MissingColumnError",
    "format_counts",
]

EXIT_USAGE = 2
EXIT_SRM_FAILED = 3


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


def format_counts(counts: Mapping[Any, int], limit: int = 8) -> str:
    """``'TEST' (12 rows), 'treatment ' (3 rows)`` — the most frequent ``limit`` values first."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    text = ", ".join(f"{k!r} ({v} row{'s' if v != 1 else ''})" for k, v in items[:limit])
    if len(items) > limit:
        text += f", … {len(items) - limit} more values"
    return text


class InvalidValuesError(ABAnalysisError):
    """A column holds values outside what the analysis accepts (labels, ids, negative counts, ±inf, ...).

    Args:
        table: ``users``, ``events`` or ``assignments``.
        column: the offending column.
        problem: what is wrong, e.g. ``"unexpected variant labels"``.
        counts: offending value -> number of rows (at most a few are echoed).
        expected: what was expected instead.
        hint: how to proceed (an opt-in flag, a normalization), optional.
    """

    def __init__(
        self,
        table: str,
        column: str,
        problem: str,
        counts: Mapping[Any, int],
        expected: str,
        hint: str = "",
    ) -> None:
        self.table = table
        self.column = column
        self.counts = dict(counts)
        total = sum(self.counts.values())
        tail = f"; {hint}" if hint else ""
        super().__init__(
            f"{table} table, column {column!r}: {problem}: {format_counts(self.counts)} "
            f"[{total} row{'s' if total != 1 else ''}]; expected {expected}{tail}"
        )


class InputFileError(ABAnalysisError):
    """An input file is empty, unreadable or not in the format its suffix promises."""

    def __init__(self, table: str, path: str, detail: str) -> None:
        self.table = table
        self.path = path
        super().__init__(f"{table} file {path!r}: {detail}")


class MetricConfigError(ABAnalysisError):
    """A metric definition (YAML or Python) is invalid."""
