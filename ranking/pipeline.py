"""Run-directory stages: train + evaluate retrieval (ablations, peers) and the ranker.

Each stage reads RUN_DIR, writes its artifacts under RUN_DIR/retrieval or RUN_DIR/ranker, sets its
section of summary.json (``retrieval`` / ``ranker``) and returns the same figures.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from features.errors import ConfigError
from features.io import RunDir, write_json, write_parquet
from ranking.data import (
    FEATURE_SOURCES,
    TAG_SOURCES,
    Examples,
    NoteCatalog,
    RunData,
    UserTagBags,
    build_training_examples,
    load_catalog,
    load_run_data,
)
from ranking.feast_data import FeastInterests, feast_user_interests, require_feast_store
from ranking.retrieval.evaluate import POOLS

if TYPE_CHECKING:
    import pandas as pd

    from ranking.ranker import Ranker, RankerConfig
    from ranking.retrieval.evaluate import RetrievalTestSet, Scorer
    from ranking.retrieval.train import RetrievalModel, TrainConfig

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
    config: TrainConfig | None = None,
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
    from ranking.retrieval.train import TrainConfig

    run = RunDir(run_dir).require()
    cfg = config or TrainConfig()
    sources = _check_sources(run, tag_sources, feature_source)
    old_threads = _threads(num_threads)
    t_start = time.perf_counter()
    try:
        base = load_run_data(run, "none")
        examples = build_training_examples(base)
        pools = _Pools(_test_pools(base, cold_quota), ks)
        feast = _feast_inputs(run, base, examples, pools.users) if feature_source == "feast" else None
        main = _train_ablations(run, base, examples, sources, cfg, pools, feast)
        if peers:
            _score_peers(run, base, sources[0], pools)
        figures: dict[str, Any] = {
            "examples": len(examples),
            "test_users": len(pools.users),
            "feature_source": feature_source,
            "cold_quota": cold_quota,
            **({"feast": feast.figures} if feast is not None and feast.figures else {}),
        }
        _write_retrieval(run, pools.table(), main, feature_source, figures)
        figures["seconds_total"] = round(time.perf_counter() - t_start, 2)
        write_json(figures, run.retrieval_summary)
        run.update_summary("retrieval", figures)
        return figures
    finally:
        _threads(old_threads)


def _check_sources(run: RunDir, tag_sources: Sequence[str] | None, feature_source: str) -> list[str]:
    """The tag sources to train (default: every one the run has); checks the feature source too."""
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
    return sources


def _test_pools(base: RunData, cold_quota: int) -> dict[str, RetrievalTestSet]:
    from ranking.retrieval.evaluate import retrieval_test_set

    tests = {pool: retrieval_test_set(base, pool=pool) for pool in ("all", "segment")}
    tests["quota"] = tests["all"].with_quota(base.cold, cold_quota)  # same users and positives
    return tests


@dataclass
class _Pools:
    """The evaluation pools and the rows scored in them so far (one per model and pool)."""

    tests: dict[str, RetrievalTestSet]
    ks: Sequence[int]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def users(self) -> np.ndarray:
        return self.tests["all"].users

    def score(
        self, name: str, kind: str, scorer: Scorer, extra: dict[str, Any], segment: Scorer | None = None
    ) -> None:
        """Score ``scorer`` in every pool; ``segment``, when given, scores the cold notes of the
        ``segment`` pool (cold among cold: the model's cold-only query)."""
        from ranking.retrieval.evaluate import evaluate_retrieval, evaluate_split

        for pool, test in self.tests.items():
            if pool == "segment" and segment is not None:
                m = evaluate_split(scorer, segment, test, ks=self.ks)
            else:
                m = evaluate_retrieval(scorer, test, ks=self.ks)
            self.rows.append({"model": name, "kind": kind, "pool": pool, **extra, **m})

    def table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self.rows)


@dataclass
class _FeastInputs:
    """Feast's point-in-time user bags for the training examples and the test users at the cutoff."""

    train: FeastInterests
    test: FeastInterests
    figures: dict[str, Any]

    def examples_for(
        self, name: str, examples: Examples, catalog: NoteCatalog
    ) -> tuple[Examples, UserTagBags]:
        """(training examples with the Feast bag, the test users' bags), mapped onto ``catalog``."""
        train_tags, mapped = self.train.bags(catalog)
        test_tags, _ = self.test.bags(catalog)
        self.figures.setdefault("mapping", {})[name] = mapped
        return examples.with_user_tags(train_tags), test_tags


def _feast_inputs(run: RunDir, base: RunData, examples: Examples, test_users: np.ndarray) -> _FeastInputs:
    from features.client import FeatureClient

    t_open = time.perf_counter()
    with FeatureClient(run.path) as client:
        open_s = time.perf_counter() - t_open
        train = feast_user_interests(run, base, examples.user, examples.ts, examples.note, client=client)
        test = feast_user_interests(
            run, base, test_users, np.full(len(test_users), base.cutoff_s), client=client
        )
    figures = {
        "open_store_s": round(open_s, 2),
        "train_rows": len(train),
        "train_set_s": round(train.seconds, 2),
        "train_rows_per_s": round(len(train) / max(train.seconds, 1e-9)),
        "train_rows_without_snapshot": train.rows_without_snapshot,
        "test_rows": len(test),
        "test_set_s": round(test.seconds, 2),
        "test_rows_without_snapshot": test.rows_without_snapshot,
    }
    return _FeastInputs(train, test, figures)


@dataclass(frozen=True)
class _MainModel:
    """The first tag model: saved as the run's retrieval model."""

    name: str
    result: RetrievalModel
    items: np.ndarray


def _train_ablations(
    run: RunDir,
    base: RunData,
    examples: Examples,
    sources: Sequence[str],
    cfg: TrainConfig,
    pools: _Pools,
    feast: _FeastInputs | None,
) -> _MainModel | None:
    """Train and score ``ids``, ``category`` and ``tags:<source>`` per source; returns the main model."""
    from ranking.retrieval.evaluate import EmbeddingScorer
    from ranking.retrieval.train import train

    runs: list[tuple[str, str, RunData]] = [("ids", "ids", base), ("category", "category", base)]
    for src in sources:
        runs.append((f"tags:{src}", "tags", base.with_catalog(load_catalog(run, src))))
    main = None
    for name, feature_set, data in runs:
        train_ex, test_tags = examples, None
        if feast is not None and feature_set == "tags":
            train_ex, test_tags = feast.examples_for(name, examples, data.catalog)
        result = train(data, train_ex, replace(cfg, feature_set=feature_set))
        items = result.item_embeddings()
        users = pools.users
        scorer = EmbeddingScorer(
            result.user_embeddings(users, data.cutoff_s, user_tags=test_tags), users, items
        )
        # the cold-only query (TwoTowerConfig.cold_overlap) ranks cold-start notes among themselves
        segment = EmbeddingScorer(
            result.user_embeddings(users, data.cutoff_s, user_tags=test_tags, cold_only=True), users, items
        )
        extra = {
            "train_s": round(result.train_seconds, 2),
            "examples_per_s": round(result.examples_per_s),
            "final_loss": round(float(np.mean(result.losses[-20:])), 4),
            "freshness_scale": (result.calibration or {}).get("scale", np.nan),
            "cold_overlap": (result.calibration or {}).get("cold_overlap", np.nan),
            "overlap_exposure": (result.calibration or {}).get("overlap_exposure", np.nan),
        }
        pools.score(name, "two-tower", scorer, extra, segment)
        if main is None and feature_set == "tags":
            main = _MainModel(name, result, items)
    return main


def _score_peers(run: RunDir, base: RunData, source: str, pools: _Pools) -> None:
    """Popularity, ALS and tag overlap (tags of ``source``), plain and minus what the user was shown."""
    from ranking.retrieval.peers import ALSScorer, PopularityScorer, TagOverlapScorer

    pools.score("popularity", "peer", PopularityScorer(base), {})
    pools.score("als", "peer", ALSScorer(base), {})
    tagged = base.with_catalog(load_catalog(run, source))
    pools.score(f"tag_overlap:{source}", "peer", TagOverlapScorer(tagged), {})
    pools.score(f"tag_overlap_exposure:{source}", "peer", TagOverlapScorer(tagged, exposure=1.0), {})


def _write_retrieval(
    run: RunDir,
    table: pd.DataFrame,
    main: _MainModel | None,
    feature_source: str,
    figures: dict[str, Any],
) -> None:
    """Write the evaluation table and the main model with its item embeddings; add their figures."""
    import pandas as pd

    run.retrieval_dir.mkdir(parents=True, exist_ok=True)
    write_parquet(table, run.retrieval_evaluation)
    if main is not None:
        result = main.result
        result.feature_source = feature_source
        result.save(run.retrieval_model)
        write_parquet(
            pd.DataFrame({"note_id": result.data.catalog.note_ids, "embedding": list(main.items)}),
            run.item_embeddings,
        )
        figures["main_model"] = main.name
        figures["examples_per_s"] = round(result.examples_per_s)
        if result.calibration is not None:
            figures["freshness_scale"] = result.calibration["scale"]
            figures["cold_overlap"] = result.calibration.get("cold_overlap", 0.0)
            figures["overlap_exposure"] = result.calibration.get("overlap_exposure", 0.0)
            figures["freshness_calibration"] = result.calibration
    figures.update(_headline(table))
    figures["table"] = _compact(table)


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
        if pool == "all" and "warm_recall@50" in t.columns:
            out["warm_recall@50_all"] = {
                m: float(t.loc[m, "warm_recall@50"]) for m in (main, "category", "ids")
            }
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
    config: RankerConfig | None = None,
    retrieval_config: TrainConfig | None = None,
    num_threads: int = 1,
) -> dict[str, Any]:
    """Train the LightGBM ranker on the window before the cutoff and evaluate after it.

    The retrieval score feature comes from a two-tower model trained on data before the ranker's
    window (so the score is out-of-sample for the ranker's training rows). Ablation: the same
    ranker without tag features.

    Returns:
        the ``ranker`` summary section.
    """
    from ranking.ranker import RankerConfig

    run = RunDir(run_dir).require()
    rcfg = config or RankerConfig()
    old_threads = _threads(num_threads)
    t_start = time.perf_counter()
    try:
        data = load_run_data(run, tag_source)
        inputs = _ranker_inputs(data, rcfg, retrieval_config)
        results, main = _train_variants(inputs, rcfg)
        run.ranker_dir.mkdir(parents=True, exist_ok=True)
        main.booster.save_model(str(run.ranker_model))
        train_ex, test_ex = inputs.train_ex, inputs.test_ex
        figures: dict[str, Any] = {
            "tag_source": data.catalog.tag_source,
            "objective": rcfg.objective,
            "train_examples": len(train_ex),
            "train_positive_rate": round(float(train_ex.label.mean()), 4),
            "test_examples": len(test_ex),
            "test_positive_rate": round(float(test_ex.label.mean()), 4),
            "feature_seconds": round(inputs.feature_s, 2),
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


@dataclass(frozen=True)
class _RankerInputs:
    """The ranker's training window and test examples with their feature frames."""

    data: RunData
    train_ex: Examples
    test_ex: Examples
    train_x: pd.DataFrame
    test_x: pd.DataFrame
    feature_s: float


def _ranker_inputs(data: RunData, rcfg: RankerConfig, retrieval_config: TrainConfig | None) -> _RankerInputs:
    """Examples in ``[cutoff - window, cutoff)`` and after the cutoff, with features that use a two-tower
    model trained before the window (out-of-sample retrieval scores)."""
    from ranking.ranker import ranker_features, ranking_examples
    from ranking.retrieval.train import TrainConfig, train

    window_start = data.cutoff_s - rcfg.window_days * 86400.0
    rex = build_training_examples(data, end_s=window_start)
    retrieval = train(data, rex, retrieval_config or TrainConfig(feature_set="tags"))
    train_ex = ranking_examples(data, window_start, data.cutoff_s, rcfg)
    test_ex = ranking_examples(data, data.cutoff_s, float("inf"), replace(rcfg, max_examples=0))
    t0 = time.perf_counter()
    train_x = ranker_features(data, train_ex, retrieval)
    test_x = ranker_features(data, test_ex, retrieval)
    return _RankerInputs(data, train_ex, test_ex, train_x, test_x, time.perf_counter() - t0)


def _train_variants(inputs: _RankerInputs, rcfg: RankerConfig) -> tuple[dict[str, Any], Ranker]:
    """Train the full ranker and its ablations; returns their test figures and the full ranker."""
    from ranking.ranker import FEATURES, TAG_FEATURES, train_ranker
    from ranking.retrieval.evaluate import auc, gauc, group_ndcg

    test_ex = inputs.test_ex
    cold = inputs.data.cold[test_ex.note]
    y = test_ex.label
    day_groups = test_ex.user * 100_000 + (test_ex.ts // 86400).astype(np.int64)
    variants = {
        "full": FEATURES,
        "no_tags": tuple(f for f in FEATURES if f not in TAG_FEATURES),
        "no_retrieval_score": tuple(f for f in FEATURES if f != "retrieval_score"),
    }
    results: dict[str, Any] = {}
    main = None
    for name, feats in variants.items():
        t1 = time.perf_counter()
        ranker = train_ranker(inputs.train_x, inputs.train_ex, rcfg, feats)
        p = ranker.predict(inputs.test_x)
        results[name] = {
            "auc": round(auc(y, p), 4),
            "gauc": round(gauc(y, p, test_ex.user), 4),
            "ndcg@10": round(group_ndcg(y, p, day_groups), 4),
            "cold_auc": round(auc(y[cold], p[cold]), 4),
            "warm_auc": round(auc(y[~cold], p[~cold]), 4),
            "train_s": round(time.perf_counter() - t1, 2),
        }
        if main is None:
            main = ranker
            results["exploration"] = _offline_exploration(inputs, p, day_groups)
    if main is None:
        raise ConfigError("ranker: no variants trained")
    return results, main


def _offline_exploration(inputs: _RankerInputs, p: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Replay the full ranker's test impressions under each exploration policy (defaults of
    :class:`ranking.recommend.exploration.Exploration`): per user-day, order the logged impressions
    by the policy's keys; NDCG@10 of the clicks and the share of cold-start notes in the top 10.
    A note's impressions are those logged before the cutoff (cold-start notes: 0). The quota policy
    is the ``quota`` retrieval pool; it acts on slots, not keys, so it is not replayed here."""
    from ranking.recommend.exploration import Exploration, exploration_keys
    from ranking.retrieval.evaluate import group_ndcg

    data, test_ex = inputs.data, inputs.test_ex
    inter = data.interactions
    shown = (inter.event == "impression") & (inter.ts < data.cutoff_s)
    impressions = np.bincount(inter.note[shown], minlength=data.catalog.num_notes)[test_ex.note]
    cold = data.cold[test_ex.note]
    out: dict[str, Any] = {}
    for name in ("none", "ucb", "thompson"):
        keys = exploration_keys(Exploration(name), p, impressions, np.random.default_rng(0))
        out[name] = {
            "ndcg@10": round(group_ndcg(test_ex.label, keys, groups), 4),
            "cold_share_top10": round(_top_share(keys, groups, cold, 10), 4),
        }
    return out


def _top_share(keys: np.ndarray, groups: np.ndarray, flag: np.ndarray, k: int) -> float:
    """Share of ``flag`` rows among each group's top ``k`` rows by ``keys`` (all groups pooled)."""
    order = np.lexsort((-keys, groups))
    g = groups[order]
    start = np.r_[0, np.flatnonzero(np.diff(g)) + 1]
    rank = np.arange(len(g)) - np.repeat(start, np.diff(np.r_[start, len(g)]))
    top = order[rank < k]
    return float(flag[top].mean()) if len(top) else float("nan")
