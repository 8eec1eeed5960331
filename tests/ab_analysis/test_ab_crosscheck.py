"""Golden cross-checks against independent engines: scipy, statsmodels and tea-tasting (same conventions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

# Submodule imports on purpose: pytest puts tests/ on sys.path, where tests/ab_analysis would shadow the
# package's __init__ (a namespace package); test_ab_public_api checks the top-level API in a subprocess.
from ab_analysis.analysis import analyze
from ab_analysis.corrections import adjust_pvalues
from ab_analysis.metrics import parse_metrics
from ab_analysis.power import minimum_detectable_effect, power, sample_size
from ab_analysis.report import Report
from ab_analysis.srm import srm_check

tt = pytest.importorskip("tea_tasting", reason="tea-tasting (pinned in requirements/cpu.lock) not installed")

REL = 1e-6


def _close(a: float, b: float, rel: float = REL) -> None:
    assert a == pytest.approx(b, rel=rel, abs=1e-12)


def _synthetic(n: int = 5000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    treat = rng.random(n) < 0.45
    views = rng.poisson(6, n) + 1.0
    clicks = rng.binomial(views.astype(int), np.where(treat, 0.11, 0.10)).astype(float)
    pre_views = views + rng.poisson(2, n)
    pre_clicks = rng.binomial(pre_views.astype(int), 0.1).astype(float)
    y = rng.lognormal(1, 1, n) + 0.5 * pre_clicks + np.where(treat, 0.1, 0.0)
    return pd.DataFrame(
        {
            "variant": np.where(treat, "treatment", "control"),
            "views": views,
            "clicks": clicks,
            "y": y,
            "pre_y": 0.5 * pre_clicks + rng.normal(0, 1, n),
            "pre_views": pre_views,
            "pre_clicks": pre_clicks,
        }
    )


def _arms(df: pd.DataFrame, col: str, control: str = "control", treatment: str = "treatment"):
    return df.loc[df[col] == control], df.loc[df[col] == treatment]


def _linearized(df: pd.DataFrame, num: str, den: str) -> np.ndarray:
    """Delta-method linearization R + (num - R·den)/mean(den): its mean is R, its variance the delta one."""
    r = df[num].sum() / df[den].sum()
    return (r + (df[num] - r * df[den]) / df[den].mean()).to_numpy()


def _ours(df: pd.DataFrame, metrics: list[dict], variant_col: str = "variant", **kw) -> Report:
    return analyze(df, parse_metrics(metrics), variant_col=variant_col, correction="none", **kw)


def _check_mean(df: pd.DataFrame, col: str, variant_col: str, control: str, treatment: str) -> None:
    rep = _ours(
        df,
        [{"name": "m", "type": "mean", "numerator": col}],
        variant_col,
        control=control,
        treatment=treatment,
    )
    r = rep.result("m").result
    c, t = _arms(df, variant_col, control, treatment)
    sp = stats.ttest_ind(t[col], c[col], equal_var=False)
    _close(r.statistic, sp.statistic)
    _close(r.p_value, sp.pvalue)
    _close(r.df, sp.df)
    cm = CompareMeans(DescrStatsW(t[col].to_numpy()), DescrStatsW(c[col].to_numpy()))
    lo, hi = cm.tconfint_diff(alpha=0.05, usevar="unequal")
    _close(r.abs_ci_low, lo)
    _close(r.abs_ci_high, hi)
    _close(r.abs_se, cm.std_meandiff_separatevar)
    tea = tt.Experiment(m=tt.Mean(col), variant=variant_col).analyze(df, control=control)["m"]
    for ours, theirs in [
        (r.control_mean, tea.control),
        (r.treatment_mean, tea.treatment),
        (r.abs_lift, tea.effect_size),
        (r.abs_ci_low, tea.effect_size_ci_lower),
        (r.abs_ci_high, tea.effect_size_ci_upper),
        (r.rel_lift, tea.rel_effect_size),
        (r.rel_ci_low, tea.rel_effect_size_ci_lower),
        (r.rel_ci_high, tea.rel_effect_size_ci_upper),
        (r.p_value, tea.pvalue),
        (r.statistic, tea.statistic),
    ]:
        _close(ours, theirs)


def _check_ratio(
    df: pd.DataFrame, num: str, den: str, variant_col: str, control: str, treatment: str
) -> None:
    rep = _ours(
        df,
        [{"name": "ctr", "type": "ratio", "numerator": num, "denominator": den}],
        variant_col,
        control=control,
        treatment=treatment,
    )
    r = rep.result("ctr").result
    c, t = _arms(df, variant_col, control, treatment)
    lc, lt = _linearized(c, num, den), _linearized(t, num, den)
    sp = stats.ttest_ind(lt, lc, equal_var=False)
    _close(r.control_mean, c[num].sum() / c[den].sum())
    _close(r.treatment_mean, t[num].sum() / t[den].sum())
    _close(r.statistic, sp.statistic)
    _close(r.p_value, sp.pvalue)
    cm = CompareMeans(DescrStatsW(lt), DescrStatsW(lc))
    _close(r.abs_se, cm.std_meandiff_separatevar)
    lo, hi = cm.tconfint_diff(alpha=0.05, usevar="unequal")
    _close(r.abs_ci_low, lo)
    _close(r.abs_ci_high, hi)
    tea = tt.Experiment(ctr=tt.RatioOfMeans(num, den), variant=variant_col).analyze(df, control=control)[
        "ctr"
    ]
    for ours, theirs in [
        (r.control_mean, tea.control),
        (r.treatment_mean, tea.treatment),
        (r.abs_lift, tea.effect_size),
        (r.abs_ci_low, tea.effect_size_ci_lower),
        (r.abs_ci_high, tea.effect_size_ci_upper),
        (r.rel_ci_low, tea.rel_effect_size_ci_lower),
        (r.rel_ci_high, tea.rel_effect_size_ci_upper),
        (r.p_value, tea.pvalue),
    ]:
        _close(ours, theirs)


def test_mean_metric_matches_scipy_statsmodels_tea_synthetic() -> None:
    _check_mean(_synthetic(), "y", "variant", "control", "treatment")


def test_ratio_metric_delta_method_matches_synthetic() -> None:
    _check_ratio(_synthetic(), "clicks", "views", "variant", "control", "treatment")


def test_real_ab_views_clicks(shared_data) -> None:
    path = shared_data("ab-views-clicks") / "views_clicks.csv"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    df = pd.read_csv(path)
    _check_mean(df, "views", "group", "control", "test")
    _check_mean(df, "clicks", "group", "control", "test")
    _check_ratio(df, "clicks", "views", "group", "control", "test")


def test_cuped_mean_and_ratio_match_tea() -> None:
    df = _synthetic(8000, seed=3)
    rep = _ours(
        df,
        [
            {"name": "y", "type": "mean", "numerator": "y", "covariate": "pre_y"},
            {
                "name": "ctr",
                "type": "ratio",
                "numerator": "clicks",
                "denominator": "views",
                "covariate": {"numerator": "pre_clicks", "denominator": "pre_views"},
            },
        ],
    )
    tea = tt.Experiment(
        y=tt.Mean("y", covariate="pre_y"),
        ctr=tt.RatioOfMeans("clicks", "views", numer_covariate="pre_clicks", denom_covariate="pre_views"),
    ).analyze(df, control="control")
    for name in ("y", "ctr"):
        r, t = rep.result(name).result, tea[name]
        assert r.theta != 0
        for ours, theirs in [
            (r.control_mean, t.control),
            (r.treatment_mean, t.treatment),
            (r.abs_ci_low, t.effect_size_ci_lower),
            (r.abs_ci_high, t.effect_size_ci_upper),
            (r.rel_ci_low, t.rel_effect_size_ci_lower),
            (r.p_value, t.pvalue),
        ]:
            _close(ours, theirs)
    plain = _ours(df, [{"name": "y", "type": "mean", "numerator": "y"}]).result("y").result
    assert rep.result("y").result.abs_se < plain.abs_se  # the covariate explains variance


def test_corrections_match_statsmodels() -> None:
    p = [*np.random.default_rng(0).uniform(0, 0.2, 40).tolist(), float("nan")]
    for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
        adj = adjust_pvalues(p, ours)
        ref = multipletests(p[:-1], method=theirs)[1]
        np.testing.assert_allclose(adj[:-1], ref, rtol=1e-12)
        assert np.isnan(adj[-1])


def test_power_and_mde_match_statsmodels() -> None:
    sigma, n = 2.0, 1000
    effect = minimum_detectable_effect(sigma, n, n, alpha=0.05, target_power=0.8)
    ref = NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=0.05, power=0.8, ratio=1.0)
    _close(effect / sigma, ref, rel=1e-4)
    _close(power(effect, sigma, n, n), NormalIndPower().power(effect / sigma, n, 0.05, ratio=1.0))
    total = sample_size(effect, sigma)
    assert abs(total - 2 * n) <= 2


def test_srm_matches_scipy() -> None:
    res = srm_check([5100, 4900])
    ref = stats.chisquare([5100, 4900])
    _close(res.p_value, ref.pvalue)
    assert not res.mismatch
    assert srm_check([5500, 4500]).mismatch
