"""``tagllm tag``: build the handbook, run a teacher, evaluate tag quality (thin over tagging.pipeline)."""

from __future__ import annotations

import json
import logging

import click

log = logging.getLogger(__name__)

TEACHER_CHOICES = ("offline", "reference", "llm", "local")

run_option = click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Prepared run directory.",
)
handbook_option = click.option(
    "--handbook",
    "handbook_path",
    type=click.Path(dir_okay=False),
    help="Handbook YAML [default: RUN_DIR/handbook.yaml].",
)


@click.group(name="tag")
def tag() -> None:
    """The User Interest Handbook, teachers and tag-quality evaluation."""


@tag.command("handbook")
@run_option
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    help="YAML of HandbookConfig fields.",
)
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Where to write the YAML [default: RUN_DIR/handbook.yaml]."
)
def handbook_cmd(run_dir: str, config_path: str | None, out: str | None) -> None:
    """Build the handbook from RUN_DIR's notes (and interactions) and write it as YAML.

    The YAML is human-editable: edit it and pass it back with --handbook; it is validated on load.
    """
    from tagging.pipeline import build_run_handbook

    figures = build_run_handbook(run_dir, config_path=config_path, out=out)
    click.echo(json.dumps(figures, indent=2))


@tag.command("teach")
@run_option
@click.option("--teacher", type=click.Choice(TEACHER_CHOICES), default="offline", show_default=True)
@click.option("--sample", type=click.IntRange(min=1), default=None, help="Tag only the first N notes.")
@click.option(
    "--teacher-config",
    type=click.Path(dir_okay=False, exists=True),
    help="YAML of teacher options (llm: base_url, model, api_key_env, concurrency, ...; local: model_dir, ...).",
)
@handbook_option
def teach_cmd(
    run_dir: str, teacher: str, sample: int | None, teacher_config: str | None, handbook_path: str | None
) -> None:
    """Run a teacher over RUN_DIR's notes (cached, resumable); write tables/teacher_tags.parquet.

    Re-running is free: results come from the cache; a killed run resumes from its log.
    """
    from tagging.pipeline import teach_run

    figures = teach_run(
        run_dir,
        teacher=teacher,
        sample=sample,
        handbook_path=handbook_path,
        teacher_config_path=teacher_config,
    )
    click.echo(json.dumps(figures, indent=2, default=str))


@tag.command("eval")
@run_option
@click.option(
    "--tagger", "taggers", multiple=True, default=("offline",), show_default=True, help="Teacher(s) to score."
)
@click.option(
    "--peers/--no-peers", default=True, show_default=True, help="Also score YAKE, KeyBERT, closed-set."
)
@click.option(
    "--test-share",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.3,
    show_default=True,
    help="Held-out share (the closed-set baseline trains on the rest).",
)
@click.option(
    "--max-notes",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Score at most this many held-out notes.",
)
@handbook_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
def eval_cmd(
    run_dir: str,
    taggers: tuple[str, ...],
    peers: bool,
    test_share: float,
    max_notes: int,
    handbook_path: str | None,
    as_json: bool,
) -> None:
    """Tag quality (P/R/F1 exact and fuzzy, redundancy, boilerplate, granularity, coverage) vs peers."""
    from tagging.pipeline import evaluate_run

    bad = [t for t in taggers if t not in TEACHER_CHOICES]
    if bad:
        raise click.BadParameter(
            f"{bad[0]!r}; expected one of: {', '.join(TEACHER_CHOICES)}", param_hint="--tagger"
        )
    report = evaluate_run(
        run_dir,
        taggers=taggers,
        peers=peers,
        test_share=test_share,
        max_notes=max_notes,
        handbook_path=handbook_path,
    )
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        return
    _print_report(report)


def _print_report(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = ("f1", "precision", "recall", "fuzzy_f1", "redundancy", "boilerplate_rate", "granularity")
    table = Table("tagger", *cols, title=f"Tag quality vs {report.get('gold')}")
    for name, r in report["taggers"].items():
        if "overall" in r:
            table.add_row(name, *(f"{r['overall'].get(c, float('nan')):.3f}" for c in cols))
        else:
            table.add_row(name, f"unavailable: {r.get('error')}", *[""] * (len(cols) - 1))
    Console().print(table)


@tag.command("distill")
@run_option
@click.option("--teacher-table", default="teacher_tags", show_default=True, help="The teacher's tags table.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Most epochs [default: 12].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Training batch [default: 32].")
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Training wall-clock budget, summed over resumed runs [default: 3.5].",
)
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default=None, help="[default: auto]")
@click.option("--seed", type=int, default=None, help="[default: 0]")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    help="YAML of StudentConfig fields (model size, lengths, lr, patience, ...).",
)
@click.option(
    "--model", "model_dir", type=click.Path(file_okay=False), help="[default: RUN_DIR/student/model]"
)
@handbook_option
def distill_cmd(
    run_dir: str,
    teacher_table: str,
    epochs: int | None,
    batch_size: int | None,
    max_minutes: float | None,
    device: str | None,
    seed: int | None,
    config_path: str | None,
    model_dir: str | None,
    handbook_path: str | None,
) -> None:
    """Distill the teacher's tags into the small student (resumable: re-run to continue a killed run)."""
    from tagging.pipeline import distill_run

    figures = distill_run(
        run_dir,
        teacher_table=teacher_table,
        config_path=config_path,
        model_dir=model_dir,
        handbook_path=handbook_path,
        epochs=epochs,
        batch_size=batch_size,
        max_minutes=max_minutes,
        device=device,
        seed=seed,
    )
    click.echo(json.dumps(figures, indent=2, ensure_ascii=False, default=str))


@tag.command("apply")
@run_option
@click.option(
    "--model", "model_dir", type=click.Path(file_okay=False), help="[default: RUN_DIR/student/model]"
)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--num-beams", type=click.IntRange(min=1), default=1, show_default=True, help="1 = greedy.")
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True)
@handbook_option
def apply_cmd(
    run_dir: str,
    model_dir: str | None,
    batch_size: int,
    num_beams: int,
    device: str,
    handbook_path: str | None,
) -> None:
    """Tag every note with the student; write tables/tags.parquet and tag_vocab.json."""
    from tagging.pipeline import apply_run

    figures = apply_run(
        run_dir,
        model_dir=model_dir,
        batch_size=batch_size,
        num_beams=num_beams,
        device=device,
        handbook_path=handbook_path,
    )
    click.echo(json.dumps(figures, indent=2, ensure_ascii=False, default=str))
