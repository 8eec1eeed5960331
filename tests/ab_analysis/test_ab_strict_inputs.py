"""Strict inputs: every bad-input case is a one-line usage error (exit 2) naming the column, the
offending values with their counts and what was expected; opt-in flags give the lenient behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from ab_analysis.analysis import analyze, analyze_events
from ab_analysis.cli import ab
from ab_analysis.errors import InvalidValuesError
from ab_analysis.metrics import parse_metrics

METRICS = (
    "metrics:\n"
    "  - {name: ctr, type: ratio, numerator: clicks, denominator: views, kind: proportion}\n"
    "  - {name: views_per_user, type: mean, numerator: views, kind: count}\n"
)


def _users(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    views = rng.poisson(5, n) + 1.0
    return pd.DataFrame(
        {
            "user_id": np.arange(n),
            "variant": np.where(np.arange(n) % 2 == 0, "control", "treatment"),
            "views": views,
            "clicks": rng.binomial(views.astype(int), 0.1).astype(float),
        }
    )


def _run(tmp_path: Path, df: pd.DataFrame, *extra: str, metrics: str = METRICS) -> Result:
    users = tmp_path / "u.csv"
    df.to_csv(users, index=False)
    (tmp_path / "m.yaml").write_text(metrics)
    args = [
        "report",
        "--users",
        str(users),
        "--metrics",
        str(tmp_path / "m.yaml"),
        "--out",
        str(tmp_path / "o"),
    ]
    return CliRunner().invoke(ab, [*args, *extra])


def _usage_error(res: Result, *needles: str) -> str:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    line = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(line) == 1, res.output
    for needle in needles:
        assert needle in line[0], (needle, line[0])
    return line[0]


@pytest.mark.parametrize(
    ("label", "shown"),
    [("TEST", "'TEST' (7 rows)"), ("treatment ", "'treatment ' (7 rows)"), ("b", "'b' (7 rows)")],
)
def test_unknown_variant_labels(tmp_path: Path, label: str, shown: str) -> None:
    df = _users()
    df.loc[:6, "variant"] = label
    _usage_error(
        _run(tmp_path, df),
        "users table, column 'variant'",
        shown,
        "expected one of ['control', 'treatment']",
        "--drop-unknown-variants",
    )


def test_drop_unknown_variants_counts_and_reports(tmp_path: Path) -> None:
    df = _users()
    df.loc[:6, "variant"] = "TEST"
    res = _run(tmp_path, df, "--drop-unknown-variants")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    notes = [n["text"] for n in doc["data_notes"] if n["topic"] == "dropped_rows"]
    assert notes == ["7 rows of other variants dropped: 'TEST' (7 rows)"]
    kept = df[df["variant"] != "TEST"]
    assert doc["srm"]["counts"] == [
        int((kept["variant"] == "control").sum()),
        int((kept["variant"] == "treatment").sum()),
    ]
    assert "7 rows of other variants dropped" in (tmp_path / "o" / "report.md").read_text()


def test_normalize_labels_strips_and_folds(tmp_path: Path) -> None:
    df = _users()
    df.loc[:6, "variant"] = " Treatment "
    res = _run(tmp_path, df, "--normalize-labels")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    assert sum(doc["srm"]["counts"]) == len(df)


def test_integer_variant_column(tmp_path: Path) -> None:
    df = _users()
    ref = analyze(df, parse_metrics([{"name": "v", "type": "mean", "numerator": "views"}]))
    df["variant"] = (df["variant"] == "treatment").astype(int)
    res = _run(tmp_path, df, "--control", "0", "--treatment", "1")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    row = next(m for m in doc["metrics"] if m["metric"] == "views_per_user")
    assert (row["n_control"], row["n_treatment"]) == (100, 100)
    assert row["rel_lift"] == pytest.approx(ref.result("v").result.rel_lift, rel=1e-12)
    # A CSV column with a missing label is read as floats (0.0, 1.0): still the arms "0" and "1".
    df["variant"] = df["variant"].astype(float)
    df.loc[0, "variant"] = np.nan
    _usage_error(_run(tmp_path, df, "--control", "0", "--treatment", "1"), "'<missing>' (1 row)")
    assert _run(tmp_path, df, "--control", "0", "--treatment", "1", "--drop-unknown-variants").exit_code == 0


def test_duplicate_user_ids(tmp_path: Path) -> None:
    df = _users()
    df.loc[10, "user_id"] = 3
    df.loc[11, "user_id"] = 3
    _usage_error(
        _run(tmp_path, df),
        "users table, column 'user_id'",
        "1 duplicated user ids",
        "3 (3 rows)",
        "one row per user",
    )


def test_negative_counts(tmp_path: Path) -> None:
    df = _users()
    df.loc[[4, 5], "views"] = -2.0
    _usage_error(
        _run(tmp_path, df),
        "users table, column 'views'",
        "negative values for proportion metric 'ctr'",
        "-2.0 (2 rows)",
        "expected values >= 0",
    )


def test_ctr_above_one(tmp_path: Path) -> None:
    df = _users()
    df.loc[[1, 2, 3], "clicks"] = df.loc[[1, 2, 3], "views"] * 2
    _usage_error(
        _run(tmp_path, df),
        "users table, column 'clicks'",
        "exceeds 'views'",
        "2.0 (3 rows)",
        "clicks <= views per user",
    )


def test_proportion_mean_metric_out_of_range() -> None:
    df = _users()
    df["converted"] = (df["clicks"] > 0).astype(float)
    df.loc[[7, 8], "converted"] = 1.5
    m = parse_metrics([{"name": "conv", "type": "mean", "numerator": "converted", "kind": "proportion"}])
    with pytest.raises(
        InvalidValuesError, match=r"column 'converted': values above 1 .*1\.5 \(2 rows\).*\[0, 1\]"
    ):
        analyze(df, m)
    # the same values pass as a continuous metric
    analyze(df, parse_metrics([{"name": "conv", "type": "mean", "numerator": "converted"}]))


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_values(tmp_path: Path, bad: float) -> None:
    df = _users()
    df["views"] = df["views"].astype(float)
    df.loc[0, "views"] = bad
    _usage_error(_run(tmp_path, df), "users table, column 'views'", "infinite values", f"{bad!r} (1 row)")


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    res = CliRunner().invoke(ab, ["report", "--users", str(empty), "--out", str(tmp_path / "o")])
    _usage_error(res, "users file", "empty.csv", "is empty (0 bytes)")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not a parquet file at all")
    res = CliRunner().invoke(ab, ["report", "--users", str(junk), "--out", str(tmp_path / "o")])
    _usage_error(res, "users file", "junk.parquet", "cannot be read as parquet")
    events = tmp_path / "e.parquet"
    events.write_bytes(b"")
    assign = tmp_path / "a.csv"
    pd.DataFrame({"user_id": [1, 2], "variant": ["control", "treatment"]}).to_csv(assign, index=False)
    res = CliRunner().invoke(
        ab, ["report", "--events", str(events), "--assignments", str(assign), "--out", str(tmp_path / "o")]
    )
    _usage_error(res, "events file", "is empty (0 bytes)")


# --- event logs -------------------------------------------------------------------------------------------

EV_METRICS = (
    "metrics:\n"
    "  - {name: ctr, type: ratio, numerator: {column: clicks, events: [click]}, "
    "denominator: {column: impressions, events: [impression]}, kind: proportion}\n"
    "  - {name: dwell, type: mean, numerator: {column: dwell, events: [click], value: dwell_seconds}}\n"
)


def _logs(n_users: int = 60, seed: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    assignments = pd.DataFrame(
        {"user_id": np.arange(n_users), "variant": np.where(np.arange(n_users) % 2, "treatment", "control")}
    )
    rows = []
    for u in range(n_users):
        for _ in range(int(rng.integers(3, 8))):
            rows.append((u, "impression", np.nan))
            if rng.random() < 0.3:
                rows.append((u, "click", float(rng.exponential(20))))
    return pd.DataFrame(rows, columns=["user_id", "event", "dwell_seconds"]), assignments


def _run_events(tmp_path: Path, events: pd.DataFrame, assignments: pd.DataFrame) -> Result:
    events.to_csv(tmp_path / "e.csv", index=False)
    assignments.to_csv(tmp_path / "a.csv", index=False)
    (tmp_path / "m.yaml").write_text(EV_METRICS)
    return CliRunner().invoke(
        ab,
        [
            "report", "--events", str(tmp_path / "e.csv"), "--assignments", str(tmp_path / "a.csv"),
            "--metrics", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "o"),
        ],
    )  # fmt: skip


def test_event_names_in_another_case(tmp_path: Path) -> None:
    events, assignments = _logs()
    n_clicks = int((events["event"] == "click").sum())
    events["event"] = events["event"].replace({"click": "CLICK"})
    _usage_error(
        _run_events(tmp_path, events, assignments),
        "events table, column 'event'",
        f"'CLICK' ({n_clicks} rows)",
        "expected one of ['impression', 'click', 'like', 'collect', 'comment', 'share']",
    )


def test_negative_dwell(tmp_path: Path) -> None:
    events, assignments = _logs()
    clicks = events.index[events["event"] == "click"][:2]
    events.loc[clicks, "dwell_seconds"] = -5.0
    _usage_error(
        _run_events(tmp_path, events, assignments),
        "events table, column 'dwell_seconds'",
        "-5.0 (2 rows)",
        ">= 0",
    )


def test_user_id_type_mismatch_is_normalized() -> None:
    events, assignments = _logs()
    m = parse_metrics(
        [{"name": "ctr", "type": "ratio", "numerator": {"column": "c", "events": ["click"]},
          "denominator": {"column": "i", "events": ["impression"]}}]
    )  # fmt: skip
    ref = analyze_events(events, assignments, m).result("ctr").result
    as_str = events.assign(user_id=events["user_id"].astype(str))
    rep = analyze_events(as_str, assignments, m)
    got = rep.result("ctr").result
    assert got.status == "ok" and got.rel_lift == pytest.approx(ref.rel_lift, rel=1e-12)
    assert any(n.topic == "user_id" for n in rep.notes)
    # float ids (as from a CSV with gaps) against string ids
    as_float = events.assign(user_id=events["user_id"].astype(float))
    str_assign = assignments.assign(user_id=assignments["user_id"].astype(str))
    assert analyze_events(as_float, str_assign, m).result("ctr").result.rel_lift == pytest.approx(
        ref.rel_lift
    )


def test_events_matching_no_assigned_user(tmp_path: Path) -> None:
    events, assignments = _logs()
    events["user_id"] = "u" + events["user_id"].astype(str)
    _usage_error(
        _run_events(tmp_path, events, assignments),
        "events table, column 'user_id'",
        f"none of the {len(events)} events matches an assigned user",
        "expected user ids that occur in the assignments",
    )


def test_duplicate_assignments(tmp_path: Path) -> None:
    events, assignments = _logs()
    assignments = pd.concat([assignments, assignments.iloc[:2]])
    _usage_error(
        _run_events(tmp_path, events, assignments),
        "assignments table, column 'user_id'",
        "0 (2 rows)",
        "1 (2 rows)",
    )


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_label_normalization_of_numbers(x: int) -> None:
    from ab_analysis.validation import normalize_label

    assert normalize_label(x) == normalize_label(float(x)) == normalize_label(np.int64(x)) == str(x)
    assert normalize_label(str(x)) == str(x)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=12))
def test_label_normalization_of_text(label: str) -> None:
    from ab_analysis.validation import normalize_label

    assert normalize_label(label) == label  # exact by default: no strip, no case-fold
    assert normalize_label(label, fold=True) == label.strip().casefold()


def test_expected_share_option(tmp_path: Path) -> None:
    df = _users(400)
    res = _run(tmp_path, df, "--expected-share", "50,50", "--json")
    assert res.exit_code == 0, res.output
    planned = _run(tmp_path, df, "--expected-share", "80,20", "--json")
    assert json.loads(planned.stdout)["srm"]["status"] == "fail"
    _usage_error(_run(tmp_path, df, "--expected-share", "a,b"), "'a,b': expected comma-separated numbers")
    _usage_error(_run(tmp_path, df, "--expected-share", "1,2,3"), "expected_share", "2 positive numbers")
