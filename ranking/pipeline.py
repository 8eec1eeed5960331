"""Run-directory stages: train + evaluate retrieval (ablations, peers) and the ranker.

Each stage reads RUN_DIR, writes its artifacts under RUN_DIR/retrieval or RUN_DIR/ranker, sets its
section of summary.json (``retrieval`` / ``ranker``) and returns the same figures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from features.errors import ConfigError
from features.io import RunDir, write_json, write_parquet
from ranking.dataset import (
    FEATURE_SOURCES,
    TAG_SOURCES,
    RunData,
    build_training_examples,
    feast_user_interests,
    load_catalog,
    load_run_data,
    require_feast_store,
)
from ranking.retrieval.evaluate import POOLS

__all__ = ["available_tag_sources", "ranker_stage", "retrieval_stage"]

log = logging.getLogger(__name__)


def available_tag_sources(run: RunDir) -> list[str]:
    """Tag sources this run can use, student first."""
    out = []
    if run.has_table("tags"):
        out.append("student")
    if run.has_table("teacher_tags"):
        out.append("teacher")
    if run.ground_truth_path("note_attributes").exists():
        out.append("ground_truth")
    if not out:
        out.append("reference")
    return out


def _threads(n: int) -> int:
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    return old


def retrieval_stage(
    run_dir: str | Path,
    *,
    tag_sources: Sequence[str] | None = None,
    config: Any = None,
    peers: bool = True,
    ks: Sequence[int] = (10, 50),
    num_threads: int = 1,
    feature_source: str = "parquet",
    cold_quota: int = 10,
) -> dict[str, Any]:
    """Train the two-tower model per ablation, evaluate warm/cold on the time split, score peers.

    Ablations: ``ids`` and ``category`` (no tags), then ``tags:<source>`` for every source in
    ``tag_sources`` (default: student, teacher, ground truth where present; reference tags when the
    run has no tagger output). The first tag source is the main model: saved to
    RUN_DIR/retrieval/model.pt with item embeddings of every note (cold-start included).

    ``feature_source="feast"``: the tag models' user tag bag comes from the run's Feast store — the
    training labels go through ``FeatureClient.training_set(service="retrieval")`` (point in time),
    and the test users' bag is Feast's ``user_interests`` at the cutoff, so training and evaluation
    agree; user id / history notes / categories stay parquet-based, items are unchanged. The
    ``ids``/``category`` ablations and the peers have no user tag bag and are the same either way.

    Every model is scored in three pools (see :mod:`ranking.retrieval.evaluate`): ``all``, ``segment`` and
    ``quota`` (the shared pool with ``cold_quota`` of the top-50 slots kept for cold-start notes).

    Returns:
        the ``retrieval`` summary section (with ``feast``: rows, seconds and id-mapping counts).

    Raises:
        ConfigError: unknown tag source or feature source.
        NotFoundError: ``feature_source="feast"`` and the run has no Feast store.
    """
    from ranking.retrieval.evaluate import EmbeddingScorer, evaluate_retrieval, retrieval_test_set
    from ranking.retrieval.peers import ALSScorer, PopularityScorer, TagOverlapScorer
    from ranking.retrieval.train import TrainConfig, train

    run = RunDir(run_dir).require()
    cfg = config or TrainConfig()
    sources = list(tag_sources) if tag_sources else available_tag_sources(run)
    bad = [s for s in sources if s not in TAG_SOURCES or s in ("auto", "none")]
    if bad:
        raise ConfigError(
            f"tag_sources: got {bad}; expected some of student, teacher, ground_truth, reference"
        )
    if feature_source not in FEATURE_SOURCES:
        raise ConfigError(
            f"feature_source: got {feature_source!r}; expected one of {', '.join(FEATURE_SOURCES)}"
        )
    if feature_source == "feast":
        require_feast_store(run)
    old_threads = _threads(num_threads)
    t_start = time.perf_counter()
    try:
        base, examples = build_training_examples(run, tag_source="none")
        tests = {pool: retrieval_test_set(base, pool=pool) for pool in ("all", "segment")}
        tests["quota"] = tests["all"].with_quota(base.cold, cold_quota)  # same users and positives
        rows: list[dict[str, Any]] = []
        main: Any = None
        feast_figures: dict[str, Any] = {}
        feast_train = feast_test = None
        if feature_source == "feast":
            from features.client import FeatureClient

            t_open = time.perf_counter()
            with FeatureClient(run.path) as client:
                open_s = time.perf_counter() - t_open
                feast_train = feast_user_interests(
                    run, base, examples.user, examples.ts, examples.note, client=client
                )
                test_users = tests["all"].users
                feast_test = feast_user_interests(
                    run, base, test_users, np.full(len(test_users), base.cutoff_s), client=client
                )
            feast_figures = {
                "open_store_s": round(open_s, 2),
                "train_rows": len(feast_train),
                "train_set_s": round(feast_train.seconds, 2),
                "train_rows_per_s": round(len(feast_train) / max(feast_train.seconds, 1e-9)),
                "train_rows_without_snapshot": feast_train.rows_without_snapshot,
                "test_rows": len(feast_test),
                "test_set_s": round(feast_test.seconds, 2),
                "test_rows_without_snapshot": feast_test.rows_without_snapshot,
            }

        def score(name: str, kind: str, scorer: Any, extra: dict[str, Any]) -> None:
            for pool, test in tests.items():
                m = evaluate_retrieval(scorer, test, ks=ks)
                rows.append({"model": name, "kind": kind, "pool": pool, **extra, **m})

        runs: list[tuple[str, str, RunData]] = [("ids", "ids", base), ("category", "category", base)]
        for src in sources:
            runs.append((f"tags:{src}", "tags", base.with_catalog(load_catalog(run, src))))
        for name, feature_set, data in runs:
            train_ex, test_tags = examples, None
            if feast_train is not None and feast_test is not None and feature_set == "tags":
                train_tags, mapped = feast_train.bags(data.catalog)
                test_tags, _ = feast_test.bags(data.catalog)
                train_ex = examples.with_user_tags(train_tags)
                feast_figures.setdefault("mapping", {})[name] = mapped
            result = train(data, train_ex, replace(cfg, feature_set=feature_set))
            items = result.item_embeddings()
            users = tests["all"].users
            scorer = EmbeddingScorer(
                result.user_embeddings(users, data.cutoff_s, user_tags=test_tags), users, items
            )
            score(
                name,
                "two-tower",
                scorer,
                {
                    "train_s": round(result.train_seconds, 2),
                    "examples_per_s": round(result.examples_per_s),
                    "final_loss": round(float(np.mean(result.losses[-20:])), 4),
                },
            )
            if main is None and feature_set == "tags":
                main = (name, result, items)
        if peers:
            score("popularity", "peer", PopularityScorer(base), {})
            score("als", "peer", ALSScorer(base), {})
            tagged = base.with_catalog(load_catalog(run, sources[0]))
            score(f"tag_overlap:{sources[0]}", "peer", TagOverlapScorer(tagged), {})
        run.retrieval_dir.mkdir(parents=True, exist_ok=True)
        import pandas as pd

        table = pd.DataFrame(rows)
        write_parquet(table, run.retrieval_evaluation)
        figures: dict[str, Any] = {
            "examples": len(examples),
            "test_users": len(tests["all"].users),
            "feature_source": feature_source,
            "cold_quota": cold_quota,
        }
        if feast_figures:
            figures["feast"] = feast_figures
        if main is not None:
            name, result, items = main
            result.feature_source = feature_source
            result.save(run.retrieval_model)
            write_parquet(
                pd.DataFrame({"note_id": result.data.catalog.note_ids, "embedding": list(items)}),
                run.item_embeddings,
            )
            figures["main_model"] = name
            figures["examples_per_s"] = round(result.examples_per_s)
        figures.update(_headline(table))
        figures["table"] = _compact(table)
        figures["seconds_total"] = round(time.perf_counter() - t_start, 2)
        write_json(figures, run.retrieval_summary)
        run.update_summary("retrieval", figures)
        return figures
    finally:
        _threads(old_threads)


def _headline(table: Any) -> dict[str, Any]:
    """Cold-start Recall@50 of the main tag model vs category-only and ids-only, in both pools."""
    out: dict[str, Any] = {}
    tags = table[table["model"].str.startswith("tags:")]
    for pool in POOLS:
        t = table[table["pool"] == pool].set_index("model")
        if "cold_recall@50" not in t.columns or tags.empty:
            continue
        main = tags["model"].iloc[0]
        best = float(t.loc[main, "cold_recall@50"])
        cat = float(t.loc["category", "cold_recall@50"])
        ids = float(t.loc["ids", "cold_recall@50"])
        out[f"cold_recall@50_{pool}"] = {
            main: best,
            "category": cat,
            "ids": ids,
            "tags_over_category": round(best / cat, 3) if cat > 0 else None,
        }
    return out


def _compact(table: Any) -> list[dict[str, Any]]:
    cols = ["model", "pool", "warm_recall@50", "warm_ndcg@10", "cold_recall@50", "cold_ndcg@10"]
    return json.loads(table[[c for c in cols if c in table.columns]].to_json(orient="records"))


def ranker_stage(
    run_dir: str | Path,
    *,
    tag_source: str = "auto",
    config: Any = None,
    retrieval_config: Any = None,
    num_threads: int = 1,
) -> dict[str, Any]:
    """Train the LightGBM ranker on the window before the cutoff and evaluate after it.

    The retrieval score feature comes from a two-tower model trained on data before the ranker's
    window (so the score is out-of-sample for the ranker's training rows). Ablation: the same
    ranker without tag features.

    Returns:
        the ``ranker`` summary section.
    """
    from ranking.ranker import (
        FEATURES,
        TAG_FEATURES,
        RankerConfig,
        ranker_features,
        ranking_examples,
        train_ranker,
    )
    from ranking.retrieval.evaluate import auc, gauc, group_ndcg
    from ranking.retrieval.train import TrainConfig, train

    run = RunDir(run_dir).require()
    rcfg = config or RankerConfig()
    old_threads = _threads(num_threads)
    t_start = time.perf_counter()
    try:
        data = load_run_data(run, tag_source)
        window_start = data.cutoff_s - rcfg.window_days * 86400.0
        _, rex = build_training_examples(data, end_s=window_start)
        retrieval = train(data, rex, retrieval_config or TrainConfig(feature_set="tags"))
        train_ex = ranking_examples(data, window_start, data.cutoff_s, rcfg)
        test_ex = ranking_examples(data, data.cutoff_s, float("inf"), replace(rcfg, max_examples=0))
        t0 = time.perf_counter()
        train_x = ranker_features(data, train_ex, retrieval)
        test_x = ranker_features(data, test_ex, retrieval)
        feature_s = time.perf_counter() - t0
        cold = data.cold[test_ex.note]
        variants = {
            "full": FEATURES,
            "no_tags": tuple(f for f in FEATURES if f not in TAG_FEATURES),
            "no_retrieval_score": tuple(f for f in FEATURES if f != "retrieval_score"),
        }
        results: dict[str, Any] = {}
        main = None
        for name, feats in variants.items():
            t1 = time.perf_counter()
            ranker = train_ranker(train_x, train_ex, rcfg, feats)
            p = ranker.predict(test_x)
            y = test_ex.label
            results[name] = {
                "auc": round(auc(y, p), 4),
                "gauc": round(gauc(y, p, test_ex.user), 4),
                "ndcg@10": round(
                    group_ndcg(y, p, test_ex.user * 100_000 + (test_ex.ts // 86400).astype(np.int64)), 4
                ),
                "cold_auc": round(auc(y[cold], p[cold]), 4),
                "warm_auc": round(auc(y[~cold], p[~cold]), 4),
                "train_s": round(time.perf_counter() - t1, 2),
            }
            if main is None:
                main = ranker
        run.ranker_dir.mkdir(parents=True, exist_ok=True)
        if main is None:
            raise ConfigError("ranker: no variants trained")
        main.booster.save_model(str(run.ranker_model))
        figures: dict[str, Any] = {
            "tag_source": data.catalog.tag_source,
            "objective": rcfg.objective,
            "train_examples": len(train_ex),
            "train_positive_rate": round(float(train_ex.label.mean()), 4),
            "test_examples": len(test_ex),
            "test_positive_rate": round(float(test_ex.label.mean()), 4),
            "feature_seconds": round(feature_s, 2),
            **{f"{k}_{m}": v for k, r in results.items() for m, v in r.items() if m != "train_s"},
            "variants": results,
            "importance": main.importance(),
            "model_path": str(run.ranker_model),
            "seconds_total": round(time.perf_counter() - t_start, 2),
        }
        write_json(figures, run.ranker_summary)
        run.update_summary("ranker", figures)
        return figures
    finally:
        _threads(old_threads)
