"""The SQL path (duckdb over a parquet glob) against the in-memory event path, number by number."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ab_analysis.analysis import analyze_events
from ab_analysis.errors import (
    ABAnalysisError,
    InvalidArgumentError,
    InvalidValuesError,
    MetricConfigError,
    MissingColumnError,
)
from ab_analysis.estimators import LiftResult
from ab_analysis.metrics import default_metrics, parse_metrics
from ab_analysis.report import Report
from ab_analysis.sql import DUCKDB, EngineConfig, analyze_sql, sql_moments

RTOL = 1e-9
T0 = pd.Timestamp("2026-01-01", tz="UTC")


def metrics_with_cuped():  # type: ignore[no-untyped-def]
    """The defaults (capping, ratios, cold start) plus a CUPED mean and a CUPED ratio metric."""
    extra = parse_metrics(
        [
            {
                "name": "clicks_cuped",
                "type": "mean",
                "numerator": {"column": "clicks", "events": ["click"]},
                "covariate": "pre_clicks",
            },
            {
                "name": "ctr_cuped",
                "type": "ratio",
                "numerator": {"column": "clicks", "events": ["click"]},
                "denominator": {"column": "impressions", "events": ["impression"]},
                "covariate": {"numerator": "pre_clicks", "denominator": "pre_impressions"},
            },
        ]
    )
    return default_metrics() + extra


def make_logs(
    n_users: int = 900, arms: tuple[str, ...] = ("control", "treatment"), seed: int = 0, other: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and assignments with every case the recipes handle.

    Users without events (activity 0), events before assignment, events of unassigned users, NaN dwell,
    cold-start notes (< 10, also flagged in ``is_cold_start``), covariates with a few NaN, a second
    experiment in the assignments; with ``other`` a variant ("other") that no comparison uses.
    """
    rng = np.random.default_rng(seed)
    uid = np.arange(n_users, dtype=np.int64)
    labels = np.array([*arms, "other"] if other else list(arms))
    variant = labels[rng.integers(0, len(labels), n_users)]
    assigned = T0 + pd.to_timedelta(rng.integers(0, 3 * 86400, n_users), unit="s")
    pre_clicks = rng.poisson(3, n_users).astype(float)
    pre_clicks[rng.random(n_users) < 0.03] = np.nan
    assignments = pd.DataFrame(
        {
            "user_id": uid,
            "experiment": "tags",
            "variant": variant,
            "assigned_at": assigned,
            "user_type": rng.choice(["new", "returning"], n_users),
            "platform": rng.choice(["android", "ios", "web"], n_users),
            "pre_clicks": pre_clicks,
            "pre_impressions": pre_clicks * 8 + rng.poisson(20, n_users),
        }
    )
    other_exp = assignments.head(50).assign(experiment="older", user_id=uid[:50] + 10**6)
    assignments = pd.concat([assignments, other_exp], ignore_index=True)

    activity = np.where(rng.random(n_users) < 0.1, 0, rng.poisson(25, n_users))  # 10% with no events
    u = np.repeat(uid, activity)  # one impression each; a click (same note, same instant) on some
    n = len(u)
    lift = 1.0 + 0.25 * (variant[u] != arms[0]) * (1 + (variant[u] == arms[-1]))
    note = rng.integers(0, 50, n)
    offset = pd.to_timedelta(rng.integers(-86400, 5 * 86400, n), unit="s")  # some before assignment
    ts = pd.DatetimeIndex(assigned[u] + offset).floor("us")
    clicked = rng.random(n) < np.clip(0.1 * lift * np.where(note < 10, 1.3, 1.0), 0, 1)
    acted = clicked & (rng.random(n) < 0.4)
    dwell = rng.lognormal(3, 1.2, n)
    dwell[rng.random(n) < 0.05] = np.nan  # clicks without dwell count 0 seconds
    parts = [
        pd.DataFrame(
            {"user_id": u, "note_id": note, "ts": ts, "event": "impression", "dwell_seconds": np.nan}
        ),
        pd.DataFrame({"user_id": u, "note_id": note, "ts": ts, "event": "click", "dwell_seconds": dwell}).loc[
            clicked
        ],
        pd.DataFrame(
            {
                "user_id": u,
                "note_id": note,
                "ts": ts,
                "event": rng.choice(["like", "collect", "comment", "share"], n),
                "dwell_seconds": np.nan,
            }
        ).loc[acted],
    ]
    events = pd.concat(parts, ignore_index=True).assign(is_cold_start=lambda d: d["note_id"] < 10)
    stray = pd.DataFrame(
        {
            "user_id": [10**9, 10**9 + 1],
            "note_id": [1, 2],
            "ts": [T0, T0],
            "event": ["click", "impression"],
            "dwell_seconds": [5.0, np.nan],
            "is_cold_start": [True, True],
        }
    )
    events = pd.concat([events, stray], ignore_index=True).sample(frac=1.0, random_state=seed)
    return events.reset_index(drop=True), assignments


def pair_of(assignments: pd.DataFrame, treatment: str, control: str = "control") -> pd.DataFrame:
    """The assignments of control and one treatment: the pairwise two-arm experiment."""
    return assignments[assignments["variant"].isin([control, treatment])]


def write_parts(events: pd.DataFrame, root: Path, parts: int = 3) -> str:
    """Events as ``parts`` parquet files (microsecond timestamps); returns the glob."""
    root.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(np.array_split(np.arange(len(events)), parts)):
        events.iloc[chunk].to_parquet(
            root / f"part-{i:03d}.parquet",
            index=False,
            coerce_timestamps="us",
            allow_truncated_timestamps=True,
        )
    return str(root / "*.parquet")


def _close(a: object, b: object) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, float | int) or not isinstance(b, float | int):
            return False
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0)
    return a == b


def _assert_close_doc(got: object, want: object, path: str = "", skip: frozenset[str] = frozenset()) -> None:
    """Equal JSON trees, floats within RTOL (a string with a number in it must match exactly)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        assert sorted(got) == sorted(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            if k not in skip:
                _assert_close_doc(got[k], want[k], f"{path}.{k}", skip)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{path}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close_doc(g, w, f"{path}[{i}]", skip)
    else:
        assert _close(got, want), f"{path}: {got!r} != {want!r}"


def assert_same_report(got: Report, want: Report, *, daily_looks: bool = False, notes: bool = True) -> None:
    """Every number of every result row within 1e-9 relative; labels, statuses, verdicts, notes equal.

    The whole JSON document is compared (rows incl. adjusted CIs, Bayesian, sequential and MDE views, the
    SRM gate, data notes) except ``metadata`` (provenance) and ``daily`` (the in-memory path's only).
    ``daily_looks``: ``want`` chained its always-valid (sequential) view over daily looks, which the SQL
    path does not compute, so that view is left out. ``notes``: also compare the data notes.
    """
    assert [(r.metric, r.arm, r.segment, r.segment_value) for r in got.results] == [
        (r.metric, r.arm, r.segment, r.segment_value) for r in want.results
    ]
    for g, w in zip(got.results, want.results, strict=True):
        where = f"{g.metric} {g.arm} {g.segment}={g.segment_value}"
        for f in fields(LiftResult):
            assert _close(getattr(g.result, f.name), getattr(w.result, f.name)), f"{where}: {f.name}"
    skip = (
        {"metadata", "daily"}
        | ({"sequential"} if daily_looks else set())
        | (set() if notes else {"data_notes"})
    )
    _assert_close_doc(got.to_dict(), want.to_dict(), skip=frozenset(skip))


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    events, assignments = make_logs()
    glob = write_parts(events, tmp_path_factory.mktemp("events"))
    return events, assignments, glob


@pytest.mark.parametrize("cold", ["notes", "column"])
def test_duckdb_equals_in_memory(logs: tuple[pd.DataFrame, pd.DataFrame, str], cold: str) -> None:
    events, assignments, glob = logs
    notes = range(10) if cold == "notes" else None
    kw = {"experiment": "tags", "cold_start_notes": notes, "segments": ["user_type", "platform"]}
    mdefs = metrics_with_cuped()
    want = analyze_events(events, assignments, mdefs, chunk_size=5000, **kw)  # type: ignore[arg-type]
    got = analyze_sql(glob, assignments, mdefs, engine=EngineConfig(threads=2), **kw)
    assert_same_report(got, want, daily_looks=True)
    assert want.metadata is not None and got.metadata is not None
    assert got.metadata["dropped_events"] == want.metadata["dropped_events"] > 2  # strays + pre-assignment
    assert got.metadata["n_events"] == len(events)
    # the data exercise what the comparison is about
    vd = got.result("view_duration_per_user")
    assert vd.capped_at is not None and vd.capped_at < events["dwell_seconds"].max()
    assert got.result("ctr_cuped").result.theta != 0 and got.result("clicks_cuped").cuped
    assert got.result("pv_ctr").result.p_value < 0.05  # a real lift: the relative check is not of noise


def test_three_arms_equal_in_memory(tmp_path: Path) -> None:
    events, assignments = make_logs(n_users=700, arms=("control", "t1", "t2"), seed=3)
    glob = write_parts(events, tmp_path / "three")
    kw: dict[str, Any] = {"treatment": ("t1", "t2"), "experiment": "tags", "segments": ["user_type"]}
    mdefs = metrics_with_cuped()
    got = analyze_sql(glob, assignments, mdefs, **kw)
    assert_same_report(got, analyze_events(events, assignments, mdefs, **kw), daily_looks=True)
    assert got.arms == ("control", "t1", "t2") and len(got.srm.counts) == 3
    ok = [r for r in got.results if r.result.status == "ok"]
    assert len(ok) == len(mdefs) * 3 * 2  # metrics x (all + 2 user types) x 2 treatments, one Holm family
    p_min = min(r.result.p_value for r in ok)
    assert min(r.p_adjusted for r in ok) == pytest.approx(min(1.0, len(ok) * p_min), rel=1e-12)
    # without a capped metric the three-arm rows equal the pairwise two-arm runs before correction
    uncapped = [m for m in mdefs if m.capping is None]
    three = analyze_sql(glob, assignments, uncapped, **(kw | {"correction": "none"}))
    for t in ("t1", "t2"):
        pair = analyze_sql(
            glob, pair_of(assignments, t), uncapped, **(kw | {"treatment": t, "correction": "none"})
        )
        rows = [r for r in three.results if r.arm == t]
        for g, w in zip(rows, pair.results, strict=True):
            assert _close(g.result.p_value, w.result.p_value) and _close(g.result.abs_se, w.result.abs_se)


def test_moments_and_query(logs: tuple[pd.DataFrame, pd.DataFrame, str]) -> None:
    events, assignments, glob = logs
    stats = sql_moments(glob, assignments, experiment="tags", cold_start_notes=range(10))
    a = assignments[assignments["experiment"] == "tags"]
    assert stats.counts == ((a["variant"] == "control").sum(), (a["variant"] == "treatment").sum())
    assert stats.n_assigned == len(a)
    assert "read_parquet" not in stats.query and "quantile_cont" in stats.query
    assert stats.query.count("SELECT") <= 6  # one statement: CTEs, no per-metric round trips
    mm = next(m for m in stats.metrics if m.metric.name == "pv_ctr")
    kept = events.merge(a[["user_id", "variant", "assigned_at"]], on="user_id")
    kept = kept[(kept["ts"] >= kept["assigned_at"]) & (kept["variant"] == "control")]
    control = mm.groups[0].moments[0]
    assert control.sums == ((kept["event"] == "click").sum(), (kept["event"] == "impression").sum())
    assert stats.early_events == (events.merge(a, on="user_id").eval("ts < assigned_at")).sum() > 0
    assert stats.unassigned_events == 2


def test_identifiers_are_quoted_and_labels_are_parameters(tmp_path: Path) -> None:
    events, assignments = make_logs(n_users=200, seed=5)
    odd = 'it"s; DROP'
    assignments = assignments.rename(columns={"user_type": odd})
    assignments["variant"] = assignments["variant"].replace({"control": "con'trol"})
    glob = write_parts(events, tmp_path / "ev", parts=1)
    rep = analyze_sql(glob, assignments, control="con'trol", experiment="tags", segments=[odd])
    assert {r.segment for r in rep.results} == {None, odd}
    assert DUCKDB.ident(odd) == '"it""s; DROP"'


def test_errors_name_what_is_wrong(logs: tuple[pd.DataFrame, pd.DataFrame, str], tmp_path: Path) -> None:
    events, assignments, glob = logs
    with pytest.raises(InvalidArgumentError, match=r"nothing-here/\*\.parquet"):
        analyze_sql(str(tmp_path / "nothing-here" / "*.parquet"), assignments, experiment="tags")
    no_dwell = write_parts(events.drop(columns=["dwell_seconds"]), tmp_path / "nodwell", parts=1)
    with pytest.raises(
        MissingColumnError, match=r"events table: column 'dwell_seconds'.*'event', 'is_cold_start'"
    ):
        analyze_sql(no_dwell, assignments, experiment="tags")
    bad = parse_metrics(
        [
            {
                "name": "x",
                "type": "mean",
                "numerator": {"column": "c", "events": ["click"]},
                "covariate": "pre_views",
            }
        ]
    )
    with pytest.raises(MissingColumnError, match=r"assignments table: column 'pre_views'.*'assigned_at'"):
        analyze_sql(glob, assignments, bad, experiment="tags")
    with pytest.raises(ABAnalysisError, match=r"column 'clicks' has no 'events' recipe"):
        analyze_sql(glob, assignments, parse_metrics([{"name": "c", "type": "mean", "numerator": "clicks"}]))
    median = parse_metrics(
        [
            {
                "name": "median_dwell",
                "type": "quantile",
                "quantile": 0.5,
                "numerator": {"column": "d", "events": ["click"], "value": "dwell_seconds"},
            }
        ]
    )
    with pytest.raises(ABAnalysisError, match=r"'median_dwell': type 'quantile' needs the per-user values"):
        analyze_sql(glob, assignments, median, experiment="tags")
    with pytest.raises(MetricConfigError, match=r"views"):
        parse_metrics([{"name": "c", "type": "mean", "numerator": {"column": "c", "events": ["views"]}}])
    with pytest.raises(InvalidArgumentError, match=r"experiment=None.*'older', 'tags'"):
        analyze_sql(glob, assignments)
    with pytest.raises(InvalidArgumentError, match=r"treatment='TEST'.*\['control', 'treatment'\]"):
        analyze_sql(glob, assignments, treatment="TEST", experiment="tags")
    dup = pd.concat([assignments, assignments.head(3)])
    with pytest.raises(
        InvalidValuesError, match=r"'user_id': 3 duplicate user_id rows: 0 \(2 rows\), 1 \(2 rows\)"
    ):
        analyze_sql(glob, dup, experiment="tags")
    broken = tmp_path / "broken"
    write_parts(events.head(100), broken, parts=1)
    (broken / "part-999.parquet").write_bytes(b"")  # a 0-byte file in the glob
    with pytest.raises(ABAnalysisError, match=r"part-999\.parquet|too small|magic") as exc:
        analyze_sql(str(broken / "*.parquet"), assignments, experiment="tags")
    assert "\n" not in str(exc.value)
    with pytest.raises(InvalidArgumentError, match=r"engine='oracle'"):
        EngineConfig(engine="oracle")  # type: ignore[arg-type]


def test_strict_event_values(logs: tuple[pd.DataFrame, pd.DataFrame, str], tmp_path: Path) -> None:
    events, assignments, _ = logs
    upper = events.assign(event=events["event"].where(events.index % 50 != 0, "CLICK"))
    n_upper = int((upper["event"] == "CLICK").sum())
    with pytest.raises(
        InvalidValuesError, match=rf"column 'event': .*case-sensitive\): 'CLICK' \({n_upper} rows\)"
    ):
        analyze_sql(write_parts(upper, tmp_path / "upper", parts=1), assignments, experiment="tags")
    neg = events.assign(dwell_seconds=events["dwell_seconds"].where(events.index != 7, -3.0))
    with pytest.raises(
        InvalidValuesError, match=r"'dwell_seconds': .*'-3\.0' \(1 row\).*finite seconds >= 0"
    ):
        analyze_sql(write_parts(neg, tmp_path / "neg", parts=1), assignments, experiment="tags")
    moved = events.assign(user_id=events["user_id"] + 10**7)
    with pytest.raises(InvalidValuesError, match=r"none of the \d+ events matches an assigned user"):
        analyze_sql(write_parts(moved, tmp_path / "moved", parts=1), assignments, experiment="tags")


def test_unknown_variants_and_label_normalization(tmp_path: Path) -> None:
    events, assignments = make_logs(n_users=300, seed=7, other=True)
    glob = write_parts(events, tmp_path / "ev", parts=2)
    n_other = int(((assignments["variant"] == "other") & (assignments["experiment"] == "tags")).sum())
    with pytest.raises(InvalidValuesError, match=rf"'variant': .*'other' \({n_other} rows\).*--drop-unknown"):
        analyze_sql(glob, assignments, experiment="tags")
    dropped = analyze_sql(glob, assignments, experiment="tags", drop_unknown_variants=True)
    assert f"{n_other} rows of other variants dropped: 'other'" in " ".join(n.text for n in dropped.notes)
    kept = assignments[assignments["variant"] != "other"]
    want = analyze_sql(glob, kept, experiment="tags")
    assert_same_report(dropped, want, notes=False)  # the dropped users' events: "unassigned" in want
    messy = assignments.assign(
        variant=assignments["variant"].replace({"control": " Control", "treatment": "TREATMENT "})
    )
    with pytest.raises(InvalidArgumentError, match=r"control='control'.*' Control'"):
        analyze_sql(glob, messy, experiment="tags", drop_unknown_variants=True)
    folded = analyze_sql(glob, messy, experiment="tags", drop_unknown_variants=True, normalize_labels=True)
    assert_same_report(folded, dropped)
    kept.to_parquet(tmp_path / "a.parquet")
    kept.assign(assigned_at=kept["assigned_at"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(
        tmp_path / "a.csv", index=False
    )
    for path in ("a.parquet", "a.csv"):  # assignments read by the engine too
        assert_same_report(analyze_sql(glob, str(tmp_path / path), experiment="tags"), want)
    as_str = kept.assign(user_id=kept["user_id"].astype(str))  # ids of another type: joined as strings
    strs = analyze_sql(glob, as_str, experiment="tags")
    assert_same_report(strs, want, notes=False)
    assert "compared as strings" in " ".join(n.text for n in strs.notes)


def test_bench_data_generator_is_exact_reused_and_analysable(tmp_path: Path) -> None:
    from tagllm.bench.ab_scale import generate

    first = generate(tmp_path, n_events=25_000, n_users=800, seed=1, chunk_events=10_000)
    again = generate(tmp_path, n_events=25_000, n_users=800, seed=1, chunk_events=10_000)
    assert not first["reused"] and again["reused"] and len(first["files"]) == 4
    events = pd.concat([pd.read_parquet(tmp_path / f) for f in first["files"][:-1]], ignore_index=True)
    assert len(events) == 25_000
    assignments = pd.read_parquet(tmp_path / "assignments.parquet")
    got = analyze_sql(str(tmp_path / "events" / "*.parquet"), str(tmp_path / "assignments.parquet"))
    assert_same_report(got, analyze_events(events, assignments), daily_looks=True)
    assert got.metadata is not None and 0 < got.metadata["dropped_events"] < len(events)


def test_numeric_labels_and_ids_as_the_in_memory_path(tmp_path: Path) -> None:
    events, assignments = make_logs(n_users=300, seed=9)
    glob = write_parts(events, tmp_path / "ev", parts=1)
    codes = (assignments["variant"] == "treatment").astype(int)
    for variant in (codes, codes.astype(float)):  # 0/1 and 0.0/1.0 both read as "0"/"1"
        a = assignments.assign(variant=variant)
        kw: dict[str, Any] = {"control": "0", "treatment": "1", "experiment": "tags"}
        got = analyze_sql(glob, a, **kw)
        assert_same_report(got, analyze_events(events, a, **kw), daily_looks=True)
    floats = assignments.assign(
        user_id=assignments["user_id"].astype(float).astype(str).str.replace(".0", "")
    )
    got = analyze_sql(glob, floats, experiment="tags")  # str ids vs int events, joined as text
    assert_same_report(got, analyze_events(events, floats, experiment="tags"), daily_looks=True)


def test_cli_engine_duckdb_equals_memory(
    logs: tuple[pd.DataFrame, pd.DataFrame, str], tmp_path: Path
) -> None:
    """`tagllm ab report --events GLOB --engine duckdb` writes the same rows as the in-memory engine."""
    import json

    from click.testing import CliRunner

    from ab_analysis.cli import ab

    events, assignments, glob = logs
    assignments.to_parquet(tmp_path / "a.parquet", index=False)
    single = tmp_path / "events.parquet"
    events.to_parquet(single, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    docs = {}
    for engine, source in (("memory", str(single)), ("duckdb", glob)):
        out = tmp_path / engine
        args = ["report", "--events", source, "--assignments", str(tmp_path / "a.parquet")]
        args += ["--experiment", "tags", "--engine", engine, "--threads", "2", "--out", str(out)]
        res = CliRunner().invoke(ab, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        docs[engine] = json.loads((out / "report.json").read_text())
    rows = {e: {(r["metric"], r["arm"], r["segment"]): r for r in d["metrics"]} for e, d in docs.items()}
    assert rows["memory"].keys() == rows["duckdb"].keys() and len(rows["memory"]) >= 4
    for key, want in rows["memory"].items():
        got = rows["duckdb"][key]
        for field in ("abs_lift", "abs_se", "p_value", "p_adjusted"):
            assert _close(got[field], want[field]), (key, field, got[field], want[field])
    # --engine needs --events
    res = CliRunner().invoke(
        ab, ["report", "--users", str(single), "--engine", "duckdb", "--out", str(tmp_path)]
    )
    assert res.exit_code == 2 and "--engine duckdb reads --events" in res.output
