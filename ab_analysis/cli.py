"""``ab`` click group: ``ab report`` writes report.json, report.md and report.html atomically into --out.

Exit statuses: 0 written; 2 usage error (bad option, column, value or file: one line naming it);
3 written, but the sample-ratio check failed and ``--fail-on-srm`` was given. An SRM warning or failure
always prints one line on stderr. Only click is imported at module level (``--help`` stays fast).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from ab_analysis.corrections import CORRECTIONS
from ab_analysis.errors import EXIT_SRM_FAILED

__all__ = ["ab"]

log = logging.getLogger(__name__)


def _shares(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated numbers, e.g. 50,50") from None


@click.group(name="ab", help="A/B lift analysis (Welch, delta method, CUPED, SRM, Holm/BH).")
def ab() -> None:
    """A/B analysis commands."""


@ab.command(
    "report",
    help="Analyse a user-level table or event logs; write JSON, Markdown and HTML. Exit status: 0 written, "
    "2 usage/input error, 3 written but the SRM check failed with --fail-on-srm.",
)
@click.option(
    "--users",
    "users_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="User-level table (.csv or .parquet): variant column + metric columns, one row per user.",
)
@click.option(
    "--events",
    "events_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Event log (.csv or .parquet), streamed in chunks; needs --assignments. With --engine "
    "duckdb|spark also a directory or a glob such as 'events/*.parquet'.",
)
@click.option(
    "--assignments",
    "assign_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Assignments (.csv or .parquet): user_id, experiment, variant, assigned_at.",
)
@click.option(
    "--metrics",
    "metrics_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Metric definitions YAML (default: the paper's four metrics).",
)
@click.option("--control", default="control", show_default=True, help="Control label.")
@click.option(
    "--treatment",
    "treatments",
    multiple=True,
    default=("treatment",),
    show_default=True,
    help="Treatment label; repeat for several arms (each is compared with control).",
)
@click.option("--variant-column", default="variant", show_default=True, help="Variant column of --users.")
@click.option(
    "--user-column", default="user_id", show_default=True, help="User id column of --users (must be unique)."
)
@click.option(
    "--segment", "segments", multiple=True, help="Segment column (repeatable); SRM is checked per value."
)
@click.option("--experiment", default=None, help="Experiment to keep from --assignments.")
@click.option(
    "--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True
)
@click.option("--correction", type=click.Choice(CORRECTIONS), default="holm", show_default=True)
@click.option("--relative-ci", type=click.Choice(["log", "delta"]), default="log", show_default=True)
@click.option(
    "--srm-threshold",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.001,
    show_default=True,
    help="SRM fails when the chi-square p-value is below this.",
)
@click.option(
    "--srm-warn",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.01,
    show_default=True,
    help="SRM warns when the p-value is below this (and not below --srm-threshold).",
)
@click.option(
    "--fail-on-srm", is_flag=True, help=f"Exit with status {EXIT_SRM_FAILED} when an SRM check fails."
)
@click.option(
    "--expected-share", default=None, help="Planned split, control first, e.g. 50,25,25 (default equal)."
)
@click.option(
    "--drop-unknown-variants",
    is_flag=True,
    help="Drop (and count) rows whose variant is no analysed arm instead of failing.",
)
@click.option(
    "--normalize-labels",
    is_flag=True,
    help="Strip whitespace and case-fold variant labels (default: exact strings; 1 and 1.0 read as '1').",
)
@click.option(
    "--engine",
    type=click.Choice(["memory", "duckdb", "spark"]),
    default="memory",
    show_default=True,
    help="Where --events are aggregated: in this process (chunked), or by one SQL query in duckdb "
    "(larger than memory) or Spark (local[1]); see docs/ab-sql.md. The SQL engines have no daily series.",
)
@click.option(
    "--duckdb-memory-limit", default="1500MB", show_default=True, help="--engine duckdb: spill beyond this."
)
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="--engine duckdb: threads.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "print_json", is_flag=True, help="Also print the JSON document to stdout.")
def report_cmd(
    users_path: Path | None,
    events_path: Path | None,
    assign_path: Path | None,
    metrics_path: Path | None,
    control: str,
    treatments: tuple[str, ...],
    variant_column: str,
    user_column: str,
    segments: tuple[str, ...],
    experiment: str | None,
    alpha: float,
    correction: str,
    relative_ci: str,
    srm_threshold: float,
    srm_warn: float,
    fail_on_srm: bool,
    expected_share: str | None,
    drop_unknown_variants: bool,
    normalize_labels: bool,
    engine: str,
    duckdb_memory_limit: str,
    threads: int | None,
    out_dir: Path,
    print_json: bool,
) -> None:
    """Run the analysis and write the three report files."""
    if (users_path is None) == (events_path is None):
        raise click.UsageError(
            "give exactly one input: --users FILE, or --events FILE with --assignments FILE"
        )
    if events_path is not None and assign_path is None:
        raise click.UsageError("--events needs --assignments FILE")
    if users_path is not None and assign_path is not None:
        raise click.UsageError("--assignments goes with --events, not with --users")
    if engine != "memory" and events_path is None:
        raise click.UsageError(f"--engine {engine} reads --events (with --assignments), not --users")
    if srm_warn < srm_threshold:
        raise click.UsageError(f"--srm-warn={srm_warn} is below --srm-threshold={srm_threshold}")
    from ab_analysis.analysis import analyze, analyze_events
    from ab_analysis.errors import ABAnalysisError
    from ab_analysis.events import read_table

    common: dict[str, Any] = dict(
        control=control,
        treatment=list(treatments),
        segments=segments,
        alpha=alpha,
        correction=correction,
        relative_ci=relative_ci,
        srm_threshold=srm_threshold,
        srm_warn=srm_warn,
        expected_share=_shares(expected_share),
        drop_unknown_variants=drop_unknown_variants,
        normalize_labels=normalize_labels,
    )
    try:
        if users_path is not None:
            report = analyze(
                read_table(users_path, "users"),
                metrics_path,
                variant_col=variant_column,
                user_col=user_column,
                metadata={"source": str(users_path)},
                **common,
            )
        elif events_path is not None and assign_path is not None and engine != "memory":
            from ab_analysis.sql import EngineConfig, analyze_sql

            report = analyze_sql(
                str(events_path),
                read_table(assign_path, "assignments"),
                metrics_path,
                experiment=experiment,
                engine=EngineConfig(engine, threads=threads, memory_limit=duckdb_memory_limit),  # type: ignore[arg-type]
                **{k: v for k, v in common.items() if k != "segments"},
                segments=list(segments),
            )
        elif events_path is not None and assign_path is not None:
            report = analyze_events(
                events_path,
                read_table(assign_path, "assignments"),
                metrics_path,
                experiment=experiment,
                **common,
            )
        else:  # pragma: no cover - excluded by the checks above
            raise click.UsageError("--events needs --assignments FILE")
    except ABAnalysisError as exc:
        raise click.UsageError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    text = report.to_json(out_dir / "report.json")
    report.to_markdown(out_dir / "report.md")
    report.to_html(out_dir / "report.html")
    log.info("wrote %s/report.{json,md,html}", out_dir)
    if print_json:
        click.echo(text)
    else:
        click.echo(f"wrote {out_dir / 'report.json'}, report.md, report.html")
    gate = report.srm_gate()
    if gate["status"] == "fail":
        click.echo(
            f"SRM FAILED (p < {gate['threshold']:g}) in {', '.join(gate['failed'])}: do not trust the lifts"
            + (f"; exit {EXIT_SRM_FAILED} (--fail-on-srm)" if fail_on_srm else ""),
            err=True,
        )
        if fail_on_srm:
            # SystemExit, not ctx.exit: `tagllm` runs click with standalone_mode=False, which turns
            # click's Exit into a return value that its entry point does not pass on.
            sys.exit(EXIT_SRM_FAILED)
    elif gate["status"] == "warning":
        click.echo(
            f"SRM warning (p < {gate['warn_threshold']:g}) in {', '.join(gate['warned'])}: check the assignment",
            err=True,
        )
