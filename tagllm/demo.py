"""`tagllm demo`: the product's main job, end to end, on the embedded synthetic community.

Each stage reads and writes the run directory and returns the headline figures that become its
section of ``summary.json``. A stage that fails stops the demo with its error; stages already done
keep their outputs, and ``--resume`` skips stages whose summary section is already present.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)

Stage = Callable[[Path, dict[str, Any]], dict[str, Any]]


def _stage_data(run: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from features.prepare import describe, prepare

    prepare("synthetic", run, size=opts["size"], seed=opts["seed"], progress=True)
    info = describe(run)
    return {
        "source": "synthetic",
        "size": opts["size"],
        "seed": opts["seed"],
        "rows": {name: d["rows"] for name, d in info["tables"].items()},
        "categories": len(info["categories"]),
        "cold_start_cutoff": info["cold_start_cutoff"],
        "cold_start_note_share": info["cold_start"]["note_share"],
    }


def _stage_handbook(run: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from tagging.pipeline import build_run_handbook

    return build_run_handbook(run)


def _stage_teacher(run: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from tagging.pipeline import teach_run

    figures = teach_run(run, teacher="offline")
    figures.pop("run", None)
    return figures


def _stage_features(run: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from features.feast_repo import feature_stage

    return feature_stage(run)


def _stage_student(run: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from features.io import RunDir
    from tagging.pipeline import apply_run, distill_run

    distill_run(run)
    figures = apply_run(run)
    return {k: v for k, v in RunDir(run).summary().get("student", figures).items() if k != "seconds"}


def _stage_retrieval(run: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from ranking.pipeline import retrieval_stage

    return retrieval_stage(run)


def _stage_ranker(run: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from ranking.pipeline import ranker_stage

    return ranker_stage(run)


def _stage_serving(run: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from serving.demo import serving_stage

    return serving_stage(run)


def _stage_ab(run: Path, opts: dict[str, Any]) -> dict[str, Any]:
    from tagllm.simulate import simulate_stage

    return simulate_stage(run)


# (summary section, description, function). Later stages append here as they land.
STAGES: list[tuple[str, str, Stage]] = [
    ("data", "prepare the synthetic community into canonical tables", _stage_data),
    ("handbook", "build the User Interest Handbook from notes and engagement", _stage_handbook),
    ("teacher", "tag every note with the offline handbook teacher (chain-of-thought trace)", _stage_teacher),
    ("student", "distill the teacher into the small student; the student tags every note", _stage_student),
    ("features", "feature tables; Feast apply + materialize (SQLite online store)", _stage_features),
    (
        "retrieval",
        "train TorchRec two-tower models (ablations) + peers; warm/cold Recall@50",
        _stage_retrieval,
    ),
    ("ranker", "train the LightGBM ranker on tag-match features; AUC, GAUC, NDCG", _stage_ranker),
    ("serving", "start `tagllm serve`, call every gRPC method once, tag a fresh note, stop", _stage_serving),
    (
        "ab",
        "SIMULATED online A/B test (control: no tags; treatment: student tags; + exploration; + quota) + lift report",
        _stage_ab,
    ),
]


def run_demo(out: str | Path, *, size: str = "small", seed: int = 0, resume: bool = False) -> dict[str, Any]:
    """Run every stage into ``out``; returns the final summary (also in ``out/summary.json``)."""
    from features.errors import ConfigError
    from features.io import RunDir

    run = RunDir(out)
    opts = {"size": size, "seed": seed}
    if resume:
        done = run.summary().get("data", {})
        if done and (done.get("size"), done.get("seed")) != (size, seed):
            raise ConfigError(
                f"--resume: {out} was made with size={done.get('size')!r} seed={done.get('seed')!r}, "
                f"not size={size!r} seed={seed!r}; drop --resume or use another --out"
            )
    for i, (section, what, fn) in enumerate(STAGES, 1):
        if resume and section in run.summary():
            log.info("[%d/%d] %s: already done, skipping (--resume)", i, len(STAGES), section)
            continue
        log.info("[%d/%d] %s: %s", i, len(STAGES), section, what)
        t0 = time.perf_counter()
        figures = fn(run.path, opts)
        figures["seconds"] = round(time.perf_counter() - t0, 2)
        run.update_summary(section, figures)
    return run.summary()


# The figures a person wants to see per stage; everything else stays in summary.json.
HEADLINES: dict[str, tuple[str, ...]] = {
    "data": ("rows", "categories", "cold_start_note_share"),
    "handbook": ("dimensions", "values", "boilerplate", "dimension_recovery.recovered_share"),
    "teacher": ("notes", "failed", "f1", "precision", "recall", "redundancy"),
    "student": (
        "f1_vs_teacher",
        "f1_vs_gold",
        "teacher_f1_vs_gold",
        "ungrounded_f1_vs_gold",
        "notes_per_s",
        "distill.parameters",
    ),
    "features": ("tags_table", "rows", "online_entities.note_tags", "online_store"),
    "retrieval": (
        "main_model",
        "cold_recall@50_all",
        "cold_recall@50_segment",
        "cold_recall@50_quota",
        "warm_recall@50_all",
        "freshness_scale",
        "cold_overlap",
        "overlap_exposure",
        "examples_per_s",
    ),
    "ranker": ("tag_source", "full_auc", "full_gauc", "no_tags_auc", "full_cold_auc"),
    "serving": (
        "startup_s",
        "calls.Recommend.ms",
        "calls.GetNoteTags.ms",
        "calls.TagNotes.ms",
        "freshness.ms_to_recommend",
        "freshness.rank_among_cold_start",
        "shutdown_code",
    ),
    "ab": (
        "headline.view_duration_per_user",
        "headline.interactions_per_user",
        "headline.pv_ctr",
        "headline.pv_ctr_cold_start",
        "per_arm.treatment.fresh_share.value",
        "per_arm.tags_explore.fresh_share.value",
        "comparisons.tags_explore_vs_treatment.metrics.pv_ctr_warm.lift",
        "srm.status",
        "html",
    ),
}


def _lookup(figures: dict[str, Any], dotted: str) -> Any:
    value: Any = figures
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items() if not isinstance(v, (dict, list)))
    return str(value)


def print_summary(summary: dict[str, Any], path: Path) -> None:
    """A table of each stage's headline figures (the full figures are in summary.json)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    table = Table("stage", "headline figures", "s", title=f"TagLLM demo — {path}", show_lines=True)
    for section, figures in summary.items():
        keys = HEADLINES.get(section) or tuple(
            k for k, v in figures.items() if not isinstance(v, (dict, list))
        )
        shown = [(k, _lookup(figures, k)) for k in keys]
        text = "\n".join(f"{k}: {_fmt(v)}" for k, v in shown if v is not None)
        table.add_row(section, text, _fmt(figures.get("seconds", "")))
    console.print(table)


@click.command("demo")
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option(
    "--size", type=click.Choice(["tiny", "small", "medium", "large"]), default="small", show_default=True
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Skip stages already present in summary.json.")
def demo(out: str, size: str, seed: int, resume: bool) -> None:
    """Run the main job end to end on the synthetic community and print the summary."""
    summary = run_demo(out, size=size, seed=seed, resume=resume)
    print_summary(summary, Path(out) / "summary.json")
    click.echo(f"summary written to {Path(out) / 'summary.json'}")
