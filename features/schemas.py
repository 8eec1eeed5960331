"""Canonical tables: their columns, and validation that names the table, column and offending rows.

Every dataset adapter produces these tables; every later stage reads them through :func:`validate`,
so a problem is reported once, at the edge, in the same words. Validation coerces lossless
representations (integer ids to strings, ISO strings or epoch seconds to UTC timestamps, numpy
arrays to lists) and rejects everything else.

Tables (see README "Canonical tables"):

- ``notes``: note_id, author_id, category, title, body, image_captions (list[str]), created_at,
  reference_tags (optional list[str], for evaluation only)
- ``users``: user_id, created_at (+ optional attribute columns)
- ``interactions``: user_id, note_id, ts, event, dwell_seconds (clicks only; null otherwise)
- ``tags``: note_id, tagger, tagger_version, tags (list of {text, dimension, confidence}), generated_at
- ``assignments``: user_id, experiment, variant, assigned_at
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.errors import SchemaError

__all__ = [
    "EVENTS",
    "SCHEMAS",
    "TABLE_NAMES",
    "ColumnSpec",
    "TableSpec",
    "check_references",
    "validate",
    "validate_tables",
]

Kind = Literal["id", "str", "text", "timestamp", "float", "int", "str_list", "tag_list"]

EVENTS: tuple[str, ...] = ("impression", "click", "like", "collect", "comment", "share")

_EXPECTED: dict[str, str] = {
    "id": "a non-empty string id (integers are accepted and converted)",
    "str": "a non-empty string",
    "text": "a string (may be empty, not null)",
    "timestamp": "a timestamp: ISO-8601 text, datetime, or epoch seconds",
    "float": "a number",
    "int": "an integer",
    "str_list": "a list of strings (may be empty)",
    "tag_list": "a list of {text: str, dimension: str, confidence: float in [0, 1]} records",
}


@dataclass(frozen=True)
class ColumnSpec:
    """One column of a canonical table.

    Args:
        name: column name.
        kind: value kind; decides coercion and the "expected" wording of errors.
        required: the column must be present.
        nullable: nulls are allowed (otherwise every row needs a value).
        choices: allowed values for a string column.
        min_value: inclusive lower bound for a numeric column.
    """

    name: str
    kind: Kind
    required: bool = True
    nullable: bool = False
    choices: tuple[str, ...] | None = None
    min_value: float | None = None


@dataclass(frozen=True)
class TableSpec:
    """A canonical table: its columns, primary key and the columns that reference other tables."""

    name: str
    columns: tuple[ColumnSpec, ...]
    key: tuple[str, ...] = ()
    references: Mapping[str, str] = field(default_factory=dict)  # column -> "table.column"
    allow_extra: bool = True

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


SCHEMAS: dict[str, TableSpec] = {
    "notes": TableSpec(
        "notes",
        (
            ColumnSpec("note_id", "id"),
            ColumnSpec("author_id", "id"),
            ColumnSpec("category", "str"),
            ColumnSpec("title", "text"),
            ColumnSpec("body", "text"),
            ColumnSpec("image_captions", "str_list"),
            ColumnSpec("created_at", "timestamp"),
            ColumnSpec("reference_tags", "str_list", required=False, nullable=True),
        ),
        key=("note_id",),
    ),
    "users": TableSpec(
        "users",
        (ColumnSpec("user_id", "id"), ColumnSpec("created_at", "timestamp")),
        key=("user_id",),
    ),
    "interactions": TableSpec(
        "interactions",
        (
            ColumnSpec("user_id", "id"),
            ColumnSpec("note_id", "id"),
            ColumnSpec("ts", "timestamp"),
            ColumnSpec("event", "str", choices=EVENTS),
            ColumnSpec("dwell_seconds", "float", required=False, nullable=True, min_value=0.0),
        ),
        references={"user_id": "users.user_id", "note_id": "notes.note_id"},
    ),
    "tags": TableSpec(
        "tags",
        (
            ColumnSpec("note_id", "id"),
            ColumnSpec("tagger", "str"),
            ColumnSpec("tagger_version", "str"),
            ColumnSpec("tags", "tag_list"),
            ColumnSpec("generated_at", "timestamp"),
        ),
        key=("note_id", "tagger"),
        references={"note_id": "notes.note_id"},
    ),
    "assignments": TableSpec(
        "assignments",
        (
            ColumnSpec("user_id", "id"),
            ColumnSpec("experiment", "str"),
            ColumnSpec("variant", "str"),
            ColumnSpec("assigned_at", "timestamp"),
        ),
        key=("user_id", "experiment"),
    ),
}

TABLE_NAMES: tuple[str, ...] = tuple(SCHEMAS)


# --------------------------------------------------------------------------- coercion per kind


def _bad_rows(mask: np.ndarray | pd.Series) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.asarray(mask, dtype=bool))]


def _fail(table: str, col: ColumnSpec, problem: str, series: pd.Series, mask: Any) -> SchemaError:
    rows = _bad_rows(mask)
    return SchemaError(
        table,
        col.name,
        problem,
        expected=_EXPECTED[col.kind],
        rows=rows,
        values=series.iloc[rows[:5]].tolist(),
    )


def _coerce_id(table: str, col: ColumnSpec, s: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(s):
        frac = s.notna() & (s != np.floor(s.fillna(0)))
        if frac.any():
            raise _fail(table, col, "has non-integer numeric ids", s, frac)
        s = s.astype("Int64")
    if pd.api.types.is_integer_dtype(s) or pd.api.types.is_bool_dtype(s):
        out = s.astype("string").astype(object)
    else:
        bad_type = ~s.map(lambda v: v is None or isinstance(v, (str, int, np.integer)) or v is pd.NA)
        if bad_type.any():
            raise _fail(table, col, "has values that are not ids", s, bad_type)
        out = s.map(lambda v: v if isinstance(v, str) or v is None or v is pd.NA else str(v))
    return out


def _coerce_str(table: str, col: ColumnSpec, s: pd.Series) -> pd.Series:
    not_str = s.notna() & ~s.map(lambda v: isinstance(v, str))
    if not_str.any():
        raise _fail(table, col, "has non-string values", s, not_str)
    return s.astype(object)


def _coerce_timestamp(table: str, col: ColumnSpec, s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return s.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_datetime64_dtype(s):
        return s.dt.tz_localize("UTC").astype("datetime64[us, UTC]")
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        out = pd.to_datetime(s, unit="s", utc=True, errors="coerce")
    else:
        text = s.map(lambda v: v if v is None or isinstance(v, str) or v is pd.NA else str(v))
        numeric = pd.to_numeric(text, errors="coerce")
        parsed = pd.to_datetime(text.where(numeric.isna()), utc=True, errors="coerce", format="ISO8601")
        from_epoch = pd.to_datetime(numeric, unit="s", utc=True, errors="coerce")
        out = parsed.fillna(from_epoch)
    unparsable = out.isna() & s.notna()
    if unparsable.any():
        raise _fail(table, col, "has unparsable timestamps", s, unparsable)
    return out.astype("datetime64[us, UTC]")


def _coerce_float(table: str, col: ColumnSpec, s: pd.Series) -> pd.Series:
    out = pd.to_numeric(s, errors="coerce")
    bad = out.isna() & s.notna()
    if bad.any():
        raise _fail(table, col, "has non-numeric values", s, bad)
    out = out.astype("float64")
    if col.min_value is not None:
        low = out < col.min_value
        if low.any():
            raise SchemaError(
                table,
                col.name,
                f"has values below {col.min_value:g}",
                expected=f"a number >= {col.min_value:g}",
                rows=_bad_rows(low),
                values=s[low].head(5).tolist(),
            )
    return out


def _coerce_int(table: str, col: ColumnSpec, s: pd.Series) -> pd.Series:
    out = pd.to_numeric(s, errors="coerce")
    bad = (out.isna() & s.notna()) | (out.notna() & (out != np.floor(out.fillna(0))))
    if bad.any():
        raise _fail(table, col, "has non-integer values", s, bad)
    return out.astype("Int64")


def _as_list(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return list(v)
    return v


def _coerce_str_list(table: str, col: ColumnSpec, s: pd.Series) -> pd.Series:
    out = s.map(_as_list)
    bad = ~out.map(lambda v: (v is None) or (isinstance(v, list) and all(isinstance(x, str) for x in v))) | (
        out.isna() if not col.nullable else False
    )
    if isinstance(bad, pd.Series) and bad.any():
        raise _fail(table, col, "has values that are not lists of strings", s, bad)
    return out


def _valid_tag(t: Any) -> bool:
    if not isinstance(t, Mapping):
        return False
    conf = t.get("confidence")
    return (
        isinstance(t.get("text"), str)
        and bool(t.get("text"))
        and isinstance(t.get("dimension"), str)
        and isinstance(conf, (int, float, np.floating))
        and 0.0 <= float(conf) <= 1.0
    )


def _coerce_tag_list(table: str, col: ColumnSpec, s: pd.Series) -> pd.Series:
    out = s.map(_as_list)
    bad = ~out.map(lambda v: isinstance(v, list) and all(_valid_tag(t) for t in v))
    if bad.any():
        raise _fail(table, col, "has malformed tag lists", s, bad)
    return out.map(
        lambda v: [
            {"text": t["text"], "dimension": t["dimension"], "confidence": float(t["confidence"])} for t in v
        ]
    )


_COERCE: dict[str, Callable[[str, ColumnSpec, pd.Series], pd.Series]] = {
    "id": _coerce_id,
    "str": _coerce_str,
    "text": _coerce_str,
    "timestamp": _coerce_timestamp,
    "float": _coerce_float,
    "int": _coerce_int,
    "str_list": _coerce_str_list,
    "tag_list": _coerce_tag_list,
}


# --------------------------------------------------------------------------- table checks


def validate(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """Validate one table against its canonical schema and return a coerced copy.

    Args:
        name: canonical table name, one of :data:`TABLE_NAMES`.
        df: the table.

    Returns:
        A new frame with canonical dtypes (ids as str, timestamps as UTC, lists as lists), the
        canonical columns first, extra columns kept after them, and a fresh RangeIndex.

    Raises:
        SchemaError: naming the table, column and offending rows: empty table, missing column,
            wrong type, null in a non-null column, value outside its choices/range, duplicate key.
        KeyError: ``name`` is not a canonical table.
    """
    if name not in SCHEMAS:
        raise KeyError(f"unknown table {name!r}; expected one of {', '.join(TABLE_NAMES)}")
    spec = SCHEMAS[name]
    if not isinstance(df, pd.DataFrame):
        raise SchemaError(name, None, f"is a {type(df).__name__}", expected="a pandas DataFrame")
    if len(df) == 0:
        raise SchemaError(name, None, "is empty", expected="at least one row")
    _check_required(name, spec, df)
    df = df.reset_index(drop=True)
    out = {col.name: _column(name, col, df[col.name]) for col in spec.columns if col.name in df.columns}
    extras = [c for c in df.columns if c not in out]
    result = pd.DataFrame(out)
    for c in extras:
        result[c] = df[c].to_numpy()
    if spec.key:
        _check_unique_key(name, spec, result)
    return result


def _check_required(name: str, spec: TableSpec, df: pd.DataFrame) -> None:
    missing = [c.name for c in spec.columns if c.required and c.name not in df.columns]
    if missing:
        raise SchemaError(
            name,
            missing[0],
            f"missing column(s) {', '.join(missing)} (present: {', '.join(map(str, df.columns))})",
            expected="columns " + ", ".join(c.name for c in spec.columns if c.required),
        )


def _column(name: str, col: ColumnSpec, s: pd.Series) -> pd.Series:
    """One column checked (nulls, empty strings, choices) and coerced to its canonical dtype."""
    nulls = s.isna() if col.kind not in ("str_list", "tag_list") else s.map(lambda v: v is None)
    if not col.nullable and nulls.any():
        raise SchemaError(
            name, col.name, "has missing values", expected=_EXPECTED[col.kind], rows=_bad_rows(nulls)
        )
    s = _COERCE[col.kind](name, col, s)
    if col.kind in ("id", "str"):
        empty = s.map(lambda v: isinstance(v, str) and not v.strip())
        if empty.any():
            raise _fail(name, col, "has empty strings", s, empty)
    if col.choices is not None:
        outside = s.notna() & ~s.isin(col.choices)
        if outside.any():
            raise SchemaError(
                name,
                col.name,
                "has values outside the allowed set",
                expected="one of " + ", ".join(col.choices),
                rows=_bad_rows(outside),
                values=sorted(set(s[outside].head(50)))[:5],
            )
    return s


def _check_unique_key(name: str, spec: TableSpec, result: pd.DataFrame) -> None:
    dup = result.duplicated(list(spec.key), keep=False)
    if dup.any():
        keys = result.loc[dup, list(spec.key)].drop_duplicates().head(5)
        raise SchemaError(
            name,
            ",".join(spec.key),
            "has duplicate keys",
            expected="unique " + ", ".join(spec.key),
            rows=_bad_rows(dup),
            values=[tuple(r) if len(r) > 1 else r[0] for r in keys.itertuples(index=False)],
        )


def check_references(tables: Mapping[str, pd.DataFrame]) -> None:
    """Check that id columns reference rows that exist in the tables they point to.

    Tables absent from ``tables`` are not checked against (a dataset may have no ``users`` table).

    Raises:
        SchemaError: naming the referencing table/column, offending rows and unknown ids.
    """
    for name, df in tables.items():
        spec = SCHEMAS.get(name)
        if spec is None:
            continue
        for column, target in spec.references.items():
            t_table, t_col = target.split(".")
            if t_table not in tables or column not in df.columns:
                continue
            known = pd.Index(tables[t_table][t_col].unique())
            unknown = ~df[column].isin(known)
            if unknown.any():
                raise SchemaError(
                    name,
                    column,
                    f"references unknown {t_table} ({int(unknown.sum())} rows)",
                    expected=f"ids present in {target}",
                    rows=_bad_rows(unknown),
                    values=list(dict.fromkeys(df.loc[unknown, column].head(50)))[:5],
                )


def validate_tables(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Validate every table in ``tables`` and the references between them."""
    out = {name: validate(name, df) for name, df in tables.items()}
    check_references(out)
    return out
