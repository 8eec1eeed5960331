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
# The simulator's arms (tagllm.simulate.config.ARMS; not imported here so that --help stays light).
ARM_CHOICES = ("control", "treatment", "tags_explore", "tags_quota")


def _arms(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(a.strip() for a in value.split(",") if a.strip())
    bad = [a for a in names if a not in ARM_CHOICES]
    if bad or len(set(names)) != len(names) or not {"control", "treatment"} <= set(names):
        raise click.BadParameter(
            f"got {value!r}; expected distinct names among {', '.join(ARM_CHOICES)}, comma-separated, "
            "with control and treatment"
        )
    return names


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
    "--arms",
    default=",".join(ARM_CHOICES),
    show_default=True,
    callback=_arms,
    help="Arms users are hashed into evenly, comma-separated: control (no tags), treatment (tags), "
    "tags_explore (tags + the exploration policy), tags_quota (tags + the fixed fresh-note quota). "
    "The tag arms share one trained model; each arm keeps its own serving state. "
    "control,treatment is the two-arm test.",
)
@click.option(
    "--cold-candidates",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Every arm: extra candidates per session from the cold-start notes (the cold-start channel).",
)
@click.option(
    "--cold-slot-every",
    type=click.IntRange(min=1),
    default=None,
    help="tags_quota arm: every N-th slot goes to the best-ranked cold-start candidate.  [default: 5]",
)
@click.option(
    "--explore-policy",
    type=click.Choice(["ucb", "thompson"]),
    default="ucb",
    show_default=True,
    help="tags_explore arm: rank by the upper bound (ucb) or a draw (thompson) of each note's Beta "
    "posterior around the ranker's click probability.",
)
@click.option(
    "--explore-prior-impressions",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="tags_explore arm: impressions' worth of evidence in the ranker's estimate for a note never "
    "shown (larger = less exploration).",
)
@click.option(
    "--explore-ucb-beta",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="tags_explore arm with ucb: the bonus in posterior standard deviations.",
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
    arms: tuple[str, ...],
    cold_candidates: int,
    cold_slot_every: int | None,
    explore_policy: str,
    explore_prior_impressions: float,
    explore_ucb_beta: float,
    out_dir: Path | None,
    as_json: bool,
) -> None:
    """SIMULATED online A/B test of tag features on the synthetic community.

    Users are split evenly by a salted hash of user_id into the --arms: control (recommender without
    tag features), treatment (with tags) and, when asked for, tags_explore and tags_quota (the
    treatment's models with an exploration policy or a fixed fresh-note quota); the real recommend
    pipeline serves their sessions and the synthetic users answer from their true preferences. Writes
    events and assignments in the `tagllm ab report` input format, report.{json,md,html} (treatment
    vs control) and arms.md (every arm, every pair) into RUN/ab_sim (or --out).
    """
    from ranking.recommend.exploration import Exploration
    from tagllm.simulate import METRIC_NAMES, SimConfig, simulate_stage

    if candidates < k:
        raise click.BadParameter(f"got {candidates}; expected at least --k ({k})", param_hint="--candidates")
    if cold_slot_every is not None and "tags_quota" not in arms:
        raise click.BadParameter(
            f"got {cold_slot_every}; only the tags_quota arm has the quota: add it to --arms",
            param_hint="--cold-slot-every",
        )
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
        arms=arms,
        cold_slot_every=cold_slot_every,
        exploration=Exploration(
            explore_policy, prior_impressions=explore_prior_impressions, ucb_beta=explore_ucb_beta
        ),
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
        "users: " + ", ".join(f"{a} {u[a]}" for a in figures["arms"]) + f"; SRM {srm['status']} "
        f"(p = {srm['p_value']}, treatment vs control)"
    )
    for name in METRIC_NAMES:
        m = figures["metrics"][name]
        click.echo(
            f"{name:24s} control {m['control_mean']}  treatment {m['treatment_mean']}  {figures['headline'][name]}"
        )
    for arm, f in figures["per_arm"].items():
        click.echo(
            f"{arm:13s} fresh-note share {f['fresh_share']['value']}  warm CTR {f['warm_ctr']['value']} "
            f"{f['warm_ctr']['ci']}  cold-start CTR {f['cold_start_ctr']['value']}"
        )
    click.echo(f"report: {figures['html']}  arms: {Path(figures['html']).with_name('arms.md')}")
