"""Report outputs (JSON schema, Markdown, HTML), atomic writes, the ``ab`` CLI and event-log aggregation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ab_analysis.analysis import analyze, analyze_events
from ab_analysis.cli import ab
from ab_analysis.io import atomic_write
from ab_analysis.metrics import default_metrics

REPO = Path(__file__).resolve().parents[2]


def _logs(n_users: int = 400, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    users = np.arange(n_users)
    variant = np.where(users % 2 == 0, "control", "treatment")
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    assigned = t0 + pd.to_timedelta(rng.integers(0, 3, n_users), unit="D")
    assignments = pd.DataFrame(
        {
            "user_id": users,
            "experiment": "tags",
            "variant": variant,
            "assigned_at": assigned,
            "user_type": rng.choice(["new", "returning"], n_users),
        }
    )
    rows = []
    for u in users:
        for _ in range(rng.poisson(15)):
            note = int(rng.integers(0, 50))
            ts = assigned[u] + pd.Timedelta(hours=float(rng.uniform(0, 96)))
            rows.append((u, note, ts, "impression", np.nan))
            p = 0.15 if variant[u] == "treatment" and note < 10 else 0.1
            if rng.random() < p:
                rows.append((u, note, ts, "click", float(rng.exponential(30))))
                if rng.random() < 0.3:
                    rows.append(
                        (u, note, ts, str(rng.choice(["like", "collect", "comment", "share"])), np.nan)
                    )
    rows.append((10**9, 1, t0, "click", 5.0))  # unassigned user: dropped
    events = pd.DataFrame(rows, columns=["user_id", "note_id", "ts", "event", "dwell_seconds"])
    return events, assignments


def test_events_aggregation_matches_manual_and_report_outputs(tmp_path: Path) -> None:
    events, assignments = _logs()
    rep = analyze_events(
        events, assignments, None, cold_start_notes=range(10), segments=["user_type"], chunk_size=997
    )
    ev = events[events["user_id"].isin(assignments["user_id"])].merge(assignments[["user_id", "variant"]])
    t = ev[ev["variant"] == "treatment"]
    ctr_t = (t["event"] == "click").sum() / (t["event"] == "impression").sum()
    assert rep.result("pv_ctr").result.treatment_mean == pytest.approx(ctr_t, rel=1e-12)
    cold = t[t["note_id"] < 10]
    assert rep.result("pv_ctr_cold_start").result.treatment_mean == pytest.approx(
        (cold["event"] == "click").sum() / (cold["event"] == "impression").sum(), rel=1e-12
    )
    assert rep.result("interactions_per_user").result.n_treatment == 200
    assert rep.metadata is not None and rep.metadata["dropped_events"] == 1
    assert rep.daily and rep.daily[0].days[0] == "2026-01-01"
    assert {r.metric for r in rep.results} == {m.name for m in default_metrics()}

    doc = json.loads(rep.to_json(tmp_path / "r.json"))
    assert doc["schema_version"] == 2 and doc["srm"]["status"] == "ok"
    row = doc["metrics"][0]
    for key in (
        "metric",
        "status",
        "n_control",
        "n_treatment",
        "control_mean",
        "treatment_mean",
        "abs_lift",
        "abs_ci",
        "rel_lift",
        "rel_ci",
        "p_value",
        "p_adjusted",
        "significant",
        "segment",
    ):
        assert key in row
    assert "rel_lift" in doc["conventions"]
    assert "| pv_ctr_cold_start | all |" in rep.to_markdown()
    html = rep.to_html(tmp_path / "r.html")
    assert html.count("data:image/png;base64,") == 1 + len(rep.daily)
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]


def test_interrupted_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")

    def boom(fh) -> None:  # type: ignore[no-untyped-def]
        fh.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, boom)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["report.json"]
    new = tmp_path / "new.html"
    with pytest.raises(RuntimeError):
        atomic_write(new, lambda fh: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert not new.exists() and os.listdir(tmp_path) == ["report.json"]


def test_html_plot_failure_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ab_analysis.html as h

    df = pd.DataFrame({"variant": ["control", "treatment"] * 50, "y": np.arange(100.0)})
    rep = analyze(df, [m for m in default_metrics()][:0] or _ymetric())
    monkeypatch.setattr(h, "forest_png", lambda rows: (_ for _ in ()).throw(RuntimeError("no backend")))
    with pytest.raises(RuntimeError):
        rep.to_html(tmp_path / "report.html")
    assert os.listdir(tmp_path) == []


def _ymetric():  # type: ignore[no-untyped-def]
    from ab_analysis.metrics import parse_metrics

    return parse_metrics([{"name": "y", "type": "mean", "numerator": "y"}])


def test_cli_users_real_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    df = pd.DataFrame(
        {
            "user_id": range(1000),
            "group": np.repeat(["control", "test"], 500),
            "views": rng.poisson(5, 1000) + 1.0,
        }
    )
    df["clicks"] = rng.binomial(df["views"].astype(int), 0.05).astype(float)
    users = tmp_path / "u.csv"
    df.to_csv(users, index=False)
    metrics = tmp_path / "m.yaml"
    metrics.write_text(
        "metrics:\n  - {name: ctr, type: ratio, numerator: clicks, denominator: views}\n"
        "  - {name: views_per_user, type: mean, numerator: views}\n"
    )
    out = tmp_path / "out"
    res = CliRunner().invoke(
        ab,
        [
            "report",
            "--users",
            str(users),
            "--metrics",
            str(metrics),
            "--treatment",
            "test",
            "--variant-column",
            "group",
            "--correction",
            "bh",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["correction"] == "bh" and [m["metric"] for m in doc["metrics"]] == ["ctr", "views_per_user"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]


def test_cli_events(tmp_path: Path) -> None:
    events, assignments = _logs(100)
    events["is_cold_start"] = events["note_id"] < 10
    events.to_parquet(tmp_path / "e.parquet")
    assignments.to_csv(tmp_path / "a.csv", index=False)
    res = CliRunner().invoke(
        ab,
        [
            "report",
            "--events",
            str(tmp_path / "e.parquet"),
            "--assignments",
            str(tmp_path / "a.csv"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "o" / "report.json").read_text())["daily"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--correction", "bonferroni"], "'holm', 'bh', 'none'"),
        (["--alpha", "2"], "alpha"),
        ([], "exactly one input"),
        (["--users", "x.txt"], "'.parquet', '.csv'"),
        (["--users", "USERS", "--control", "ctl"], "['control', 'treatment']"),
    ],
)
def test_cli_usage_errors_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    users = tmp_path / "u.csv"
    pd.DataFrame({"variant": ["control", "treatment"] * 3, "y": range(6)}).to_csv(users, index=False)
    args = [str(users) if a == "USERS" else a for a in args]
    res = CliRunner().invoke(ab, ["report", *args, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2, res.output
    assert needle in res.output


def test_public_api_and_no_sibling_imports() -> None:
    code = (
        "import sys, ab_analysis as ab, ab_analysis.cli, ab_analysis.events;"
        "assert callable(ab.analyze) and hasattr(ab.Report, 'to_html');"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('features', 'tagging', 'ranking', 'tagllm')];"
        "assert not bad, bad; assert 'matplotlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_bench_small() -> None:
    from tagllm.bench.ab import run

    res = run(2000, with_tea=True)
    assert res["result_rows"] == 4 * 5 and res["analyze_s"] > 0
