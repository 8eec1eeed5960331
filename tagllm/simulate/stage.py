"""``simulate_stage``: train the arms, simulate, write the logs, analyse them, write the reports.

Output folder (default RUN/ab_sim/; every file written atomically, manifest.json last)::

    events.parquet       event log in ab_analysis's input format (user_id, note_id, ts, event,
                         dwell_seconds, is_cold_start) + served_by, position, p_click; pre-period too
                         (is_cold_start: a note published during the simulation < cold_start_days
                         before the impression; see tagllm.simulate.engine.run_sessions)
    assignments.parquet  user_id, experiment, variant, assigned_at + pre-period covariates (pre_*)
                         and user_segment
    users.parquet        the aggregated user-level table (what the report analysed)
    metrics.yaml         the paper's four metrics with their CUPED covariates
    report.json/.md/.html  treatment vs control
    arms.md              every arm's figures and every pairwise comparison (tagllm.simulate.compare)
    compare/<arm>_vs_<baseline>.json   each comparison's ab_analysis report
    manifest.json        "simulation": true, seed, arms, days, users, counts, how to re-analyse

The same report comes from the stock CLI::

    tagllm ab report --events RUN/ab_sim/events.parquet --assignments RUN/ab_sim/assignments.parquet \\
        --metrics RUN/ab_sim/metrics.yaml --out DIR
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from features.errors import ConfigError
from features.io import RunDir, atomic_path, write_json, write_parquet
from tagllm.simulate.config import SimConfig
from tagllm.simulate.engine import DAY_S, assign, run_sessions, select_users
from tagllm.simulate.fresh import FRESH_PREFIX
from tagllm.simulate.metrics import COMPARISON_METRICS, METRIC_NAMES, metric_defs, metric_figures, num, pct
from tagllm.simulate.metrics import p_text as _p_text

__all__ = ["METRIC_NAMES", "SIMULATION_LABEL", "simulate_stage"]

log = logging.getLogger(__name__)

SIMULATION_LABEL = (
    "SIMULATION: synthetic users answering the real recommend pipeline with the data generator's "
    "click/dwell/engagement model; not a measurement on real traffic"
)


def _pre_covariates(events: pd.DataFrame, assignments: pd.DataFrame) -> pd.DataFrame:
    """The comparison metrics' columns over the pre-period, per user, prefixed ``pre_``."""
    from ab_analysis.events import aggregate_events

    defs = metric_defs(False, COMPARISON_METRICS)
    pre = events[events["ts"] < assignments["assigned_at"].min()]
    table = aggregate_events(pre, assignments[["user_id", "variant"]], defs, only_after_assignment=False)
    cols = list(dict.fromkeys(c.column for m in defs for c in m.columns()))
    return table.users[["user_id", *cols]].rename(columns={c: f"pre_{c}" for c in cols})


def _figures(report: Any, plain: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in METRIC_NAMES:
        y = plain.result(name).result
        out[name] = {
            **metric_figures(report.result(name)),
            "without_cuped": {
                "lift": num(y.rel_lift),
                "ci": [num(y.rel_ci_low), num(y.rel_ci_high)],
                "p_value": num(y.p_value),
            },
        }
    return out


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def simulate_stage(
    run_dir: str | Path,
    config: SimConfig | None = None,
    *,
    out: str | Path | None = None,
    num_threads: int = 1,
) -> dict[str, Any]:
    """Run the simulated online A/B test on a synthetic run and write its logs and report.

    Args:
        run_dir: a prepared synthetic run (tags for the treatment arm: student by default).
        config: simulation settings (defaults: 3 pre-period days, 7 experiment days, K = 10).
        out: output folder (default RUN/ab_sim).
        num_threads: torch threads while training and serving.

    Returns:
        The ``ab`` summary section (also written into RUN/summary.json): per metric the control and
        treatment means, relative lift with its CI, p-value; SRM; users per arm; report paths;
        ``"simulation": true``.

    Raises:
        ConfigError: bad settings (naming the option) or a run the simulator cannot reproduce.
        NotFoundError: the run is not prepared, or lacks the treatment's tag source.
    """
    import torch

    from tagllm.simulate.arms import train_arms
    from tagllm.simulate.truth import load_truth

    cfg = config or SimConfig()
    if not isinstance(cfg, SimConfig):
        raise ConfigError(f"config: got {type(cfg).__name__}; expected a SimConfig")
    run = RunDir(run_dir).require()
    out_dir = Path(out) if out is not None else run.simulation_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").unlink(missing_ok=True)  # incomplete until the new manifest lands
    old_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    t_start = time.perf_counter()
    c_start = time.process_time()
    try:
        truth = load_truth(run)
        arms = train_arms(run, cfg)
        t_trained, c_trained = time.perf_counter(), time.process_time()
        users, assignments, start_s = _assignments(arms, cfg)
        variants = dict(zip(assignments["user_id"], assignments["variant"], strict=True))
        fresh, fresh_info = _publisher(run, truth, arms, cfg, start_s)
        events = _simulate(arms, truth, users, variants, cfg, start_s, fresh)
        if fresh is not None:
            fresh_info |= {"published": fresh.published, "tag_seconds": round(fresh.tag_seconds, 2)}
        t_simulated, c_simulated = time.perf_counter(), time.process_time()

        assignments, metrics = _write_logs(run, events, assignments, cfg, out_dir)
        report, plain = _analyze(assignments, metrics, out_dir)
        per_arm, pairs = _compare(events, assignments, cfg, arms, out_dir)
        t_done, c_done = time.perf_counter(), time.process_time()

        figures = _summary(report, plain, cfg, arms, events, assignments, out_dir, users)
        figures["per_arm"], figures["comparisons"] = per_arm, pairs
        figures["fresh_notes"] = fresh_info
        figures["seconds"] = _durations(t_start, t_trained, t_simulated, t_done)
        # CPU seconds of this process: the wall time it would take on an otherwise idle machine.
        figures["cpu_seconds"] = _durations(c_start, c_trained, c_simulated, c_done)
        write_json(_manifest(figures, cfg, arms, assignments, out_dir, start_s), out_dir / "manifest.json")
        run.update_summary("ab", figures)
        return figures
    finally:
        torch.set_num_threads(old_threads)


def _assignments(arms: dict, cfg: SimConfig) -> tuple[list[str], pd.DataFrame, float]:
    """The simulated users, their assignments and the start of day 0 (epoch seconds)."""
    users = select_users(arms["control"].recommender.user_ids(), cfg.users, cfg.seed)
    # Day 0 starts at the first UTC midnight after the run's last event: simulated days are calendar days.
    start_s = float(np.ceil(arms["control"].recommender.now_s / DAY_S) * DAY_S)
    assigned_at = pd.Timestamp((start_s + cfg.pre_days * DAY_S) * 1e9, tz="UTC")
    assignments = assign(users, cfg.experiment, cfg.seed, assigned_at, cfg.arms)
    counts = assignments["variant"].value_counts()
    log.info(
        "simulating %d users (%s), %d pre-period + %d experiment days",
        len(users),
        " / ".join(f"{int(counts.get(a, 0))} {a}" for a in cfg.arms),
        cfg.pre_days,
        cfg.days,
    )
    return users, assignments, start_s


def _write_logs(
    run: RunDir, events: pd.DataFrame, assignments: pd.DataFrame, cfg: SimConfig, out_dir: Path
) -> tuple[pd.DataFrame, list[Any]]:
    """Write events, assignments (with the user segment and pre-period covariates) and metrics.yaml."""
    seg = run.read_table("users")
    if "segment" in seg.columns:
        assignments = assignments.merge(
            seg[["user_id", "segment"]].rename(columns={"segment": "user_segment"}),
            on="user_id",
            how="left",
        )
    cuped = cfg.pre_days > 0
    if cuped:
        assignments = assignments.merge(_pre_covariates(events, assignments), on="user_id", how="left")
    metrics = metric_defs(cuped)
    write_parquet(events, out_dir / "events.parquet")
    write_parquet(assignments, out_dir / "assignments.parquet")
    doc = {"metrics": [m.model_dump(exclude_none=True, exclude_defaults=True) for m in metrics]}
    _write_text(
        out_dir / "metrics.yaml", "# " + SIMULATION_LABEL + "\n" + yaml.safe_dump(doc, sort_keys=False)
    )
    return assignments, metrics


def _analyze(assignments: pd.DataFrame, metrics: list[Any], out_dir: Path) -> tuple[Any, Any]:
    """The report of the written logs (with CUPED when configured) and the plain analysis; writes both."""
    from ab_analysis import analyze, analyze_events
    from ab_analysis.events import aggregate_events

    # The run may hold more arms than control and treatment: this report compares those two.
    report = analyze_events(
        out_dir / "events.parquet", assignments, out_dir / "metrics.yaml", drop_unknown_variants=True
    )
    report = replace(
        report, metadata={**(report.metadata or {}), "simulation": True, "label": SIMULATION_LABEL}
    )
    table = aggregate_events(out_dir / "events.parquet", assignments, metrics)
    plain = analyze(table.users, metric_defs(False), drop_unknown_variants=True)
    write_parquet(table.users, out_dir / "users.parquet")
    _write_report(report, out_dir)
    return report, plain


def _compare(
    events: pd.DataFrame, assignments: pd.DataFrame, cfg: SimConfig, arms: dict, out_dir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per-arm figures and the pairwise comparisons (:mod:`tagllm.simulate.compare`); writes arms.md and
    compare/*.json."""
    from tagllm.simulate.compare import arm_figures, comparisons, markdown

    per_arm = arm_figures(events, assignments)
    per_arm = {a: per_arm[a] for a in cfg.arms if a in per_arm}
    pairs = comparisons(
        out_dir / "events.parquet", assignments, cfg.arms, cuped=cfg.pre_days > 0, out_dir=out_dir / "compare"
    )
    what = {name: str(arm.description.get("what", "")) for name, arm in arms.items()}
    _write_text(out_dir / "arms.md", markdown(per_arm, pairs, what, SIMULATION_LABEL))
    return per_arm, pairs


def _durations(start: float, trained: float, simulated: float, done: float) -> dict[str, float]:
    return {
        "train": round(trained - start, 2),
        "simulate": round(simulated - trained, 2),
        "analyze": round(done - simulated, 2),
        "total": round(done - start, 2),
    }


def _publisher(run: RunDir, truth: Any, arms: dict, cfg: SimConfig, start_s: float) -> tuple[Any, dict]:
    """The fresh-note publisher (None when disabled) and its description for the summary."""
    from tagllm.simulate.fresh import Publisher, fresh_tag_source

    if cfg.fresh_notes_per_day == 0:
        info = {"per_day": 0, "cold_start": "catalog notes published after the training cutoff"}
        return None, info
    source, tag_fn = fresh_tag_source(run, arms["treatment"].description["tag_source"])
    info = {
        "per_day": cfg.fresh_notes_per_day,
        "treatment_tags": source,
        "control_tags": "none (category only)",
        "cold_start": f"notes published during the simulation, < {cfg.cold_start_days:g} days before the impression",
    }
    return Publisher(truth, tag_fn, cfg, start_s), info


def _simulate(
    arms: dict,
    truth: Any,
    users: list[str],
    variants: dict[str, str],
    cfg: SimConfig,
    start_s: float,
    fresh: Any = None,
) -> pd.DataFrame:
    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.pre_days + cfg.days,
        desc="simulated days",
        unit="day",
        disable=not cfg.progress,
        leave=False,
    )
    try:
        events = run_sessions(
            arms, truth, users, variants, cfg, start_s, on_day=lambda _day: bar.update(1), fresh=fresh
        )
    finally:
        bar.close()
    log.info(
        "simulated %d events (%d impressions, %d clicks)",
        len(events),
        int((events["event"] == "impression").sum()),
        int((events["event"] == "click").sum()),
    )
    return events


def _write_report(report: Any, out_dir: Path) -> None:
    report.to_json(out_dir / "report.json")
    md = report.to_markdown()
    _write_text(out_dir / "report.md", f"> **{SIMULATION_LABEL}**\n\n{md}")
    html = report.to_html()
    banner = (
        '<p style="background:#fff3cd;border:1px solid #e0c060;padding:8px">'
        f"<b>{SIMULATION_LABEL.split(':')[0]}</b>:{SIMULATION_LABEL.split(':', 1)[1]}</p>"
    )
    _write_text(out_dir / "report.html", html.replace("<body>", "<body>" + banner, 1))


def _summary(
    report: Any,
    plain: Any,
    cfg: SimConfig,
    arms: dict,
    events: pd.DataFrame,
    assignments: pd.DataFrame,
    out_dir: Path,
    users: list[str],
) -> dict[str, Any]:
    metrics = _figures(report, plain)
    s = report.srm
    exp = events[events["ts"] >= assignments["assigned_at"].min()]
    imp = exp[exp["event"] == "impression"]
    return {
        "simulation": True,
        "label": SIMULATION_LABEL,
        "experiment": cfg.experiment,
        "seed": cfg.seed,
        "treatment_tags": arms["treatment"].description["tag_source"],
        "days": cfg.days,
        "pre_days": cfg.pre_days,
        "k": cfg.k,
        "arms": list(cfg.arms),
        "users": {
            **{a: int((assignments["variant"] == a).sum()) for a in cfg.arms},
            "control": int(s.counts[0]),
            "treatment": int(s.counts[1]),
            "total": len(users),
        },
        "srm": {
            "status": "mismatch" if s.mismatch else s.status,
            "p_value": num(s.p_value),
            "counts": list(s.counts),
        },
        "ci_convention": f"relative lift T/C - 1 with a {100 * (1 - report.alpha):.0f}% CI (log-scale delta method), "
        f"Welch t; p-values two-sided, {report.correction}-adjusted in p_adjusted; CUPED on the pre-period"
        + ("" if cfg.pre_days > 0 else " (off: no pre-period)"),
        "metrics": metrics,
        "headline": {
            name: f"{pct(m['lift'])} [{pct(m['ci'][0])}, {pct(m['ci'][1])}], " + _p_text(m["p_value"])
            for name, m in metrics.items()
        },
        "true_ctr": {
            arm: num(float(imp.loc[imp["served_by"] == arm, "p_click"].mean()))
            if (imp["served_by"] == arm).any()
            else None
            for arm in cfg.arms
        },
        "events": len(events),
        "experiment_impressions": len(imp),
        "cold_start_impression_share": num(float(imp["is_cold_start"].mean())) if len(imp) else None,
        "fresh_impression_share": num(float(imp["note_id"].str.startswith(FRESH_PREFIX).mean()))
        if len(imp)
        else None,
        "report": str(out_dir / "report.json"),
        "html": str(out_dir / "report.html"),
    }


def _manifest(
    figures: dict[str, Any],
    cfg: SimConfig,
    arms: dict,
    assignments: pd.DataFrame,
    out_dir: Path,
    start_s: float,
) -> dict[str, Any]:
    start = pd.Timestamp(start_s * 1e9, tz="UTC")
    return {
        "simulation": True,
        "label": SIMULATION_LABEL,
        "seed": cfg.seed,
        "experiment": cfg.experiment,
        "assignment": f"sha256('{cfg.experiment}:{cfg.seed}:' + user_id) bucket b of 10,000 -> arm "
        f"[{', '.join(cfg.arms)}][b * {len(cfg.arms)} // 10,000]",
        "serving_state": "pre-period events reach every arm's recommender; experiment events only the arm "
        "that served them (own note counts and histories per arm)",
        "arms": {name: arm.description for name, arm in arms.items()},
        "days": {
            "pre": cfg.pre_days,
            "experiment": cfg.days,
            "start": start.isoformat(),
            "assigned_at": pd.Timestamp(assignments["assigned_at"].min()).isoformat(),
            "end": (start + pd.Timedelta(days=cfg.pre_days + cfg.days)).isoformat(),
        },
        "users": figures["users"],
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("retrieval", "ranker", "progress")},
        "retrieval_config": asdict(cfg.retrieval),
        "ranker_config": asdict(cfg.ranker),
        "response_model": "features.datasets.synthetic.behavior: preference_match, click_logit, dwell_log_median, "
        "engagement_logit with BehaviorParams() (the generator's own), each shown note an impression",
        "files": [*sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".")), "manifest.json"],
        "reanalyse": f"tagllm ab report --events {out_dir / 'events.parquet'} --assignments "
        f"{out_dir / 'assignments.parquet'} --metrics {out_dir / 'metrics.yaml'} --out DIR",
        "reanalyse_pairs": "the same with --control BASELINE --treatment ARM for another pair (arms.md; "
        "the pre_warm_* covariates of pv_ctr_warm are in assignments.parquet)",
        "figures": figures,
    }
