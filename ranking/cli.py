"""`tagllm train retrieval|ranker` and `tagllm eval`: the ranking stages on a run directory.

The lead wires ``train`` and ``eval_group`` into ``tagllm/cli.py`` (lazy groups).
"""

from __future__ import annotations

import json
import logging

import click

__all__ = ["eval_group", "train"]

TAG_CHOICES = ["student", "teacher", "ground_truth", "reference"]


def _print(figures: dict[str, object], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(figures, indent=2, default=str))
        return
    for k, v in figures.items():
        if k != "table":
            click.echo(f"{k}: {json.dumps(v, default=str) if isinstance(v, dict | list) else v}")


@click.group("train")
def train() -> None:
    """Train the two-tower retrieval model and the LightGBM ranker."""


@train.command("retrieval")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--tags",
    "tag_sources",
    multiple=True,
    type=click.Choice(TAG_CHOICES),
    help="Tag sources to train (repeatable); default: every one the run has, student first.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=512, show_default=True)
@click.option("--no-peers", is_flag=True, help="Skip popularity / ALS / tag-overlap peers.")
@click.option(
    "--feature-source",
    type=click.Choice(["parquet", "feast"]),
    default="parquet",
    show_default=True,
    help="User tag bag from parquet history, or point in time from the run's Feast store "
    "(needs `tagllm features apply` + `materialize`).",
)
@click.option(
    "--cold-quota",
    type=click.IntRange(min=1, max=50),
    default=10,
    show_default=True,
    help="In the `quota` evaluation pool: top-50 slots kept for cold-start notes.",
)
@click.option("--json", "as_json", is_flag=True)
def retrieval_cmd(
    run_dir: str,
    tag_sources: tuple[str, ...],
    epochs: int,
    batch_size: int,
    no_peers: bool,
    feature_source: str,
    cold_quota: int,
    as_json: bool,
) -> None:
    """Train two-tower models (ids, category, tags per source) on RUN_DIR and evaluate them."""
    from ranking.pipeline import retrieval_stage
    from ranking.retrieval.train import TrainConfig

    logging.basicConfig(level=logging.INFO)
    figures = retrieval_stage(
        run_dir,
        tag_sources=list(tag_sources) or None,
        config=TrainConfig(epochs=epochs, batch_size=batch_size),
        peers=not no_peers,
        feature_source=feature_source,
        cold_quota=cold_quota,
    )
    _print(figures, as_json)


@train.command("ablation")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--tags",
    "tag_source",
    type=click.Choice(TAG_CHOICES),
    default="student",
    show_default=True,
    help="Tag source of the tag variants and of the tag-overlap heuristic.",
)
@click.option(
    "--variant",
    "variants",
    multiple=True,
    help="Train only this variant (repeatable; default: all of ranking.retrieval.ablation.VARIANTS).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--no-peers", is_flag=True, help="Skip the tag-overlap heuristic and popularity rows.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of the Markdown table.")
def ablation_cmd(
    run_dir: str, tag_source: str, variants: tuple[str, ...], seed: int, no_peers: bool, as_json: bool
) -> None:
    """Cold-start ablation of the two-tower recipe on RUN_DIR: warm/cold Recall@50 in every pool.

    Writes RUN_DIR/retrieval/ablation.parquet and ablation.md.
    """
    from ranking.retrieval.ablation import run_ablation, to_markdown

    logging.basicConfig(level=logging.INFO)
    rows = run_ablation(run_dir, tag_source, variants=list(variants) or None, seed=seed, peers=not no_peers)
    click.echo(json.dumps(rows, indent=2, default=str) if as_json else to_markdown(rows))


@train.command("ranker")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--tags", "tag_source", type=click.Choice(["auto", *TAG_CHOICES]), default="auto", show_default=True
)
@click.option("--objective", type=click.Choice(["binary", "lambdarank"]), default="binary", show_default=True)
@click.option("--trees", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--window-days", type=click.FloatRange(min=0, min_open=True), default=14.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def ranker_cmd(
    run_dir: str, tag_source: str, objective: str, trees: int, window_days: float, as_json: bool
) -> None:
    """Train the LightGBM ranker on RUN_DIR (window before the cutoff) and evaluate after it."""
    from ranking.pipeline import ranker_stage
    from ranking.ranker import RankerConfig

    logging.basicConfig(level=logging.INFO)
    cfg = RankerConfig(objective=objective, n_estimators=trees, window_days=window_days)
    _print(ranker_stage(run_dir, tag_source=tag_source, config=cfg), as_json)


@click.command("eval")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--pool",
    type=click.Choice(["all", "segment", "quota", "every", "both"]),
    default="every",
    show_default=True,
    help="all = one shared pool; segment = cold notes among cold only; quota = shared pool with "
    "cold-start slots (see `tagllm train retrieval --cold-quota`); every = all three ('both' is an "
    "older alias of every).",
)
@click.option("--json", "as_json", is_flag=True)
def eval_group(run_dir: str, pool: str, as_json: bool) -> None:
    """Print the evaluation table written by `tagllm train retrieval` (warm/cold x ablations x peers)."""
    import pandas as pd

    from features.errors import NotFoundError
    from features.io import RunDir

    path = RunDir(run_dir).retrieval_evaluation
    if not path.exists():
        raise NotFoundError(f"{path} does not exist; run `tagllm train retrieval {run_dir}` first")
    table = pd.read_parquet(path)
    if pool not in ("every", "both"):
        table = table[table["pool"] == pool]
    cols = [
        c
        for c in [
            "model",
            "pool",
            "warm_recall@50",
            "warm_ndcg@10",
            "cold_recall@10",
            "cold_recall@50",
            "cold_ndcg@10",
        ]
        if c in table.columns
    ]
    if as_json:
        click.echo(table[cols].to_json(orient="records", indent=2))
    else:
        click.echo(
            table[cols].to_markdown(index=False) if _has_tabulate() else table[cols].to_string(index=False)
        )
        ranker = RunDir(run_dir).summary().get("ranker")
        if ranker:
            click.echo("\nranker: " + json.dumps(ranker.get("variants", {})))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True
