"""A folder of canonical tables (source name ``parquet``) → validated canonical tables.

The folder holds ``notes.parquet`` or ``notes.csv`` (required) and optionally ``users``,
``interactions``, ``tags`` and ``assignments`` in either format (one format per table; both at once is
an error). Columns are those of :mod:`features.schemas`; extra columns are kept.

CSV specifics (CSV has no types):

- canonical id, text and timestamp columns are read as text, so ids keep leading zeros; timestamps
  may be ISO-8601 or epoch seconds; an empty cell is null, except in text columns (title, body),
  where it is ``""``.
- list columns (``image_captions``, ``reference_tags``) accept a JSON array (``["a","b"]``), a
  Python list literal (what ``DataFrame.to_csv`` writes: ``['a', 'b']``) or ``|``-separated text
  (``a|b``). An empty cell is ``[]`` in ``image_captions`` and null (no reference tags known) in
  ``reference_tags``.
- ``tags.tags`` is a JSON array of ``{"text", "dimension", "confidence"}`` objects.
- extra columns get pandas' type inference.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from features.datasets import Dataset
from features.datasets._common import file_info, find_file, parse_list_cell, read_csv, require_dir
from features.errors import ConfigError, DataSourceError, SchemaError
from features.schemas import SCHEMAS, TABLE_NAMES, ColumnSpec, validate_tables

__all__ = ["load", "read_table"]

log = logging.getLogger(__name__)

_FORMATS = ("parquet", "csv")
_TEXT_KINDS = ("id", "str", "text", "timestamp", "str_list", "tag_list")


def load(path: str | None = None, **options: Any) -> Dataset:
    """Load a folder of canonical tables.

    Args:
        path: folder holding notes.{parquet,csv} and optionally users, interactions, tags,
            assignments in either format.

    Returns:
        A :class:`Dataset` with every table present, validated.

    Raises:
        ConfigError: any option (this adapter takes none).
        DataSourceError: missing folder or notes file, a table in both formats, unreadable file.
        SchemaError: a table or list cell does not match its canonical schema.
    """
    if options:
        raise ConfigError(f"parquet: unknown option(s) {', '.join(options)}; this source takes no options")
    started = time.perf_counter()
    folder = require_dir(path, "parquet", [f"notes.{ext}" for ext in _FORMATS])
    raw: dict[str, pd.DataFrame] = {}
    files: dict[str, Any] = {}
    for name in TABLE_NAMES:
        file = find_file(folder, [f"{name}.{ext}" for ext in _FORMATS], required=name == "notes")
        if file is None:
            continue
        raw[name] = read_table(name, file)
        files[file.name] = file_info(file)
    tables = validate_tables(raw)
    info: dict[str, Any] = {
        "source": "parquet",
        "path": str(folder.resolve()),
        "files": files,
        "counts": {name: len(df) for name, df in tables.items()},
    }
    log.info(
        "parquet: loaded %s from %s in %.2fs",
        ", ".join(f"{n}={len(df)}" for n, df in tables.items()),
        folder,
        time.perf_counter() - started,
    )
    return Dataset(tables=tables, info=info)


def read_table(name: str, file: Path) -> pd.DataFrame:
    """Read canonical table ``name`` from a .parquet or .csv file (not yet validated).

    Raises:
        DataSourceError: the file cannot be read.
        SchemaError: a list cell of a CSV cannot be parsed.
    """
    if file.suffix == ".parquet":
        try:
            return pd.read_parquet(file)
        except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
            raise DataSourceError(f"cannot read {str(file)!r} as a parquet {name} table: {exc}") from exc
    spec = SCHEMAS[name]
    df = read_csv(
        file,
        columns=(),
        what=f"a CSV {name} table with columns {', '.join(c.name for c in spec.columns)}",
        dtype={c.name: str for c in spec.columns if c.kind in _TEXT_KINDS},
        keep_default_na=False,
        na_values=[""],
    )
    for col in spec.columns:
        if col.name not in df.columns:
            continue
        if col.kind == "text":
            df[col.name] = df[col.name].fillna("")
        elif col.kind == "str_list":
            df[col.name] = _parse_cells(name, col, df[col.name], parse_list_cell)
            if not col.nullable:
                df[col.name] = df[col.name].map(lambda v: [] if v is None else v)
        elif col.kind == "tag_list":
            df[col.name] = _parse_cells(name, col, df[col.name], _parse_tag_cell)
    return df


def _parse_tag_cell(value: Any) -> Any:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    try:
        return json.loads(value)
    except (TypeError, json.JSONDecodeError):
        return parse_list_cell(value)  # a Python literal, as DataFrame.to_csv writes it


def _parse_cells(table: str, col: ColumnSpec, s: pd.Series, parse: Any) -> pd.Series:
    out: list[Any] = []
    bad: list[int] = []
    for i, v in enumerate(s):
        try:
            out.append(parse(v))
        except ValueError:
            bad.append(i)
            out.append(None)
    if bad:
        raise SchemaError(
            table,
            col.name,
            "has cells that are not lists",
            expected='a JSON array (["a","b"]) or "|"-separated text (a|b)',
            rows=bad,
            values=s.iloc[bad[:5]].tolist(),
        )
    return pd.Series(out, index=s.index, dtype=object)
