"""One error hierarchy for the data, feature and serving path.

Each class knows the gRPC status code it maps to (as a name, so this module never imports grpc); the
server maps them once in an interceptor. Messages name the table/column/argument, echo the bad value
and say what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "ConfigError",
    "DataSourceError",
    "MissingDependencyError",
    "NotFoundError",
    "SchemaError",
    "TagLLMError",
]


class TagLLMError(Exception):
    """Base class of every error this project raises on purpose."""

    grpc_status: str = "INTERNAL"


class ConfigError(TagLLMError, ValueError):
    """A bad argument, option or config value."""

    grpc_status = "INVALID_ARGUMENT"


class NotFoundError(TagLLMError, LookupError):
    """A referenced thing (run directory, table, note, user) does not exist."""

    grpc_status = "NOT_FOUND"


class DataSourceError(TagLLMError):
    """A dataset source cannot be read (missing files, unreadable format)."""

    grpc_status = "FAILED_PRECONDITION"


class MissingDependencyError(TagLLMError, ImportError):
    """An optional package is not installed; the message names the extra to install."""

    grpc_status = "FAILED_PRECONDITION"

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package {package!r}: "
            f"install it with `pip install 'tagllm[{extra}]'` (or `make install`)"
        )


def _preview(values: Sequence[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(v) for v in list(values)[:limit])
    more = len(values) - limit
    return shown + (f", … (+{more} more)" if more > 0 else "")


class SchemaError(TagLLMError, ValueError):
    """A table does not match its canonical schema.

    Attributes:
        table: canonical table name (``notes``, ``interactions`` ...).
        column: offending column, or ``None`` for table-level problems (empty table).
        rows: offending row positions (0-based), possibly truncated.
        expected: what a valid value looks like.
    """

    grpc_status = "INVALID_ARGUMENT"

    def __init__(
        self,
        table: str,
        column: str | None,
        problem: str,
        *,
        expected: str,
        rows: Sequence[int] = (),
        values: Sequence[Any] = (),
    ) -> None:
        self.table = table
        self.column = column
        self.rows = list(rows)
        self.expected = expected
        where = f"{table}.{column}" if column else table
        msg = f"{where}: {problem}"
        if self.rows:
            msg += f" (rows {_preview(self.rows)})"
        if values:
            msg += f"; values: {_preview(values)}"
        msg += f"; expected {expected}"
        super().__init__(msg)
