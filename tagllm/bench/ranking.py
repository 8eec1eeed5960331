"""Ranking benchmarks as JSON: training examples/s, embedding one new note, top-K over 100k notes
(p99), ranker scoring 500 candidates (p99).

Run: ``python -m tagllm.bench.ranking RUN_DIR`` (a run with tags; `tagllm demo` makes one).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["bench"]


def _p(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def bench(run_dir: str | Path, *, n_index: int = 100_000, k: int = 100, repeats: int = 200) -> dict[str, Any]:
    """Measure the four figures on ``run_dir`` (one thread for torch and LightGBM)."""
    import torch

    from features.io import RunDir
    from ranking.data import build_training_examples, load_run_data
    from ranking.ranker import FEATURES, RankerConfig, ranker_features, ranking_examples, train_ranker
    from ranking.retrieval.index import NoteIndex
    from ranking.retrieval.train import TrainConfig, train

    torch.set_num_threads(1)
    out: dict[str, Any] = {"run_dir": str(run_dir), "torch_threads": 1}
    data = load_run_data(RunDir(run_dir))
    ex = build_training_examples(data)
    result = train(data, ex, TrainConfig(epochs=2))
    out["train_examples_per_s"] = round(result.examples_per_s)
    out["train_examples"] = len(ex)
    note = np.array([int(np.flatnonzero(data.cold)[0])])
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        result.item_embeddings(note)
        times.append(time.perf_counter() - t)
    out["embed_one_new_note"] = _p(times)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n_index, result.model.config.vector_dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = result.user_embeddings(np.arange(min(repeats, data.num_users)), data.cutoff_s)
    for kind in ("exact", "hnsw", "ivf"):
        t = time.perf_counter()
        index = NoteIndex.build(vecs, [str(i) for i in range(n_index)], kind=kind)
        build_s = time.perf_counter() - t
        times = []
        for q in queries:
            t = time.perf_counter()
            index.search(q[None, :], k)
            times.append(time.perf_counter() - t)
        out[f"top{k}_of_{n_index}_{kind}"] = {**_p(times), "build_s": round(build_s, 2)}
    cfg = RankerConfig(n_estimators=300, max_examples=50_000)
    rex = ranking_examples(data, data.cutoff_s - 14 * 86400, data.cutoff_s, cfg)
    frame = ranker_features(data, rex, result)
    ranker = train_ranker(frame, rex, cfg)
    cand = frame.iloc[:500]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        ranker.predict(cand)
        times.append(time.perf_counter() - t)
    out["ranker_score_500_candidates_300_trees"] = _p(times)
    feats = rex.take(np.arange(500))
    times = []
    for _ in range(20):
        t = time.perf_counter()
        ranker_features(data, feats, result)
        times.append(time.perf_counter() - t)
    out["ranker_features_500_candidates"] = _p(times)
    out["features"] = len(FEATURES)
    return out


def train_speed(
    run_dir: str | Path, *, rounds: int = 5, steps: int = 100, tags: str = "auto"
) -> dict[str, Any]:
    """Two-tower training examples/s of the recipe before issue 16 (no freshness, no wide term)
    and of the current default, interleaved ``rounds`` times (``steps`` steps each, calibration
    off: it is a second, shorter training, counted separately); medians and their ratio."""
    from dataclasses import replace

    import torch

    from features.io import RunDir
    from ranking.data import build_training_examples, load_run_data
    from ranking.retrieval.train import TrainConfig, train

    torch.set_num_threads(1)
    data = load_run_data(RunDir(run_dir), tags)
    ex = build_training_examples(data)
    configs = {
        "before": TrainConfig(freshness=False, wide_dim=0, max_steps=steps),
        "current": replace(TrainConfig(), calibrate_days=0.0, max_steps=steps),
    }
    speeds: dict[str, list[float]] = {k: [] for k in configs}
    for _ in range(rounds):
        for name, cfg in configs.items():
            speeds[name].append(train(data, ex, cfg).examples_per_s)
    med = {k: float(np.median(v)) for k, v in speeds.items()}
    return {
        "run_dir": str(run_dir),
        "torch_threads": 1,
        "steps": steps,
        "rounds": rounds,
        "examples_per_s": {k: round(v) for k, v in med.items()},
        "all_rounds": {k: [round(x) for x in v] for k, v in speeds.items()},
        "ratio_current_over_before": round(med["current"] / med["before"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m tagllm.bench.ranking", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", help="a run with tags (`tagllm demo` makes one)")
    parser.add_argument("--n-index", type=int, default=100_000, help="notes in the ANN benchmark index")
    parser.add_argument("--k", type=int, default=100, help="top-K of the search benchmark")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument(
        "--train-speed",
        action="store_true",
        help="only the two-tower training examples/s, before issue 16 vs the current recipe (interleaved)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="--train-speed: interleaved rounds")
    args = parser.parse_args(argv)
    if not Path(args.run_dir, "manifest.json").exists():
        parser.error(f"run_dir {args.run_dir!r} is not a prepared run directory (no manifest.json)")
    if args.rounds < 1:
        parser.error(f"--rounds: got {args.rounds}; expected an integer >= 1")
    if args.train_speed:
        sys.stdout.write(json.dumps(train_speed(args.run_dir, rounds=args.rounds), indent=2) + "\n")
        return 0
    sys.stdout.write(
        json.dumps(bench(args.run_dir, n_index=args.n_index, k=args.k, repeats=args.repeats), indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
