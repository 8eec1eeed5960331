"""``tagllm tag``: build the handbook, run a teacher, evaluate tag quality (thin over tagging.pipeline)."""

from __future__ import annotations

import json
import logging

import click

from tagging.report_cli import report as report_cmd

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
@click.option(
    "--from",
    "from_path",
    type=click.Path(dir_okay=False, exists=True),
    help="Install this handbook YAML (validated, copied atomically) instead of building one.",
)
def handbook_cmd(run_dir: str, config_path: str | None, out: str | None, from_path: str | None) -> None:
    """Build the handbook from RUN_DIR's notes (and interactions) and write it as YAML.

    The YAML is human-editable: edit it and pass it back with --handbook; it is validated on load.
    With --from, an existing handbook (e.g. one an LLM wrote) is validated and installed instead.
    """
    if from_path is not None:
        if config_path is not None:
            raise click.UsageError("--config configures building a handbook; it cannot be used with --from")
        from tagging.batch_io import install_handbook

        figures = install_handbook(run_dir, from_path, out=out)
        click.echo(json.dumps(figures, indent=2, ensure_ascii=False))
        return
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
@click.option(
    "--arch",
    type=click.Choice(("scorer", "seq2seq")),
    default=None,
    help="Student architecture [default: scorer].",
)
@click.option(
    "--epochs", type=click.IntRange(min=1), default=None, help="Most epochs [default: scorer 40, seq2seq 12]."
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=0),
    default=None,
    help="Step budget (0 = epochs decide) [default: 0].",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Training batch [default: 32].")
@click.option(
    "--max-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Wall-clock safety cap, summed over resumed runs; the budget is epochs/steps [default: 30].",
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
    arch: str | None,
    epochs: int | None,
    max_steps: int | None,
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
        arch=arch,
        epochs=epochs,
        max_steps=max_steps,
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
@click.option(
    "--num-beams", type=click.IntRange(min=1), default=1, show_default=True, help="seq2seq only; 1 = greedy."
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Torch CPU threads (0 = half the cores, so a second CPU-bound process slows tagging <= ~2x).",
)
@click.option("--device", type=click.Choice(("auto", "cpu", "cuda")), default="auto", show_default=True)
@handbook_option
@click.option(
    "--engine",
    type=click.Choice(("local", "ray")),
    default="local",
    show_default=True,
    help="local: this process; ray: an actor pool on Ray Data, resumable per partition (needs tagllm[ray]).",
)
@click.option(
    "--ray-address",
    default=None,
    help="--engine ray: a running cluster (HEAD_IP:6379, or auto) [default: start a local one].",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="--engine ray: notes partitions (the unit of resumed work); 0 = one per ~5k notes.",
)
@click.option(
    "--actors",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="--engine ray: actor pool size.",
)
@click.option(
    "--cpus-per-actor",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="--engine ray: Ray CPUs (and torch threads) per actor.",
)
@click.option(
    "--gpus-per-actor",
    type=click.FloatRange(min=0),
    default=None,
    help="--engine ray: Ray GPUs per actor [default: 1 when the cluster has GPUs, else 0].",
)
def apply_cmd(
    run_dir: str,
    model_dir: str | None,
    batch_size: int,
    num_beams: int,
    threads: int,
    device: str,
    handbook_path: str | None,
    engine: str,
    ray_address: str | None,
    partitions: int,
    actors: int,
    cpus_per_actor: float,
    gpus_per_actor: float | None,
) -> None:
    """Tag every note with the student; write tables/tags.parquet and tag_vocab.json.

    With --engine ray a re-run after a crash redoes only the unfinished partitions
    (RUN_DIR/student/ray_apply/); the tags table is the same as --engine local's.
    """
    from tagging.pipeline import apply_run

    ray_config = None
    if engine == "ray":
        from tagging.ray_apply import RayApplyConfig

        ray_config = RayApplyConfig(
            address=ray_address,
            partitions=partitions,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            gpus_per_actor=gpus_per_actor,
        )
    elif ray_address is not None:
        raise click.UsageError("--ray-address needs --engine ray")
    figures = apply_run(
        run_dir,
        model_dir=model_dir,
        batch_size=batch_size,
        num_beams=num_beams,
        threads=threads,
        device=device,
        handbook_path=handbook_path,
        engine=engine,
        ray_config=ray_config,
    )
    click.echo(json.dumps(figures, indent=2, ensure_ascii=False, default=str))


@tag.command("export-requests")
@run_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="The request JSONL [default: RUN_DIR/teacher/requests.jsonl].",
)
@click.option(
    "--model",
    default="tagllm-teacher",
    show_default=True,
    help="body.model: the name the batch service knows the model by (vllm run-batch: --served-model-name).",
)
@handbook_option
@click.option("--sample", type=click.IntRange(min=1), default=None, help="Only the first N notes.")
@click.option(
    "--max-tokens", type=click.IntRange(min=1), default=1024, show_default=True, help="body.max_tokens."
)
@click.option("--json-mode", is_flag=True, help='Add response_format={"type": "json_object"}.')
def export_requests_cmd(
    run_dir: str,
    out: str | None,
    model: str,
    handbook_path: str | None,
    sample: int | None,
    max_tokens: int,
    json_mode: bool,
) -> None:
    """Write the teacher's prompts as an OpenAI Batch API request file (one line per note).

    custom_id is the note_id; the messages are the live LLM teacher's. Run the file with the
    OpenAI/Azure Batch API or `vllm run-batch`, then bring the answers back with `tagllm tag import`.
    """
    from tagging.batch_io import export_requests

    figures = export_requests(
        run_dir,
        out=out,
        model=model,
        handbook_path=handbook_path,
        sample=sample,
        max_tokens=max_tokens,
        json_mode=json_mode,
    )
    click.echo(json.dumps(figures, indent=2, ensure_ascii=False))


@tag.command("import")
@run_option
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--out-table",
    default="teacher_tags",
    show_default=True,
    help="Write RUN_DIR/tables/OUT_TABLE.parquet (and OUT_TABLE_failures.parquet).",
)
@click.option(
    "--id-field",
    default="note_id",
    show_default=True,
    help="The key holding the note id in TeacherOutput lines ({ID_FIELD: ..., teacher_output: {...}}).",
)
@click.option("--id-prefix", default="", help="Prepended to every id read (custom_id or ID_FIELD).")
@click.option("--tagger-name", default="llm", show_default=True, help="The tagger column.")
@click.option("--model", default=None, help="Model named in tagger_version when the answers name none.")
@click.option(
    "--cap-per-dimension",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="At most this many tags per dimension (as the live LLM teacher).",
)
@handbook_option
def import_cmd(
    run_dir: str,
    files: tuple[str, ...],
    out_table: str,
    id_field: str,
    id_prefix: str,
    tagger_name: str,
    model: str | None,
    cap_per_dimension: int,
    handbook_path: str | None,
) -> None:
    """Import teacher answers from FILES: OpenAI/vLLM batch output or TeacherOutput JSONL (per line).

    Every answer is parsed, validated and normalized exactly as the live LLM teacher's. For a note
    with several answers the last valid one wins. Prints the summary (also written to
    RUN_DIR/teacher/OUT_TABLE.import.json); re-importing the same files gives the same table.
    """
    from tagging.batch_io import ImportOptions, import_answers

    options = ImportOptions.create(
        out_table=out_table,
        id_field=id_field,
        id_prefix=id_prefix,
        tagger_name=tagger_name,
        model=model,
        cap_per_dimension=cap_per_dimension,
    )
    summary = import_answers(run_dir, files, options=options, handbook_path=handbook_path)
    click.echo(json.dumps(summary, indent=2, ensure_ascii=False, default=str))


tag.add_command(report_cmd)
