"""`tagllm features ...`: compute feature tables, `feast apply`, materialize, push fresh tags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

ONLINE = click.Choice(["sqlite", "redis"])


def _run_options(fn: Any) -> Any:
    fn = click.option(
        "--redis", "redis_addr", metavar="HOST:PORT", help="redis-server address (with --online redis)."
    )(fn)
    fn = click.option("--online", type=ONLINE, default="sqlite", show_default=True, help="Online store.")(fn)
    fn = click.option(
        "--run",
        "run_dir",
        required=True,
        type=click.Path(exists=True, file_okay=False),
        help="Run directory.",
    )(fn)
    return fn


def _settings(run_dir: str, online: str, redis_addr: str | None) -> Any:
    from features.feast_repo import FeastSettings

    if online == "redis" and not redis_addr:
        raise click.UsageError("--online redis needs --redis HOST:PORT (e.g. --redis 127.0.0.1:6379)")
    return FeastSettings(Path(run_dir), online=online, redis=redis_addr)  # type: ignore[arg-type]


def _echo(figures: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        click.echo(json.dumps(figures, indent=2, default=str))
    else:
        click.echo(f"{title}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


@click.group("features")
def features() -> None:
    """Tags as Feast features: feature tables, apply, materialize, push.

    The Feast repo is feature_repo/ (stock CLI from that folder:
    TAGLLM_RUN_DIR=/abs/RUN_DIR feast plan|apply|serve|listen).
    """


@features.command("apply")
@_run_options
@click.option("--no-compute", is_flag=True, help="Reuse RUN_DIR/features/*.parquet instead of recomputing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def apply_cmd(run_dir: str, online: str, redis_addr: str | None, no_compute: bool, as_json: bool) -> None:
    """Compute feature tables from canonical tables + tags and register them with Feast."""
    from features.feast_repo import apply

    _echo(apply(_settings(run_dir, online, redis_addr), compute=not no_compute), as_json, "applied")


@features.command("materialize")
@_run_options
@click.option("--view", "views", multiple=True, help="Feature view(s) to load (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def materialize_cmd(
    run_dir: str, online: str, redis_addr: str | None, views: tuple[str, ...], as_json: bool
) -> None:
    """Load the latest feature rows into the online store."""
    from features.feast_repo import materialize

    settings = _settings(run_dir, online, redis_addr)
    _echo(materialize(settings, views=list(views) or None), as_json, "materialized")


@features.command("push")
@_run_options
@click.option(
    "--tags",
    "tags_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="JSON list (or JSON lines) of {note_id, tags: [{text, dimension, confidence}], tagger_version}.",
)
def push_cmd(run_dir: str, online: str, redis_addr: str | None, tags_file: str) -> None:
    """Push fresh note tags straight to the online store (readable at once)."""
    from features.client import FeatureClient

    text = Path(tags_file).read_text(encoding="utf-8").strip()
    try:
        records = (
            json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x]
        )
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{tags_file}: not JSON or JSON lines ({exc})", param_hint="--tags") from exc
    with FeatureClient(run_dir, online=online, redis=redis_addr) as client:  # type: ignore[arg-type]
        n = client.push_note_tags(records)
    click.echo(f"pushed tags of {n} notes to {online}")


@features.command("describe")
@_run_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def describe_cmd(run_dir: str, online: str, redis_addr: str | None, as_json: bool) -> None:
    """Feature views, services and online row counts of RUN_DIR."""
    from features.client import VIEW_FEATURES, FeatureClient

    with FeatureClient(run_dir, online=online, redis=redis_addr) as client:  # type: ignore[arg-type]
        info = {
            "views": {v: list(f) for v, f in VIEW_FEATURES.items()},
            "services": sorted(s.name for s in client.store.list_feature_services()),
            "online_entities": client.counts() if online == "sqlite" else None,
        }
    _echo(info, as_json, "features")


@features.command("bulk-load")
@click.option(
    "--run", "run_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Run directory."
)
@click.option("--redis", "redis_addr", required=True, metavar="HOST:PORT", help="redis-server address.")
@click.option("--view", default="note_tags", show_default=True, help="Feature view to load.")
@click.option(
    "--source",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Parquet file: the view's entity key, feature and event timestamp columns.",
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(min=1),
    default=50_000,
    show_default=True,
    help="Rows per checkpointed chunk.",
)
@click.option(
    "--batch-rows",
    type=click.IntRange(min=1),
    default=5_000,
    show_default=True,
    help="HSETs per pipeline round trip.",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Writer processes.")
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    help="Resume file (default RUN_DIR/feast/bulk_load.VIEW.json; a rerun skips acknowledged rows).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def bulk_load_cmd(
    run_dir: str,
    redis_addr: str,
    view: str,
    source: str,
    chunk_rows: int,
    batch_rows: int,
    workers: int,
    checkpoint: str | None,
    as_json: bool,
) -> None:
    """Write feature rows from parquet into Redis through pipelines, in the layout Feast reads
    (the run's Redis registry must be applied: `tagllm features apply --online redis`)."""
    from features.bulk_online import BulkLoadConfig, bulk_load

    settings = _settings(run_dir, "redis", redis_addr)
    ckpt = Path(checkpoint) if checkpoint else settings.feast_dir / f"bulk_load.{view}.json"
    cfg = BulkLoadConfig(chunk_rows=chunk_rows, batch_rows=batch_rows, workers=workers, checkpoint=ckpt)
    _echo(bulk_load(settings, view, Path(source), cfg).as_dict(), as_json, "bulk-loaded")
