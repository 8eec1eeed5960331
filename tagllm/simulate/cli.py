"""``simulate``: the simulated online A/B test, a click command for the ``tagllm ab`` group.

``tagllm/cli.py`` attaches it to the ``ab`` group (its ``ATTACHED`` table), since ``ab_analysis``
imports no sibling package; nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["simulate"]

TAG_CHOICES = ["student", "teacher", "ground_truth", "reference"]


@click.command("simulate")
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A prepared synthetic run (RUN_DIR) with tags for the treatment arm.",
)
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True, help="Experiment days.")
@click.option(
    "--pre-days",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Pre-period days, everyone on control (CUPED covariates; 0 = no CUPED).",
)
@click.option("--users", type=click.IntRange(min=2), default=None, help="Simulate at most this many users.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--k", type=click.IntRange(min=1), default=10, show_default=True, help="Notes shown per session."
)
@click.option(
    "--candidates",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Retrieval candidates ranked per session.",
)
@click.option(
    "--sessions-per-day",
    type=click.FloatRange(min=0, max=100, min_open=True),
    default=1.0,
    show_default=True,
    help="Mean sessions per user per day (scaled by each user's true activity).",
)
@click.option(
    "--treatment-tags",
    type=click.Choice(TAG_CHOICES),
    default="student",
    show_default=True,
    help="Tag source of the treatment arm (student falls back to the run's best source when absent).",
)
@click.option(
    "--fresh-notes-per-day",
    type=click.IntRange(min=0, max=10_000),
    default=60,
    show_default=True,
    help="Brand-new notes published each simulated day (the cold-start notes; 0 = none).",
)
@click.option(
    "--cold-start-days",
    type=click.FloatRange(min=0, max=365, min_open=True),
    default=3.0,
    show_default=True,
    help="An impression is cold-start when its note was published during the simulation less than "
    "this many days before.",
)
@click.option(
    "--cold-candidates",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Both arms: extra candidates per session from the cold-start notes.",
)
@click.option(
    "--cold-slot-every",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Both arms: every N-th slot goes to the best-ranked cold-start candidate (0 = off).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder (default: RUN/ab_sim).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary figures as JSON.")
def simulate(
    run_dir: Path,
    days: int,
    pre_days: int,
    users: int | None,
    seed: int,
    k: int,
    candidates: int,
    sessions_per_day: float,
    treatment_tags: str,
    fresh_notes_per_day: int,
    cold_start_days: float,
    cold_candidates: int,
    cold_slot_every: int,
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """SIMULATED online A/B test of tag features on the synthetic community.

    Users are split 50/50 by a salted hash of user_id into control (recommender without tag
    features) and treatment (with tags); the real recommend pipeline serves their sessions and the
    synthetic users answer from their true preferences. Writes events and assignments in the
    `tagllm ab report` input format, and report.{json,md,html}, into RUN/ab_sim (or --out).
    """
    from tagllm.simulate import METRIC_NAMES, SimConfig, simulate_stage

    if candidates < k:
        raise click.BadParameter(f"got {candidates}; expected at least --k ({k})", param_hint="--candidates")
    cfg = SimConfig(
        days=days,
        pre_days=pre_days,
        users=users,
        seed=seed,
        k=k,
        candidates=candidates,
        sessions_per_day=sessions_per_day,
        treatment_tags=treatment_tags,
        fresh_notes_per_day=fresh_notes_per_day,
        cold_start_days=cold_start_days,
        cold_candidates=cold_candidates,
        cold_slot_every=cold_slot_every,
        progress=True,
    )
    figures = simulate_stage(run_dir, cfg, out=out_dir)
    if as_json:
        click.echo(json.dumps(figures, indent=2, default=str))
        return
    click.echo(f"{figures['label']}")
    u = figures["users"]
    srm = figures["srm"]
    click.echo(
        f"users: control {u['control']}, treatment {u['treatment']}; "
        f"SRM {srm['status']} (p = {srm['p_value']})"
    )
    for name in METRIC_NAMES:
        m = figures["metrics"][name]
        click.echo(
            f"{name:24s} control {m['control_mean']}  treatment {m['treatment_mean']}  {figures['headline'][name]}"
        )
    click.echo(f"report: {figures['html']}")
