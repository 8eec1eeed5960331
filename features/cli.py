"""`tagllm data ...`: prepare canonical tables from a source, describe a run."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from features.datasets import SOURCES

SIZES = ("tiny", "small", "medium", "large")


@click.group("data")
def data() -> None:
    """Prepare and describe canonical tables (notes, users, interactions, ...)."""


@data.command("prepare")
@click.option(
    "--source",
    type=click.Choice(list(SOURCES)),
    default="synthetic",
    show_default=True,
    help="Dataset source.",
)
@click.option(
    "--path", type=click.Path(exists=True, file_okay=False), help="Source folder (all but synthetic)."
)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory to write.")
@click.option("--size", type=click.Choice(SIZES), default="small", show_default=True, help="Synthetic size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Synthetic seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def prepare_cmd(source: str, path: str | None, out: str, size: str, seed: int, as_json: bool) -> None:
    """Load SOURCE, validate every table and write them to --out (atomically)."""
    from features.prepare import prepare

    if source != "synthetic" and not path:
        raise click.UsageError(f"--source {source} needs --path ({SOURCES[source][2]})")
    options: dict[str, Any] = {"size": size, "seed": seed, "progress": True} if source == "synthetic" else {}
    manifest = prepare(source, out, path=path, **options)
    if as_json:
        click.echo(json.dumps(manifest, indent=2, default=str))
    else:
        counts = ", ".join(f"{k}={v:,}" for k, v in manifest["tables"].items())
        click.echo(f"prepared {out} from {source}: {counts} ({manifest['prepare_seconds']:.1f} s)")


@data.command("describe")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def describe_cmd(run_dir: str, as_json: bool) -> None:
    """Counts per table, date range, cold-start share and per-category stats of RUN_DIR."""
    from features.prepare import describe

    info = describe(run_dir)
    if as_json:
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    _print_description(info)


def _print_description(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=sys.stdout)
    console.print(
        f"[bold]{info['run_dir']}[/bold]  source={info['source']}  cutoff={info['cold_start_cutoff']}"
    )
    t = Table("table", "rows", "time range", title="Tables")
    for name, d in info["tables"].items():
        rng = d.get("created_at") or d.get("ts") or {}
        t.add_row(name, f"{d['rows']:,}", f"{rng.get('min', '')} … {rng.get('max', '')}" if rng else "")
    console.print(t)
    cs = info["cold_start"]
    console.print(
        f"cold-start notes: {cs['notes']:,} ({cs['note_share']:.1%})"
        + (f", interactions on them: {cs['interaction_share']:.1%}" if "interaction_share" in cs else "")
    )
    cats = info["categories"]
    cols = sorted({k for v in cats.values() for k in v})
    t = Table("category", *cols, title="Per category")
    for cat, row in cats.items():
        t.add_row(cat, *(f"{row[c]:,}" if isinstance(row.get(c), int) else f"{row.get(c, '')}" for c in cols))
    console.print(t)
