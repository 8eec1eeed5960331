"""Probe: what a cold-start quota would do to the shared-pool retrieval metrics of a trained model.

The run's main two-tower model (RUN/retrieval/model.pt) scores every note for each test user; the
top ``q`` cold-start notes are then forced into the list (a "fresh-note quota": q of the K slots are
reserved for notes published after the cutoff) and Recall@K / NDCG@K are recomputed on the shared
pool. Quota notes are placed first, so NDCG@10 is a lower bound; a real system would let the ranker
place them. Prints JSON.

    python scripts/cold_quota_probe.py --run RUN [--quotas 0 5 10 20]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np


class QuotaScorer:
    """Wraps a scorer: per user, lifts its ``quota`` best-scored cold notes above every other note."""

    def __init__(self, base: Any, cold: np.ndarray, quota: int) -> None:
        self.base, self.cold, self.quota = base, cold, quota

    def scores(self, users: np.ndarray, notes: np.ndarray) -> np.ndarray:
        s = np.asarray(self.base.scores(users, notes), dtype=np.float64)
        cold_cols = np.flatnonzero(self.cold[notes])
        if self.quota and len(cold_cols):
            q = min(self.quota, len(cold_cols))
            top = np.argpartition(-s[:, cold_cols], q - 1, axis=1)[:, :q]
            s[np.arange(len(s))[:, None], cold_cols[top]] += 1e3
        return s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a run with RUN/retrieval/model.pt")
    parser.add_argument("--quotas", type=int, nargs="+", default=[0, 5, 10, 20], help="cold slots of 50")
    parser.add_argument("--compare-category", action="store_true", help="also a category-only model")
    args = parser.parse_args(argv)
    if any(q < 0 for q in args.quotas):
        parser.error(f"--quotas: got {args.quotas}; expected integers >= 0")
    from pathlib import Path

    if not (Path(args.run) / "retrieval" / "model.pt").exists():
        parser.error(
            f"--run {args.run}: no retrieval/model.pt; train one with `tagllm train retrieval {args.run}`"
        )
    import torch

    from ranking.evaluate import EmbeddingScorer, evaluate_retrieval, retrieval_test_set
    from ranking.recommend import load_retrieval

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    model = load_retrieval(args.run)
    test = retrieval_test_set(model.data, pool="all")
    base = EmbeddingScorer(
        model.user_embeddings(test.users, model.data.cutoff_s), test.users, model.item_embeddings()
    )
    models = {f"tags:{model.data.catalog.tag_source}": base}
    if args.compare_category:
        from dataclasses import replace

        from ranking.dataset import build_training_examples
        from ranking.train_retrieval import train

        data, examples = build_training_examples(model.data)
        cat = train(data, examples, replace(model.config, feature_set="category"))
        models["category"] = EmbeddingScorer(
            cat.user_embeddings(test.users, data.cutoff_s), test.users, cat.item_embeddings()
        )
    rows: dict[str, dict[str, Any]] = {}
    for name, scorer in models.items():
        rows[name] = {}
        for q in args.quotas:
            r = evaluate_retrieval(QuotaScorer(scorer, model.data.cold, q), test, ks=(10, 50))
            rows[name][str(q)] = {
                k: r[k] for k in ("warm_recall@50", "cold_recall@50", "warm_ndcg@10", "cold_ndcg@10")
            }
    out = {
        "run": args.run,
        "pool": "all",
        "k": 50,
        "quota": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
