"""``tagllm tag report``: the distilled student vs the teacher's self-agreement and peers, same test notes.

Thin over :func:`tagging.distill_report.build_report`; registered in the ``tag`` group.
"""

from __future__ import annotations

import json

import click

__all__ = ["report"]

# Kept here (not imported) so that `--help` imports nothing heavy; a test checks they agree.
PEER_CHOICES = ("closed-set", "offline", "yake", "keybert", "hashtags", "known-tags")


def _peer_list(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in value.split(",") if p.strip())
    bad = [p for p in names if p not in PEER_CHOICES]
    if bad:
        raise click.BadParameter(f"{bad[0]!r}; expected a comma-separated list of: {', '.join(PEER_CHOICES)}")
    return names


@click.command("report")
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Run directory with notes, the teacher table, the student model and its tags table.",
)
@click.option("--teacher-table", default="teacher_tags", show_default=True, help="The teacher's tags (gold).")
@click.option(
    "--second-table",
    default="teacher_tags_second",
    show_default=True,
    help="A second teacher answer for self-agreement; '' to skip.",
)
@click.option("--student-table", default="tags", show_default=True, help="The student's tags table.")
@click.option(
    "--peers",
    default=",".join(PEER_CHOICES),
    show_default=True,
    callback=_peer_list,
    help="Comma-separated peers to score on the same test notes.",
)
@click.option("--no-peers", is_flag=True, help="Score no peers (same as --peers '').")
@click.option(
    "--model", "model_dir", type=click.Path(file_okay=False), help="[default: RUN_DIR/student/model]"
)
@click.option(
    "--handbook",
    "handbook_path",
    type=click.Path(dir_okay=False),
    help="Handbook YAML [default: RUN_DIR/handbook.yaml].",
)
@click.option(
    "--max-notes",
    type=click.IntRange(min=1),
    default=2000,
    show_default=True,
    help="Score at most this many test notes.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Output folder [default: RUN_DIR/eval/student_report].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of Markdown.")
def report(
    run_dir: str,
    teacher_table: str,
    second_table: str,
    student_table: str,
    peers: tuple[str, ...],
    no_peers: bool,
    model_dir: str | None,
    handbook_path: str | None,
    max_notes: int,
    out: str | None,
    as_json: bool,
) -> None:
    """Evaluate the distilled student on its held-out test notes that the teacher answered.

    One table: the student, the teacher's self-agreement (a second answer vs the first) with the
    student on the same notes, and peers (closed-set, offline handbook teacher, YAKE, KeyBERT, the
    creator's hashtags, known tags), with exact/fuzzy P/R/F1, redundancy, boilerplate and tags per
    note, overall and per category; plus the calibration of the student's confidence (ECE and a
    reliability diagram). Writes report.json, report.md and reliability.png to --out.
    """
    from features.io import RunDir
    from tagging.distill_report import build_report, render_markdown

    rep = build_report(
        RunDir(run_dir),
        teacher_table=teacher_table,
        second_table=second_table or None,
        student_table=student_table,
        peers=() if no_peers else peers,
        handbook=handbook_path,
        model_dir=model_dir,
        max_notes=max_notes,
        out=out,
    )
    if as_json:
        click.echo(json.dumps(rep, indent=2, ensure_ascii=False, default=str))
        return
    click.echo(render_markdown(rep), nl=False)
