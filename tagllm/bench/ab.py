"""Benchmark: synthetic users × the paper's 4 metrics × 2 segments; prints JSON.

``python -m tagllm.bench.ab --users 10000000 --json`` generates the table (float32-free, float64 columns),
runs :func:`ab_analysis.analyze` (4 metrics, overall + 2 segment columns with 2 values each, capping on
view duration, Holm), then tea-tasting (when installed) on the same DataFrame: the same 4 metrics overall
and per segment value (tea-tasting has no capping; its Welch/delta-method conventions are ours). Peak RSS
is the process's ``ru_maxrss`` read after each phase, so the analysis peak is read before tea-tasting runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["make_users", "run"]

log = logging.getLogger(__name__)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_users(n: int, seed: int = 0, lift: float = 0.01) -> pd.DataFrame:
    """A synthetic user-level table with the default metrics' columns and two segment columns."""
    rng = np.random.default_rng(seed)
    treat = rng.random(n) < 0.5
    variant = pd.Categorical.from_codes(treat.astype(np.int8), categories=["control", "treatment"])
    impressions = rng.poisson(20, n).astype(np.float64)
    ctr = np.clip(rng.beta(2, 18, n) * np.where(treat, 1 + lift, 1.0), 0, 1)
    clicks = rng.binomial(impressions.astype(np.int64), ctr).astype(np.float64)
    cold_imp = rng.binomial(impressions.astype(np.int64), 0.1).astype(np.float64)
    cold_clicks = rng.binomial(cold_imp.astype(np.int64), np.clip(ctr * 1.2, 0, 1)).astype(np.float64)
    duration = clicks * rng.lognormal(3.0, 1.0, n)
    interactions = rng.poisson(0.3 * clicks).astype(np.float64)
    user_type = pd.Categorical.from_codes(
        (rng.random(n) < 0.3).astype(np.int8), categories=["returning", "new"]
    )
    platform = pd.Categorical.from_codes((rng.random(n) < 0.5).astype(np.int8), categories=["android", "ios"])
    return pd.DataFrame(
        {
            "user_id": np.arange(n, dtype=np.int64),
            "variant": variant,
            "view_duration": duration,
            "interactions": interactions,
            "clicks": clicks,
            "impressions": impressions,
            "cold_start_clicks": cold_clicks,
            "cold_start_impressions": cold_imp,
            "user_type": user_type,
            "platform": platform,
        }
    )


def _tea(users: pd.DataFrame, segments: list[str]) -> float | None:
    try:
        import tea_tasting as tt
    except ImportError:
        return None
    exp = tt.Experiment(
        view_duration_per_user=tt.Mean("view_duration"),
        interactions_per_user=tt.Mean("interactions"),
        pv_ctr=tt.RatioOfMeans("clicks", "impressions"),
        pv_ctr_cold_start=tt.RatioOfMeans("cold_start_clicks", "cold_start_impressions"),
    )
    data = users.assign(variant=users["variant"].cat.codes.astype(np.int64))
    t0 = time.perf_counter()
    exp.analyze(data, control=0)
    for s in segments:
        for v in users[s].cat.categories:
            exp.analyze(data[users[s] == v], control=0)
    return time.perf_counter() - t0


def run(n: int, seed: int = 0, with_tea: bool = True) -> dict[str, Any]:
    """Generate, analyse, compare; returns the JSON-ready measurements."""
    from ab_analysis.analysis import analyze

    t0 = time.perf_counter()
    users = make_users(n, seed)
    gen_s = time.perf_counter() - t0
    rss_data = _peak_mib()
    segments = ["user_type", "platform"]
    t0 = time.perf_counter()
    report = analyze(users, None, segments=segments)
    ours_s = time.perf_counter() - t0
    rss_ours = _peak_mib()
    tea_s = _tea(users, segments) if with_tea else None
    out: dict[str, Any] = {
        "users": n,
        "metrics": 4,
        "segment_columns": len(segments),
        "result_rows": len(report.results),
        "generate_s": round(gen_s, 3),
        "analyze_s": round(ours_s, 3),
        "peak_rss_mib_after_generate": round(rss_data, 1),
        "peak_rss_mib_after_analyze": round(rss_ours, 1),
        "analyze_extra_rss_mib": round(rss_ours - rss_data, 1),
        "tea_tasting_s": None if tea_s is None else round(tea_s, 3),
        "ratio_ours_over_tea": None if tea_s is None else round(ours_s / tea_s, 3),
        "peak_rss_mib_end": round(_peak_mib(), 1),
        "pv_ctr_rel_lift": report.result("pv_ctr").result.rel_lift,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``python -m tagllm.bench.ab``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-tea", action="store_true", help="skip the tea-tasting comparison")
    p.add_argument("--json", action="store_true", help="print JSON only")
    a = p.parse_args(argv)
    if a.users < 10:
        p.error(f"--users {a.users}: expected at least 10")
    res = run(a.users, a.seed, not a.no_tea)
    if a.json:
        sys.stdout.write(json.dumps(res) + "\n")
    else:
        for k, v in res.items():
            sys.stdout.write(f"{k:32s} {v}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
