"""Helpers shared by the dataset adapters: locating files, reading them with errors that name the
file and what was expected, fingerprints for ``Dataset.info``, and list-cell parsing.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from features.errors import DataSourceError

__all__ = [
    "SHA256_MAX_BYTES",
    "dedupe",
    "file_info",
    "find_file",
    "parse_list_cell",
    "read_csv",
    "require_dir",
]

log = logging.getLogger(__name__)

# Files up to this size get a sha256 in ``info`` (hashing ~50 MB takes well under a second).
SHA256_MAX_BYTES = 64 * 1024 * 1024


def require_dir(path: str | Path | None, source: str, expected: Sequence[str]) -> Path:
    """Return ``path`` as a directory, or raise naming the source and the files it should hold.

    Raises:
        DataSourceError: ``path`` is empty, missing, or not a directory.
    """
    wanted = ", ".join(expected)
    if not path:
        raise DataSourceError(f"source {source!r} needs a folder path holding {wanted}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise DataSourceError(
            f"source {source!r}: folder {str(folder)!r} does not exist; expected a folder holding {wanted}"
        )
    return folder


def find_file(folder: Path, names: Sequence[str], *, required: bool = True) -> Path | None:
    """Return the one file of ``names`` present in ``folder`` (``None`` if optional and absent).

    Raises:
        DataSourceError: none present (when ``required``), or more than one (ambiguous).
    """
    present = [folder / n for n in names if (folder / n).is_file()]
    if len(present) > 1:
        raise DataSourceError(
            f"{folder}: found {', '.join(p.name for p in present)}; expected only one of them"
        )
    if present:
        return present[0]
    if required:
        raise DataSourceError(f"{folder}: missing {' or '.join(names)}")
    return None


def read_csv(
    path: Path,
    *,
    columns: Sequence[str],
    what: str,
    header: bool = True,
    sep: str = ",",
    **kwargs: Any,
) -> pd.DataFrame:
    """Read a CSV/TSV file, raising a :class:`DataSourceError` that names the file on any failure.

    Args:
        path: the file.
        columns: required columns; with ``header=False`` they name the file's columns in order
            (extra trailing columns are an error).
        what: a short description of the expected content, used in error messages.
        header: whether the first line is a header.
        sep: field separator.
        **kwargs: passed to :func:`pandas.read_csv`.

    Raises:
        DataSourceError: missing/unreadable file, malformed rows, or missing columns.
    """
    if not path.is_file():
        raise DataSourceError(f"missing file {str(path)!r}; expected {what}")
    if not header:
        kwargs.setdefault("names", list(columns))
        kwargs.setdefault("quoting", csv.QUOTE_NONE)
        kwargs.setdefault("index_col", False)
    try:
        with warnings.catch_warnings():
            # without a header, rows longer than ``names`` would silently lose fields
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, sep=sep, header=0 if header else None, **kwargs)
    except (
        OSError,
        UnicodeDecodeError,
        pd.errors.ParserError,
        pd.errors.ParserWarning,
        pd.errors.EmptyDataError,
        ValueError,
    ) as exc:
        raise DataSourceError(f"cannot read {str(path)!r} as {what}: {exc}") from exc
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataSourceError(
            f"{str(path)!r} lacks column(s) {', '.join(missing)} "
            f"(present: {', '.join(map(str, df.columns))}); expected {what}"
        )
    return df


def file_info(path: Path) -> dict[str, Any]:
    """Path, size and (for files up to :data:`SHA256_MAX_BYTES`) sha256 of a source file."""
    size = path.stat().st_size
    out: dict[str, Any] = {"path": str(path.resolve()), "bytes": size}
    if size <= SHA256_MAX_BYTES:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        out["sha256"] = digest.hexdigest()
    return out


def dedupe(items: Iterable[str]) -> list[str]:
    """Strip items, drop empty ones and duplicates, keeping first-seen order."""
    return list(dict.fromkeys(s for s in (x.strip() for x in items) if s))


def parse_list_cell(value: Any) -> list[Any] | None:
    """Parse one CSV cell holding a list.

    Accepted forms: a JSON array (``["a","b"]``), a Python list literal (what
    ``DataFrame.to_csv`` writes for list cells: ``['a', 'b']``), or ``|``-separated text
    (``a|b``; items stripped, empty items dropped). An empty cell is ``[]``; ``None``/NaN stays
    ``None``. Lists already parsed (parquet) pass through.

    Raises:
        ValueError: the cell starts with ``[`` but is neither a JSON array nor a Python list literal.
    """
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, list):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        return []
    if text.startswith("["):  # meant as an array: malformed ones fail rather than become one item
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"{text[:60]!r} is not a JSON array") from exc
        if not isinstance(parsed, list):
            raise ValueError(f"{text[:60]!r} is not a list")
        return parsed
    return [s.strip() for s in text.split("|") if s.strip()]
