"""Bayesian view (cross-checked against gbstats), the quantile metric's CI coverage, and the sequential
and power results in the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ab_analysis.analysis import analyze
from ab_analysis.estimators import Estimand
from ab_analysis.metrics import parse_metrics
from ab_analysis.moments import Moments
from ab_analysis.power import minimum_detectable_effect
from ab_analysis.quantile import compare_quantile
from ab_analysis.sequential import msprt

gb = pytest.importorskip("gbstats", reason="gbstats (pinned in requirements/cpu.lock) not installed")

CTW_TOL = 1e-3


def _gbstats(c: pd.DataFrame, t: pd.DataFrame, num: str, den: str | None, inverse: bool):  # type: ignore[no-untyped-def]
    from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig
    from gbstats.models.statistics import RatioStatistic, SampleMeanStatistic

    def stat(df: pd.DataFrame):  # type: ignore[no-untyped-def]
        m = SampleMeanStatistic(n=len(df), sum=float(df[num].sum()), sum_squares=float((df[num] ** 2).sum()))
        if den is None:
            return m
        d = SampleMeanStatistic(n=len(df), sum=float(df[den].sum()), sum_squares=float((df[den] ** 2).sum()))
        return RatioStatistic(
            n=len(df), m_statistic=m, d_statistic=d, m_d_sum_of_products=float((df[num] * df[den]).sum())
        )

    return EffectBayesianABTest(stat(c), stat(t), EffectBayesianConfig(inverse=inverse)).compute_result()


def test_chance_to_win_and_risk_match_gbstats(shared_data) -> None:  # type: ignore[no-untyped-def]
    path = shared_data("ab-views-clicks") / "views_clicks.csv"
    df = pd.read_csv(path)
    # a random half of the users too, so that chance to win is far from 0 and 1
    half = df.sample(frac=0.5, random_state=3)
    defs = parse_metrics(
        [
            {
                "name": "ctr",
                "type": "ratio",
                "numerator": "clicks",
                "denominator": "views",
                "kind": "proportion",
            },
            {"name": "views", "type": "mean", "numerator": "views", "kind": "count"},
            {"name": "views_down", "type": "mean", "numerator": "views", "direction": "decrease"},
        ]
    )
    worst = 0.0
    for data in (df, half):
        rep = analyze(data, defs, variant_col="group", treatment="test", correction="none")
        c, t = data[data["group"] == "control"], data[data["group"] == "test"]
        for name, num, den, inverse in [
            ("ctr", "clicks", "views", False),
            ("views", "views", None, False),
            ("views_down", "views", None, True),
        ]:
            ours = rep.result(name).extras.bayes
            theirs = _gbstats(c, t, num, den, inverse)
            assert theirs.error_message is None
            worst = max(worst, abs(ours.chance_to_win - theirs.chance_to_win))
            assert ours.chance_to_win == pytest.approx(theirs.chance_to_win, abs=CTW_TOL)
            # gbstats' risk is [keep control, ship treatment]
            assert ours.risk_control == pytest.approx(theirs.risk[0], rel=1e-6, abs=1e-12)
            assert ours.risk_treatment == pytest.approx(theirs.risk[1], rel=1e-6, abs=1e-12)
            assert ours.rel_mean == pytest.approx(theirs.expected, rel=1e-9)
    assert worst < 1e-9  # the closed form is the same model: agreement at rounding level


def test_chance_to_win_is_not_trivial_in_the_check(shared_data) -> None:  # type: ignore[no-untyped-def]
    df = pd.read_csv(shared_data("ab-views-clicks") / "views_clicks.csv").sample(frac=0.5, random_state=3)
    rep = analyze(
        df,
        parse_metrics([{"name": "v", "type": "mean", "numerator": "views"}]),
        variant_col="group",
        treatment="test",
    )
    assert 0.02 < rep.result("v").extras.bayes.chance_to_win < 0.999


@pytest.mark.parametrize(("q", "dist"), [(0.5, "exponential"), (0.9, "lognormal")])
def test_quantile_ci_coverage(q: float, dist: str) -> None:
    rng = np.random.default_rng(17)
    reps, n, shift = 400, 400, 0.3  # treatment = control distribution + shift: true difference = shift
    draw = (
        (lambda size: rng.exponential(1.0, size))
        if dist == "exponential"
        else (lambda size: rng.lognormal(0, 1, size))
    )
    hits = 0
    for _ in range(reps):
        r = compare_quantile(draw(n), draw(n) + shift, q)
        assert r.status == "ok"
        hits += r.abs_ci_low <= shift <= r.abs_ci_high
    coverage = hits / reps
    assert 0.92 <= coverage <= 0.98, coverage


def test_quantile_metric_in_report() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    df = pd.DataFrame(
        {"variant": np.where(np.arange(n) % 2, "treatment", "control"), "dur": rng.exponential(30, n)}
    )
    df.loc[df["variant"] == "treatment", "dur"] *= 1.2
    rep = analyze(
        df, parse_metrics([{"name": "median_dur", "type": "quantile", "quantile": 0.5, "numerator": "dur"}])
    )
    r = rep.result("median_dur")
    assert r.kind == "quantile" and r.result.status == "ok"
    assert r.result.control_mean == pytest.approx(np.median(df.loc[df["variant"] == "control", "dur"]))
    assert r.result.rel_ci_low < r.result.rel_lift < r.result.rel_ci_high
    assert "| median_dur | all |" in rep.to_markdown()


def test_sequential_and_mde_shown_in_report() -> None:
    rng = np.random.default_rng(4)
    n = 1000
    df = pd.DataFrame(
        {
            "variant": np.where(np.arange(n) % 2, "treatment", "control"),
            "y": rng.normal(10, 4, n),
            "z": rng.normal(5, 1, n),
        }
    )
    df.loc[df["variant"] == "treatment", "z"] += 0.5
    rep = analyze(df, parse_metrics([{"name": "y", "type": "mean", "numerator": "y"},
                                     {"name": "z", "type": "mean", "numerator": "z"}]))  # fmt: skip
    y = rep.result("y")
    c = df.loc[df["variant"] == "control", ["y"]].to_numpy()
    t = df.loc[df["variant"] == "treatment", ["y"]].to_numpy()
    ref = msprt([Moments.from_matrix(["y"], c)], [Moments.from_matrix(["y"], t)], Estimand("y"))
    look = ref.looks[-1]
    seq = y.extras.sequential
    assert (seq.p_value, seq.ci_low, seq.ci_high) == pytest.approx(
        (look.p_value, look.ci_low, look.ci_high), rel=1e-9
    )
    sigma = y.result.abs_se / np.sqrt(1 / y.result.n_control + 1 / y.result.n_treatment)
    mde = minimum_detectable_effect(sigma, y.result.n_control, y.result.n_treatment)
    assert y.extras.mde_abs == pytest.approx(mde, rel=1e-12)
    assert y.underpowered and not rep.result("z").underpowered
    md = rep.to_markdown()
    assert f"underpowered: MDE {100 * y.extras.mde_rel:.2f}% at 80 % power" in md
    assert "always-valid p [CI]" in md and "P(win) / risk" in md
    doc = rep.to_dict()["metrics"][0]
    assert doc["sequential"]["p_value"] == pytest.approx(look.p_value) and doc["mde"]["power"] == 0.8


def test_sequential_runs_over_the_daily_looks_of_an_event_log() -> None:
    from ab_analysis.analysis import analyze_events

    rng = np.random.default_rng(8)
    n = 300
    t0 = pd.Timestamp("2026-04-01", tz="UTC")
    assigned = t0 + pd.to_timedelta(np.arange(n) % 3, unit="D")
    variant = np.where(np.arange(n) % 2, "treatment", "control")
    assignments = pd.DataFrame({"user_id": np.arange(n), "variant": variant, "assigned_at": assigned})
    rows = []
    for u in range(n):
        for _ in range(int(rng.integers(2, 10))):
            ts = assigned[u] + pd.Timedelta(hours=float(rng.uniform(0, 100)))
            rows.append((u, ts, "impression"))
            if rng.random() < (0.2 if variant[u] == "treatment" else 0.12):
                rows.append((u, ts, "click"))
    events = pd.DataFrame(rows, columns=["user_id", "ts", "event"])
    defs = parse_metrics(
        [{"name": "ctr", "type": "ratio", "numerator": {"column": "c", "events": ["click"]},
          "denominator": {"column": "i", "events": ["impression"]}}]
    )  # fmt: skip
    rep = analyze_events(events, assignments, defs)
    # the reference: msprt over independently built cumulative daily looks, then the final sample
    events["day"] = events["ts"].dt.floor("D")
    looks_c, looks_t = [], []
    for day in sorted(events["day"].unique()):
        seen = events[events["day"] <= day]
        per = pd.DataFrame(
            {"c": seen[seen["event"] == "click"].groupby("user_id").size(),
             "i": seen[seen["event"] == "impression"].groupby("user_id").size()}
        ).reindex(np.arange(n)).fillna(0.0)  # fmt: skip
        exposed = np.asarray(assigned <= day)
        for arm, looks in (("control", looks_c), ("treatment", looks_t)):
            sel = exposed & (variant == arm)
            looks.append(Moments.from_matrix(["c", "i"], per.loc[sel, ["c", "i"]].to_numpy()))
    ref = msprt(looks_c, looks_t, Estimand("c", "i"))
    row = rep.result("ctr")
    assert row.extras.sequential_looks == len(looks_c) + 1 == len(rep.daily[0].days) + 1
    seq = row.extras.sequential
    last = ref.looks[-1]
    assert (seq.p_value, seq.ci_low, seq.ci_high) == pytest.approx(
        (last.p_value, last.ci_low, last.ci_high), rel=1e-9
    )
    single = msprt([looks_c[-1]], [looks_t[-1]], Estimand("c", "i")).looks[-1]
    assert seq.p_value <= single.p_value  # earlier looks can only lower the running p-value
