"""The report a product manager reads: verdicts by declared direction and guardrails, a headline,
intervals consistent with the correction, what was done to the data, daily bands."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import ab_analysis.html as html_mod
from ab_analysis.analysis import analyze, analyze_events
from ab_analysis.markdown import shown_ci
from ab_analysis.metrics import default_metrics, parse_metrics
from ab_analysis.verdict import verdict


def _users(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    treat = np.arange(n) % 2 == 1
    pre = rng.normal(10, 3, n)
    return pd.DataFrame(
        {
            "user_id": np.arange(n),
            "variant": np.where(treat, "treatment", "control"),
            "engagement": pre + rng.normal(0, 1, n) + 0.5 * treat,  # clearly up: good
            "latency": rng.normal(100, 10, n) + 3.0 * treat,  # clearly up: bad (decrease is good)
            "crashes": rng.poisson(1.0, n) + rng.binomial(1, 0.3, n) * treat,  # guardrail, harmed
            "noise": rng.normal(0, 1, n),  # nothing
            "pre_engagement": pre,
        }
    )


PM_METRICS = parse_metrics(
    [
        {"name": "engagement", "type": "mean", "numerator": "engagement", "covariate": "pre_engagement"},
        {"name": "latency", "type": "mean", "numerator": "latency", "direction": "decrease", "capping": 0.99},
        {"name": "crashes", "type": "mean", "numerator": "crashes", "kind": "count", "direction": "decrease",
         "guardrail": True},
        {"name": "noise", "type": "mean", "numerator": "noise", "min_effect": 0.5},
    ]
)  # fmt: skip


def test_verdict_rules() -> None:
    assert verdict("ok", True, 1.0, "increase", False) == "win"
    assert verdict("ok", True, -1.0, "increase", False) == "loss"
    assert verdict("ok", True, -1.0, "decrease", False) == "win"
    assert verdict("ok", True, 1.0, "decrease", False) == "loss"
    assert verdict("ok", False, 1.0, "increase", False) == "inconclusive"
    assert verdict("ok", True, 1.0, "decrease", True) == "violated"
    assert verdict("ok", True, -1.0, "decrease", True) == "ok"
    assert verdict("ok", False, 1.0, "decrease", True) == "ok"
    assert verdict("zero_variance", False, 0.0, "increase", False) == "n/a"


def test_headline_colours_legend_and_ci_level() -> None:
    rep = analyze(_users(), PM_METRICS)
    got = {r.metric: r.verdict for r in rep.results}
    assert got == {"engagement": "win", "latency": "loss", "crashes": "violated", "noise": "inconclusive"}
    head = rep.headline()
    assert head.startswith("1 win, 1 loss (harmful), 1 guardrail violated, 1 inconclusive")
    assert "95 % CI, Holm-adjusted" in head
    md = rep.to_markdown()
    assert f"**Headline**: {head}" in md and "Legend:" in md and "🟥 loss" in md
    assert "| latency | all | 🟥 loss |" in md and "| crashes (guardrail) | all | 🟥 violated |" in md
    html = rep.to_html()
    assert '<tr class="win"><td>engagement</td>' in html
    assert (
        '<tr class="loss"><td>latency</td>' in html
        and '<tr class="violated"><td>crashes (guardrail)</td>' in html
    )
    assert "tr.loss,tr.violated{background:#fadadd}" in html and "tr.win{background:#dff5df}" in html
    assert "Legend:" in html and "95 % CI, Holm-adjusted" in html
    doc = rep.to_dict()
    assert doc["headline"]["counts"]["win"] == 1 and doc["ci"]["text"].startswith("95 % CI, Holm-adjusted")
    noise = doc["metrics"][3]
    assert noise["underpowered"] is (noise["mde"]["rel"] > 0.5)


def test_data_notes_caps_cuped_and_dropped_rows() -> None:
    df = _users()
    df.loc[:9, "latency"] = np.nan
    rep = analyze(df, PM_METRICS)
    lat = rep.result("latency")
    cap = float(np.quantile(df["latency"].dropna(), 0.99))
    assert lat.capped_at == pytest.approx(cap)
    eng = rep.result("engagement")
    assert 0.5 < eng.extras.variance_reduction < 1
    texts = [n.text for n in rep.notes]
    assert f"latency: latency capped at {cap:.6g} (pooled 0.99 quantile)" in texts
    assert f"engagement (treatment): θ = {eng.result.theta:.4g}, variance reduction " \
        f"{100 * eng.extras.variance_reduction:.1f} %" in texts  # fmt: skip
    assert "latency: 10 users without a value (NaN) left out of this metric" in texts
    md = rep.to_markdown()
    section = md[md.index("## What was done to the data") : md.index("## Conventions")]
    assert all(t in section for t in texts)
    assert all(t in rep.to_html() for t in texts)


@pytest.mark.parametrize("correction", ["holm", "bh", "none"])
def test_significant_iff_shown_ci_excludes_zero(correction: str) -> None:
    rng = np.random.default_rng(11)
    n, k = 600, 24
    cols = {f"m{i}": rng.normal(0, 1, n) + (np.arange(n) % 2) * rng.uniform(0, 0.35) for i in range(k)}
    df = pd.DataFrame({"variant": np.where(np.arange(n) % 2, "treatment", "control"), **cols})
    df["seg"] = rng.choice(["x", "y"], n)
    defs = parse_metrics([{"name": c, "type": "mean", "numerator": c} for c in cols])
    rep = analyze(df, defs, correction=correction, segments=["seg"])
    sig = [r.significant for r in rep.results]
    assert 0 < sum(sig) < len(sig)  # both kinds occur, so the invariant is exercised
    if correction != "none":  # some rows are significant raw but not after the correction
        assert any(r.result.p_value < 0.05 and not r.significant for r in rep.results)
    for r in rep.results:
        alo, ahi, rlo, rhi, level = shown_ci(r)
        assert (alo > 0 or ahi < 0) == r.significant, (r.metric, r.result.p_value, r.p_adjusted)
        assert (rlo > 0 or rhi < 0) == r.significant, (r.metric, r.extras.adjusted)
        assert level >= 1 - 0.05 - 1e-12


def test_daily_bands_and_raw_label(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    n = 120
    t0 = pd.Timestamp("2026-03-01", tz="UTC")
    assignments = pd.DataFrame(
        {"user_id": np.arange(n), "variant": np.where(np.arange(n) % 2, "treatment", "control"),
         "assigned_at": t0 + pd.to_timedelta(np.arange(n) % 3, unit="D"), "pre_clicks": rng.poisson(2, n)}
    )  # fmt: skip
    rows = []
    for u in range(n):
        for _ in range(int(rng.integers(3, 9))):
            ts = assignments.loc[u, "assigned_at"] + pd.Timedelta(hours=float(rng.uniform(0, 90)))
            rows.append((u, 1, ts, "impression", np.nan))
            if rng.random() < 0.25:
                rows.append((u, 1, ts, "click", float(rng.exponential(10))))
    events = pd.DataFrame(rows, columns=["user_id", "note_id", "ts", "event", "dwell_seconds"])
    events["is_cold_start"] = False
    base = {m.name: m.model_dump(exclude_none=True) for m in default_metrics()}
    base["pv_ctr"]["name"] = "pv_ctr_cuped"
    base["pv_ctr"]["covariate"] = {"numerator": "pre_clicks"}
    defs = parse_metrics(list(base.values()))
    rep = analyze_events(events, assignments, defs)
    daily = {d.metric: d for d in rep.daily}
    assert daily["pv_ctr_cuped"].raw and daily["view_duration_per_user"].raw  # CUPED / capping not applied
    assert not daily["interactions_per_user"].raw
    d = daily["pv_ctr_cuped"]
    assert len(d.rel_ci_low) == len(d.days) == 6
    ok = [i for i, v in enumerate(d.rel_ci_low) if math.isfinite(v)]
    assert ok and all(d.rel_ci_low[i] <= d.rel_lift[i] <= d.rel_ci_high[i] for i in ok)
    seen: list[tuple[str, bool]] = []
    real = html_mod.daily_lift_png

    def spy(daily):  # type: ignore[no-untyped-def]
        seen.append((daily.metric, daily.raw))
        return real(daily)

    monkeypatch.setattr(html_mod, "daily_lift_png", spy)
    rep.to_html()
    assert ("pv_ctr_cuped", True) in seen and len(seen) == len(rep.daily)
