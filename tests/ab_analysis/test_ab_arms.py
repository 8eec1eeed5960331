"""More than two arms: each treatment vs control, identical to the pairwise two-arm runs before the
correction; the family-wise correction spans arms × metrics × segments; SRM over all arms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from ab_analysis.analysis import analyze, analyze_events
from ab_analysis.cli import ab
from ab_analysis.corrections import adjust_pvalues
from ab_analysis.metrics import default_metrics, parse_metrics

METRICS = parse_metrics(
    [
        {"name": "y", "type": "mean", "numerator": "y", "covariate": "pre_y"},
        {"name": "ctr", "type": "ratio", "numerator": "clicks", "denominator": "views", "kind": "proportion"},
        {"name": "views", "type": "mean", "numerator": "views", "kind": "count", "direction": "decrease"},
        {"name": "median_y", "type": "quantile", "quantile": 0.5, "numerator": "y"},
    ]
)
FIELDS = (
    "n_control", "n_treatment", "control_mean", "treatment_mean", "abs_lift", "abs_se", "abs_ci_low",
    "abs_ci_high", "rel_lift", "rel_ci_low", "rel_ci_high", "statistic", "df", "p_value", "theta",
)  # fmt: skip


def _three_arms(n: int = 3000, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arm = rng.choice(["control", "a", "b"], n, p=[0.4, 0.3, 0.3])
    views = rng.poisson(6, n) + 1.0
    p = np.select([arm == "a", arm == "b"], [0.12, 0.09], 0.1)
    pre = rng.normal(5, 2, n)
    return pd.DataFrame(
        {
            "user_id": np.arange(n),
            "variant": arm,
            "views": views,
            "clicks": rng.binomial(views.astype(int), p).astype(float),
            "pre_y": pre,
            "y": pre + rng.exponential(3, n) + np.where(arm == "a", 0.3, 0.0),
            "platform": rng.choice(["ios", "web"], n),
        }
    )


def test_three_arms_equal_pairwise_runs_before_correction() -> None:
    df = _three_arms()
    rep = analyze(df, METRICS, treatment=["a", "b"], segments=["platform"])
    assert rep.arms == ("control", "a", "b") and rep.treatment == "a"
    assert len(rep.results) == 2 * len(METRICS) * 3
    for arm in ("a", "b"):
        pair = analyze(
            df[df["variant"].isin(["control", arm])], METRICS, treatment=arm, segments=["platform"]
        )
        for two in pair.results:
            three = rep.result(two.metric, two.segment, two.segment_value, arm=arm)
            assert three.arm == arm
            for f in FIELDS:
                a, b = getattr(three.result, f), getattr(two.result, f)
                assert a == pytest.approx(b, rel=1e-12, abs=1e-12, nan_ok=True), (arm, two.metric, f)
    # one family over arms × metrics × segments
    raw = [r.result.p_value for r in rep.results]
    assert [r.p_adjusted for r in rep.results] == pytest.approx(adjust_pvalues(raw, "holm"), nan_ok=True)
    # SRM over all three arms
    counts = [int((df["variant"] == v).sum()) for v in ("control", "a", "b")]
    assert list(rep.srm.counts) == counts and rep.srm.arms == ("control", "a", "b")
    assert rep.srm.p_value == pytest.approx(stats.chisquare(counts).pvalue, rel=1e-12)
    planned = analyze(df, METRICS[:1], treatment=["a", "b"], expected_share=(40, 30, 30))
    exp = np.array([0.4, 0.3, 0.3]) * len(df)
    assert planned.srm.p_value == pytest.approx(stats.chisquare(counts, exp).pvalue, rel=1e-12)


def test_three_arm_json_rows_and_cli(tmp_path: Path) -> None:
    df = _three_arms(1200)
    df.to_csv(tmp_path / "u.csv", index=False)
    (tmp_path / "m.yaml").write_text(
        "metrics:\n  - {name: ctr, type: ratio, numerator: clicks, denominator: views}\n"
    )
    res = CliRunner().invoke(
        ab,
        [
            "report", "--users", str(tmp_path / "u.csv"), "--metrics", str(tmp_path / "m.yaml"),
            "--treatment", "a", "--treatment", "b", "--out", str(tmp_path / "o"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    assert doc["arms"] == ["control", "a", "b"] and doc["treatments"] == ["a", "b"]
    assert [(m["metric"], m["arm"]) for m in doc["metrics"]] == [("ctr", "a"), ("ctr", "b")]
    assert len(doc["srm"]["counts"]) == 3
    md = (tmp_path / "o" / "report.md").read_text()
    assert md.startswith("# A/B report: a, b vs control") and "| ctr | b | all |" in md
    # without naming b, its rows are an error (a third arm not named)
    res = CliRunner().invoke(
        ab, ["report", "--users", str(tmp_path / "u.csv"), "--treatment", "a", "--out", str(tmp_path / "p")]
    )
    assert res.exit_code == 2 and "'b' (" in res.output


def test_three_arm_event_log_daily_per_arm() -> None:
    rng = np.random.default_rng(3)
    n = 90
    t0 = pd.Timestamp("2026-02-01", tz="UTC")
    assignments = pd.DataFrame(
        {
            "user_id": np.arange(n),
            "variant": np.array(["control", "a", "b"])[np.arange(n) % 3],
            "assigned_at": t0,
        }
    )
    rows = []
    for u in range(n):
        for _ in range(int(rng.integers(2, 6))):
            ts = t0 + pd.Timedelta(hours=float(rng.uniform(0, 72)))
            rows.append((u, 1, ts, "impression", np.nan))
            if rng.random() < 0.2:
                rows.append((u, 1, ts, "click", float(rng.exponential(10))))
    events = pd.DataFrame(rows, columns=["user_id", "note_id", "ts", "event", "dwell_seconds"])
    events["is_cold_start"] = False
    rep = analyze_events(events, assignments, default_metrics(), treatment=["a", "b"])
    assert {(d.metric, d.arm) for d in rep.daily} == {
        (m.name, a) for m in default_metrics() for a in ("a", "b")
    }
    d = next(d for d in rep.daily if d.metric == "pv_ctr" and d.arm == "b")
    last = rep.result("pv_ctr", arm="b").result
    assert d.rel_lift[-1] == pytest.approx(last.rel_lift, rel=1e-12)
    assert d.rel_ci_low[-1] == pytest.approx(last.rel_ci_low, rel=1e-9)
