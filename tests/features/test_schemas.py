"""Validation names the table, column and rows for every bad-input case."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.errors import SchemaError
from features.schemas import check_references, validate, validate_tables


def notes(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "note_id": [f"n{i}" for i in range(n)],
            "author_id": ["a1"] * n,
            "category": ["sneakers"] * n,
            "title": ["t"] * n,
            "body": ["b"] * n,
            "image_captions": [["a photo"]] * n,
            "created_at": ["2026-01-01T00:00:00Z"] * n,
        }
    )


def users() -> pd.DataFrame:
    return pd.DataFrame({"user_id": ["u1", "u2"], "created_at": [1.7e9, 1.7e9]})


def interactions() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "note_id": ["n0", "n0", "n1"],
            "ts": pd.to_datetime(["2026-01-02", "2026-01-02", "2026-01-03"], utc=True),
            "event": ["impression", "click", "impression"],
            "dwell_seconds": [np.nan, 12.5, np.nan],
        }
    )


def test_valid_tables_are_coerced():
    out = validate_tables({"notes": notes(), "users": users(), "interactions": interactions()})
    assert str(out["notes"]["created_at"].dtype) == "datetime64[us, UTC]"
    assert str(out["users"]["created_at"].dtype) == "datetime64[us, UTC]"
    assert out["notes"]["image_captions"].iloc[0] == ["a photo"]


def test_integer_ids_become_strings():
    df = users().assign(user_id=[1, 2])
    assert validate("users", df)["user_id"].tolist() == ["1", "2"]


def test_missing_column_names_it():
    with pytest.raises(SchemaError, match=r"notes\.body: missing column") as exc:
        validate("notes", notes().drop(columns=["body"]))
    assert exc.value.column == "body"


def test_empty_table():
    with pytest.raises(SchemaError, match="notes: is empty"):
        validate("notes", notes().iloc[:0])


def test_wrong_dtype_names_column_and_rows():
    df = interactions().astype({"dwell_seconds": object})
    df.loc[1, "dwell_seconds"] = "twelve"
    with pytest.raises(SchemaError, match=r"interactions\.dwell_seconds: has non-numeric values \(rows 1\)"):
        validate("interactions", df)


def test_list_column_wrong_type():
    df = notes()
    df["image_captions"] = ["a photo", ["ok"], ["ok"]]
    with pytest.raises(SchemaError, match=r"notes\.image_captions: .*rows 0.*expected a list of strings"):
        validate("notes", df)


def test_duplicate_ids():
    df = notes()
    df.loc[2, "note_id"] = "n0"
    with pytest.raises(SchemaError, match=r"notes\.note_id: has duplicate keys \(rows 0, 2\).*'n0'"):
        validate("notes", df)


def test_unknown_references():
    tables = {"notes": notes(), "users": users(), "interactions": interactions()}
    tables["interactions"].loc[2, "note_id"] = "n404"
    with pytest.raises(SchemaError, match=r"interactions\.note_id: references unknown notes.*rows 2.*'n404'"):
        validate_tables(tables)
    tables = {"notes": notes(), "users": users(), "interactions": interactions()}
    tables["interactions"].loc[0, "user_id"] = "ghost"
    with pytest.raises(SchemaError, match=r"interactions\.user_id: references unknown users"):
        check_references({k: validate(k, v) for k, v in tables.items()})


def test_unparsable_timestamps():
    df = notes()
    df.loc[1, "created_at"] = "yesterday"
    with pytest.raises(
        SchemaError, match=r"notes\.created_at: has unparsable timestamps \(rows 1\).*'yesterday'"
    ):
        validate("notes", df)


def test_negative_dwell():
    df = interactions()
    df.loc[1, "dwell_seconds"] = -3.0
    with pytest.raises(SchemaError, match=r"interactions\.dwell_seconds: has values below 0.*rows 1.*>= 0"):
        validate("interactions", df)


def test_event_outside_choices_lists_valid_ones():
    df = interactions()
    df.loc[0, "event"] = "purchase"
    with pytest.raises(SchemaError, match=r"interactions\.event: .*'purchase'.*one of impression, click"):
        validate("interactions", df)


def test_null_in_required_column():
    df = notes()
    df.loc[0, "category"] = None
    with pytest.raises(SchemaError, match=r"notes\.category: has missing values \(rows 0\)"):
        validate("notes", df)


def test_epoch_and_iso_timestamps_agree():
    a = validate("users", users().assign(created_at=[0, 86400]))
    b = validate("users", users().assign(created_at=["1970-01-01T00:00:00Z", "1970-01-02"]))
    assert a["created_at"].equals(b["created_at"])


def test_malformed_tags():
    df = pd.DataFrame(
        {
            "note_id": ["n0"],
            "tagger": ["t"],
            "tagger_version": ["1"],
            "tags": [[{"text": "x", "dimension": "d", "confidence": 1.5}]],
            "generated_at": ["2026-01-01"],
        }
    )
    with pytest.raises(
        SchemaError, match=r"tags\.tags: has malformed tag lists.*confidence: float in \[0, 1\]"
    ):
        validate("tags", df)
