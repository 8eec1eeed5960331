"""Per-arm figures and pairwise comparisons of a multi-arm simulated experiment, from one run's logs.

``ab_analysis`` compares two variants. A run with more arms is analysed pair by pair on one
user-level table (the events aggregated once; each pairwise analysis ignores the users of the other
arms): every arm against control, and every policy arm (:data:`~tagllm.simulate.config.POLICY_ARMS`)
against treatment. Each pair is the existing analysis (Welch t, delta method for ratios, log-scale
relative CI, CUPED on the pre-period, Holm over the pair's metrics); nothing corrects across pairs.

Per arm, over the experiment days: users, impressions, the fresh-note share of impressions (notes
published during the simulation), the cold-start share, page-view CTR overall, on warm impressions
(not cold-start) and on cold-start impressions, each with a 95 % CI (delta method over the arm's
users, the randomization unit), and the response model's mean click probability of the shown notes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from tagllm.simulate.config import POLICY_ARMS
from tagllm.simulate.fresh import FRESH_PREFIX
from tagllm.simulate.metrics import (
    COMPARISON_METRICS,
    WARM_METRIC,
    metric_defs,
    metric_figures,
    num,
    p_text,
    pct,
)

__all__ = ["arm_figures", "arm_pairs", "comparisons", "markdown", "ratio_ci"]

#: The metrics each comparison reports, in table order.
_SHOWN = ("pv_ctr_cold_start", "pv_ctr", "view_duration_per_user", WARM_METRIC, "interactions_per_user")


def ratio_ci(numerator: np.ndarray, denominator: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """``sum(numerator) / sum(denominator)`` over units with a delta-method normal CI.

    Args:
        numerator: (n,) per-unit numerators (e.g. a user's clicks).
        denominator: (n,) per-unit denominators (e.g. the user's impressions).
        alpha: two-sided level.

    Returns:
        ``{"value", "ci": [low, high], "n"}``; value and CI None when the denominators sum to 0, the CI
        None with fewer than 2 units.
    """
    x = np.asarray(numerator, np.float64)
    y = np.asarray(denominator, np.float64)
    n = len(x)
    if n == 0 or y.sum() <= 0:
        return {"value": None, "ci": [None, None], "n": n}
    r = float(x.sum() / y.sum())
    if n < 2:
        return {"value": num(r), "ci": [None, None], "n": n}
    linear = (x - r * y) / y.mean()
    half = float(stats.norm.ppf(1 - alpha / 2) * linear.std(ddof=1) / np.sqrt(n))
    return {"value": num(r), "ci": [num(r - half), num(r + half)], "n": n}


def arm_pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """(arm, baseline) pairs: every arm vs control, then every policy arm vs treatment."""
    pairs = [(a, "control") for a in arms if a != "control"]
    return pairs + [(a, "treatment") for a in arms if a in POLICY_ARMS and "treatment" in arms]


def arm_figures(events: pd.DataFrame, assignments: pd.DataFrame, alpha: float = 0.05) -> dict[str, Any]:
    """Per-arm figures over the experiment days (see the module docstring), keyed by arm.

    Args:
        events: the simulation's event log (``served_by``, ``is_cold_start``, ``p_click`` included).
        assignments: user_id, variant, assigned_at.
        alpha: two-sided level of the CIs.
    """
    start = assignments["assigned_at"].min()
    exp = events[events["ts"] >= start]
    fresh = exp["note_id"].astype(str).str.startswith(FRESH_PREFIX).to_numpy()
    cold = exp["is_cold_start"].to_numpy(bool)
    imp = (exp["event"] == "impression").to_numpy()
    clk = (exp["event"] == "click").to_numpy()
    cols = {
        "impressions": imp,
        "clicks": clk,
        "fresh_impressions": imp & fresh,
        "cold_impressions": imp & cold,
        "cold_clicks": clk & cold,
        "warm_impressions": imp & ~cold,
        "warm_clicks": clk & ~cold,
    }
    per_user = pd.DataFrame({k: v.astype(np.float64) for k, v in cols.items()})
    per_user["p_click"] = np.where(imp, exp["p_click"].to_numpy(np.float64), 0.0)
    per_user["user_id"] = exp["user_id"].to_numpy()
    sums = per_user.groupby("user_id").sum()
    out: dict[str, Any] = {}
    for arm, users in assignments.groupby("variant", sort=False)["user_id"]:
        s = sums.reindex(users.to_numpy(), fill_value=0.0)
        total = float(s["impressions"].sum())
        out[str(arm)] = {
            "users": len(s),
            "impressions": int(total),
            "fresh_share": ratio_ci(s["fresh_impressions"], s["impressions"], alpha),
            "cold_start_share": num(float(s["cold_impressions"].sum()) / total) if total else None,
            "pv_ctr": ratio_ci(s["clicks"], s["impressions"], alpha),
            "warm_ctr": ratio_ci(s["warm_clicks"], s["warm_impressions"], alpha),
            "cold_start_ctr": ratio_ci(s["cold_clicks"], s["cold_impressions"], alpha),
            "true_ctr": num(float(s["p_click"].sum()) / total) if total else None,
        }
    return out


def _pair_figures(report: Any) -> dict[str, Any]:
    s = report.srm
    out: dict[str, Any] = {
        "treatment": report.treatment,
        "control": report.control,
        "users": [int(c) for c in s.counts],
        "srm": {"status": "mismatch" if s.mismatch else s.status, "p_value": num(s.p_value)},
        "metrics": {},
    }
    for name in COMPARISON_METRICS:
        out["metrics"][name] = metric_figures(report.result(name))
    return out


def comparisons(
    events: str | Path | pd.DataFrame,
    assignments: pd.DataFrame,
    arms: Sequence[str],
    *,
    cuped: bool,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Every pair of :func:`arm_pairs` analysed with ``ab_analysis`` on one aggregation of ``events``.

    Args:
        events: the event log (or its parquet file).
        assignments: user_id, variant, assigned_at (+ the ``pre_*`` covariates when ``cuped``).
        arms: the run's arms.
        cuped: use the pre-period covariates.
        out_dir: when given, each pair's report JSON is written to ``out_dir/<arm>_vs_<baseline>.json``.

    Returns:
        ``{"<arm>_vs_<baseline>": {treatment, control, users, srm, metrics: {name: lift, ci, p, ...}}}``.
    """
    from ab_analysis import analyze
    from ab_analysis.events import aggregate_events

    table = aggregate_events(events, assignments, metric_defs(False, COMPARISON_METRICS))
    metrics = metric_defs(cuped, COMPARISON_METRICS)
    out: dict[str, Any] = {}
    for arm, base in arm_pairs(arms):
        report = analyze(
            table.users,
            metrics,
            control=base,
            treatment=arm,
            drop_unknown_variants=True,  # the table holds every arm; this pair analyses two
            metadata={"simulation": True, "pair": True},
        )
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            report.to_json(out_dir / f"{arm}_vs_{base}.json")
        out[f"{arm}_vs_{base}"] = _pair_figures(report)
    return out


def _ci_text(x: dict[str, Any], scale: float = 1.0, digits: int = 4) -> str:
    if x["value"] is None:
        return "n/a"
    lo, hi = x["ci"]
    if lo is None:
        return f"{scale * x['value']:.{digits}f}"
    return f"{scale * x['value']:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"


def _lift_text(m: dict[str, Any]) -> str:
    if m["status"] != "ok":
        return f"n/a ({m['status']})"
    return f"{pct(m['lift'])} [{pct(m['ci'][0])}, {pct(m['ci'][1])}], {p_text(m['p_value'])}"


def markdown(per_arm: dict[str, Any], pairs: dict[str, Any], what: dict[str, str], label: str) -> str:
    """The arms table and the comparisons table as Markdown (``what``: a line per arm)."""
    lines = [
        f"> **{label}**",
        "",
        "## Arms (experiment days; users hashed evenly into the arms)",
        "",
        "| arm | users | impressions | fresh-note share [95% CI] | cold-start share | pv_ctr [95% CI] "
        "| warm CTR [95% CI] | cold-start CTR [95% CI] | true CTR of shown notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, f in per_arm.items():
        share = f["cold_start_share"]
        lines.append(
            f"| {arm} | {f['users']} | {f['impressions']} | {_ci_text(f['fresh_share'], 100, 2)} % "
            f"| {'n/a' if share is None else f'{100 * share:.2f} %'} | {_ci_text(f['pv_ctr'])} "
            f"| {_ci_text(f['warm_ctr'])} | {_ci_text(f['cold_start_ctr'])} | {f['true_ctr']} |"
        )
    lines += ["", *(f"- **{arm}**: {text}" for arm, text in what.items())]
    lines += [
        "",
        "## Comparisons (pairwise from the same run's logs; relative lift with 95% CI, CUPED, "
        "Holm within each pair, none across pairs)",
        "",
        "| comparison | users | cold-start pv_ctr | pv_ctr | view duration / user | warm CTR "
        "| interactions / user | SRM |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in pairs.values():
        cells = " | ".join(_lift_text(c["metrics"][m]) for m in _SHOWN)
        srm = c["srm"]
        users = f"{c['users'][1]} vs {c['users'][0]}"
        lines.append(f"| {c['treatment']} vs {c['control']} | {users} | {cells} | {srm['status']} |")
    return "\n".join(lines) + "\n"
