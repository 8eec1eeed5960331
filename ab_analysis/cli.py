"""``ab`` click group: ``ab report`` writes report.json, report.md and report.html atomically into --out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from ab_analysis.corrections import CORRECTIONS

__all__ = ["ab"]

log = logging.getLogger(__name__)


@click.group(name="ab", help="A/B lift analysis (Welch, delta method, CUPED, SRM, Holm/BH).")
def ab() -> None:
    """A/B analysis commands."""


@ab.command("report", help="Analyse a user-level table or event logs; write JSON, Markdown and HTML.")
@click.option(
    "--users",
    "users_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="User-level table (.csv or .parquet): variant column + metric columns.",
)
@click.option(
    "--events",
    "events_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Event log (.csv or .parquet), streamed in chunks; needs --assignments.",
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
@click.option("--control", default="control", show_default=True)
@click.option("--treatment", default="treatment", show_default=True)
@click.option("--variant-column", default="variant", show_default=True, help="Variant column of --users.")
@click.option("--segment", "segments", multiple=True, help="Segment column (repeatable).")
@click.option("--experiment", default=None, help="Experiment to keep from --assignments.")
@click.option(
    "--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05, show_default=True
)
@click.option("--correction", type=click.Choice(CORRECTIONS), default="holm", show_default=True)
@click.option("--relative-ci", type=click.Choice(["log", "delta"]), default="log", show_default=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "print_json", is_flag=True, help="Also print the JSON document to stdout.")
def report_cmd(
    users_path: Path | None,
    events_path: Path | None,
    assign_path: Path | None,
    metrics_path: Path | None,
    control: str,
    treatment: str,
    variant_column: str,
    segments: tuple[str, ...],
    experiment: str | None,
    alpha: float,
    correction: str,
    relative_ci: str,
    out_dir: Path,
    print_json: bool,
) -> None:
    """Run the analysis and write the three report files."""
    from ab_analysis.analysis import analyze, analyze_events
    from ab_analysis.errors import ABAnalysisError
    from ab_analysis.events import read_table

    if (users_path is None) == (events_path is None):
        raise click.UsageError(
            "give exactly one input: --users FILE, or --events FILE with --assignments FILE"
        )
    if events_path is not None and assign_path is None:
        raise click.UsageError("--events needs --assignments FILE")
    if users_path is not None and assign_path is not None:
        raise click.UsageError("--assignments goes with --events, not with --users")
    common: dict[str, Any] = dict(
        control=control,
        treatment=treatment,
        segments=segments,
        alpha=alpha,
        correction=correction,
        relative_ci=relative_ci,
    )
    try:
        if users_path is not None:
            report = analyze(
                read_table(users_path, "users"),
                metrics_path,
                variant_col=variant_column,
                metadata={"source": str(users_path)},
                **common,
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
