"""Property tests (hypothesis) and simulated A/A tests for the estimators and the mSPRT."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ab_analysis.estimators import Estimand, compare
from ab_analysis.moments import Moments
from ab_analysis.sequential import msprt

values = st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False), min_size=2, max_size=40)
positive = st.lists(st.floats(min_value=0.01, max_value=1e3), min_size=2, max_size=40)
MEAN = Estimand("y")


def _m(xs: list[float]) -> Moments:
    return Moments.from_arrays({"y": xs})


@settings(max_examples=200, deadline=None)
@given(values, values, st.sampled_from(["log", "delta"]), st.booleans())
def test_p_in_unit_interval_and_ci_contains_estimate(
    c: list[float], t: list[float], rel: str, use_t: bool
) -> None:
    r = compare(_m(c), _m(t), MEAN, relative_ci=rel, use_t=use_t)  # type: ignore[arg-type]
    if r.status != "ok":
        assert r.status == "zero_variance" and math.isnan(r.p_value)
        return
    assert 0.0 <= r.p_value <= 1.0
    assert r.abs_ci_low <= r.abs_lift <= r.abs_ci_high
    if math.isfinite(r.rel_ci_low):
        assert r.rel_ci_low <= r.rel_lift + 1e-12 and r.rel_lift <= r.rel_ci_high + 1e-12


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_swapping_arms_flips_sign(c: list[float], t: list[float]) -> None:
    a, b = compare(_m(c), _m(t), MEAN), compare(_m(t), _m(c), MEAN)
    assert a.status == b.status
    if a.status == "ok":
        assert math.isclose(a.abs_lift, -b.abs_lift, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(a.p_value, b.p_value, rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(a.abs_ci_low, -b.abs_ci_high, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=100, deadline=None)
@given(positive, positive, positive, positive)
def test_ratio_p_in_unit_interval(cn: list[float], cd: list[float], tn: list[float], td: list[float]) -> None:
    k, j = min(len(cn), len(cd)), min(len(tn), len(td))
    mc = Moments.from_arrays({"n": cn[:k], "d": cd[:k]})
    mt = Moments.from_arrays({"n": tn[:j], "d": td[:j]})
    r = compare(mc, mt, Estimand("n", "d"))
    if r.status == "ok":
        assert 0.0 <= r.p_value <= 1.0
        assert r.abs_ci_low <= r.abs_lift <= r.abs_ci_high
        assert r.rel_ci_low <= r.rel_lift <= r.rel_ci_high


def _binomial_bounds(n: int, alpha: float) -> tuple[int, int]:
    lo, hi = stats.binom.interval(0.999, n, alpha)
    return int(lo), int(hi)


def test_aa_false_positive_rate_mean_and_ratio() -> None:
    rng = np.random.default_rng(20260101)
    sims, n, alpha = 600, 400, 0.05
    rej_mean = rej_ratio = 0
    for _ in range(sims):
        y = rng.lognormal(0, 1, 2 * n)
        v = rng.poisson(5, 2 * n) + 1.0
        c = rng.binomial(v.astype(int), 0.1).astype(float)
        a, b = slice(0, n), slice(n, 2 * n)
        rej_mean += compare(_m(y[a]), _m(y[b]), MEAN, alpha=alpha).p_value < alpha
        mc = Moments.from_arrays({"c": c[a], "v": v[a]})
        mt = Moments.from_arrays({"c": c[b], "v": v[b]})
        rej_ratio += compare(mc, mt, Estimand("c", "v"), alpha=alpha).p_value < alpha
    lo, hi = _binomial_bounds(sims, alpha)
    assert lo <= rej_mean <= hi, (rej_mean, lo, hi)
    assert lo <= rej_ratio <= hi, (rej_ratio, lo, hi)


def _cumulative(x: np.ndarray, step: int) -> list[Moments]:
    s, q = np.cumsum(x)[step - 1 :: step], np.cumsum(x * x)[step - 1 :: step]
    return [
        Moments.from_sums((i + 1) * step, float(a), float(b))
        for i, (a, b) in enumerate(zip(s, q, strict=True))
    ]


def test_msprt_aa_with_peeking_controls_type_one_error() -> None:
    rng = np.random.default_rng(7)
    sims, looks, per_look, alpha = 150, 15, 100, 0.05
    rejected_seq = rejected_naive = 0
    for _ in range(sims):
        xc = rng.normal(0, 1, looks * per_look)
        xt = rng.normal(0, 1, looks * per_look)
        cl, tl = _cumulative(xc, per_look), _cumulative(xt, per_look)
        res = msprt(cl, tl, MEAN, alpha=alpha, tau=0.2)
        rejected_seq += res.rejected
        rejected_naive += any(compare(c, t, MEAN).p_value < alpha for c, t in zip(cl, tl, strict=True))
        ps = [lk.p_value for lk in res.looks]
        assert all(a >= b for a, b in itertools.pairwise(ps))  # running minimum
        assert all(lk.ci_low <= lk.estimate <= lk.ci_high or lk.ci_low > lk.ci_high for lk in res.looks[:1])
    _, hi = _binomial_bounds(sims, alpha)
    assert rejected_seq <= hi
    assert rejected_naive > rejected_seq  # peeking at fixed-horizon p-values inflates the error


def test_msprt_detects_a_real_effect() -> None:
    rng = np.random.default_rng(3)
    xc, xt = rng.normal(0, 1, 20000), rng.normal(0.1, 1, 20000)
    cl = [_m(xc[: i * 2000]) for i in range(1, 11)]
    tl = [_m(xt[: i * 2000]) for i in range(1, 11)]
    res = msprt(cl, tl, MEAN)
    assert res.rejected
    last = res.looks[-1]
    assert last.ci_low <= 0.1 <= last.ci_high
