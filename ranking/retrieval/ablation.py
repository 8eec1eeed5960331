"""The cold-start ablation: which part of the two-tower recipe buys what, warm and cold, in every pool.

``tagllm train ablation RUN --tags student`` trains each variant of :data:`VARIANTS` on RUN (same
examples, same seed), scores it on the time split of :mod:`ranking.retrieval.evaluate` in the
``all``, ``segment`` and ``quota`` pools, adds the untrained tag-overlap heuristic, the same heuristic
with the user's tag bag minus what the user was shown, and popularity, and writes
``RUN/retrieval/ablation.parquet`` and ``ablation.md`` (the Markdown table it prints).

Variants (each row changes one thing against ``full``, the default :class:`TrainConfig`):

- ``before``: the recipe before issue 16 (content skip + feature norm; no freshness, no wide term);
- ``+freshness (scale 1)``: ``before`` + the age bias as learned per request (no calibration);
- ``+freshness``: ``before`` + the calibrated age bias;
- ``+wide``: ``before`` + the wide tag-overlap term;
- ``full``: both, + the calibrated cold-start overlap term (the default);
- ``full, no cold overlap``: ``full`` without the cold-start overlap term (the recipe until 2026-11-28);
- ``full, no exposure``: ``full`` with the user's tag bag in that term as it is, not minus what the
  user was shown (the recipe of 2026-11-28);
- ``full, fresh-id dropout 1d``: ``full`` + the note id hidden on examples younger than a day;
- ``full, category only`` / ``full, ids only``: the same recipe without tags / without content.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from features.errors import ConfigError
from features.io import RunDir, write_parquet

__all__ = ["VARIANTS", "run_ablation", "to_markdown"]

log = logging.getLogger(__name__)

# name -> (feature set, TrainConfig overrides against the default)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "before": ("tags", {"freshness": False, "wide_dim": 0}),
    "+freshness (scale 1)": ("tags", {"wide_dim": 0, "calibrate_days": 0.0}),
    "+freshness": ("tags", {"wide_dim": 0}),
    "+wide": ("tags", {"freshness": False}),
    "full": ("tags", {}),
    "full, no cold overlap": ("tags", {"cold_overlap": False}),
    "full, no exposure": ("tags", {"overlap_exposure": False}),
    "full, fresh-id dropout 1d": ("tags", {"fresh_days": 1.0}),
    "full, exact tags": ("tags", {"exact_tags": True}),
    "+freshness, exact tags": ("tags", {"wide_dim": 0, "exact_tags": True}),
    "full, category only": ("category", {}),
    "full, ids only": ("ids", {}),
}


def run_ablation(
    run_dir: str | Path,
    tag_source: str = "student",
    *,
    variants: Sequence[str] | None = None,
    seed: int = 0,
    peers: bool = True,
    cold_quota: int = 10,
    num_threads: int = 1,
) -> list[dict[str, Any]]:
    """Train and score the variants; returns one row per (model, pool) and writes the table.

    Raises:
        ConfigError: an unknown variant name.
    """
    names = list(variants or VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"variants: unknown {unknown}; expected some of {list(VARIANTS)}")
    import torch

    from ranking.data import build_training_examples, load_catalog, load_run_data
    from ranking.retrieval.evaluate import (
        EmbeddingScorer,
        evaluate_retrieval,
        evaluate_split,
        retrieval_test_set,
    )
    from ranking.retrieval.peers import PopularityScorer, TagOverlapScorer
    from ranking.retrieval.train import TrainConfig, train

    run = RunDir(run_dir).require()
    old = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        base = load_run_data(run, "none")
        tagged = base.with_catalog(load_catalog(run, tag_source))
        examples = build_training_examples(base)
        tests = {
            "all": retrieval_test_set(base, pool="all"),
            "segment": retrieval_test_set(base, pool="segment"),
        }
        tests["quota"] = tests["all"].with_quota(base.cold, cold_quota)
        rows: list[dict[str, Any]] = []

        def score(model: str, scorer: Any, extra: dict[str, Any], segment: Any = None) -> None:
            for pool, test in tests.items():
                if pool == "segment" and segment is not None:
                    m = evaluate_split(scorer, segment, test, ks=(50,), seed=seed)
                else:
                    m = evaluate_retrieval(scorer, test, ks=(50,), seed=seed)
                rows.append({"model": model, "pool": pool, **{k: m[k] for k in _METRICS}, **extra})

        for name in names:
            feature_set, over = VARIANTS[name]
            data = tagged if feature_set == "tags" else base
            t0 = time.perf_counter()
            result = train(data, examples, replace(TrainConfig(seed=seed), feature_set=feature_set, **over))
            users = tests["all"].users
            items = result.item_embeddings()
            scorer = EmbeddingScorer(result.user_embeddings(users, data.cutoff_s), users, items)
            # cold-start notes among themselves: the cold-only query (TwoTowerConfig.cold_overlap)
            seg_users = tests["segment"].users
            segment = EmbeddingScorer(
                result.user_embeddings(seg_users, data.cutoff_s, cold_only=True), seg_users, items
            )
            cal = result.calibration or {}
            score(
                name,
                scorer,
                {
                    "examples_per_s": round(result.examples_per_s),
                    "train_s": round(time.perf_counter() - t0, 1),
                    "freshness_scale": cal.get("scale"),
                    "cold_overlap": cal.get("cold_overlap"),
                    "overlap_exposure": cal.get("overlap_exposure"),
                },
                segment,
            )
            log.info("ablation %s done in %.0fs", name, time.perf_counter() - t0)
        if peers:
            score(f"tag overlap heuristic ({tag_source})", TagOverlapScorer(tagged), {})
            score(
                f"tag overlap heuristic, minus exposure ({tag_source})",
                TagOverlapScorer(tagged, exposure=1.0),
                {},
            )
            score("popularity", PopularityScorer(base), {})
    finally:
        torch.set_num_threads(old)
    _write(run, rows, tag_source, seed)
    return rows


_METRICS = ("warm_recall@50", "cold_recall@50", "warm_users", "cold_users")


def to_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One line per model: warm/cold Recall@50 in each pool, the freshness scale and examples/s."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], r["pool"]): r for r in rows}
    lines = [
        "| model | warm R@50 all | cold R@50 all | cold R@50 segment | warm / cold R@50 quota "
        "| freshness scale | cold overlap c / b | train examples/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in models:
        a, s, q = by.get((m, "all"), {}), by.get((m, "segment"), {}), by.get((m, "quota"), {})
        scale = a.get("freshness_scale")
        overlap = _pair(a.get("cold_overlap"), a.get("overlap_exposure"))
        eps = a.get("examples_per_s")
        lines.append(
            f"| {m} | {_f(a.get('warm_recall@50'))} | {_f(a.get('cold_recall@50'))} | "
            f"{_f(s.get('cold_recall@50'))} | {_f(q.get('warm_recall@50'))} / {_f(q.get('cold_recall@50'))} | "
            f"{'' if scale is None or _nan(scale) else scale} | {overlap} | "
            f"{'' if eps is None or _nan(eps) else f'{eps:,.0f}'} |"
        )
    return "\n".join(lines)


def _pair(c: Any, b: Any) -> str:
    """The cold overlap column: "c / b", "c" for rows from before the exposure, "" without either."""
    if c is None or _nan(c):
        return ""
    return f"{c} / {b}" if b is not None and not _nan(b) else f"{c}"


def _nan(v: Any) -> bool:
    return isinstance(v, float) and np.isnan(v)


def _f(v: Any) -> str:
    return "" if v is None or _nan(v) else f"{v:.4f}"


def _write(run: RunDir, rows: list[dict[str, Any]], tag_source: str, seed: int) -> None:
    import pandas as pd

    from features.io import atomic_path

    run.retrieval_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows).assign(tag_source=tag_source, seed=seed)
    write_parquet(frame, run.retrieval_dir / "ablation.parquet")
    with atomic_path(run.retrieval_dir / "ablation.md") as tmp:
        Path(tmp).write_text(to_markdown(rows) + "\n", encoding="utf-8")
