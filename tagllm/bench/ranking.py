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


_SPEED_SCRIPT = """
import json, sys, time
# The trainer times its loop with time.perf_counter; CPU time of this process (torch on 1 thread)
# instead, so that other jobs on the machine do not move the figure.
time.perf_counter = time.process_time
import torch
torch.set_num_threads(1)
from features.io import RunDir
from ranking.data import build_training_examples, load_run_data
from ranking.retrieval.train import TrainConfig, train
run, tags, steps, recipe = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
data = load_run_data(RunDir(run), tags)
ex = build_training_examples(data)
kw = dict(max_steps=steps)
if recipe == "before":
    kw.update(freshness=False, wide_dim=0)
elif recipe == "current":
    kw.update(calibrate_days=0.0)
print(json.dumps(train(data, ex, TrainConfig(**kw)).examples_per_s))
"""


def _speed_once(code_dir: Path, run_dir: str, tags: str, steps: int, recipe: str) -> float:
    """Examples/s of one training in a fresh process importing the code under ``code_dir``."""
    import os
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(code_dir), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _SPEED_SCRIPT, str(Path(run_dir).resolve()), tags, str(steps), recipe],
        cwd=code_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"training benchmark ({recipe!r} in {code_dir}) failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def train_speed(
    run_dir: str | Path,
    *,
    rounds: int = 5,
    steps: int = 100,
    tags: str = "auto",
    baseline_ref: str | None = None,
) -> dict[str, Any]:
    """Two-tower training examples per CPU-second of the training loop (process CPU time, torch on
    1 thread: a busy machine does not move it the way it moves wall time), interleaved ``rounds``
    times (``steps`` steps each, one fresh process per measurement, calibration off: it is a
    second, shorter training):

    - ``current``: the current default recipe;
    - ``before_recipe``: the recipe before issue 16 (no freshness, no wide term) on the current code;
    - ``baseline``: with ``baseline_ref`` (a git commit), that commit's default recipe on that
      commit's code, checked out in a temporary ``git worktree`` (what "today's" speed was).

    Medians and the ratios of ``current`` to each."""
    import shutil
    import subprocess
    import tempfile

    repo = Path(__file__).resolve().parents[2]
    codes: dict[str, tuple[Path, str]] = {"before_recipe": (repo, "before"), "current": (repo, "current")}
    tmp: Path | None = None
    commit = None
    try:
        if baseline_ref is not None:
            tmp = Path(tempfile.mkdtemp(prefix="tagllm-baseline-"))
            commit = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "--verify", f"{baseline_ref}^{{commit}}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "add", "--detach", str(tmp / "code"), commit],
                capture_output=True,
                check=True,
            )
            codes = {"baseline": (tmp / "code", "default"), **codes}
        speeds: dict[str, list[float]] = {k: [] for k in codes}
        for _ in range(rounds):
            for name, (code, recipe) in codes.items():
                speeds[name].append(_speed_once(code, str(run_dir), tags, steps, recipe))
    finally:
        if tmp is not None:
            subprocess.run(
                ["git", "-C", str(repo), "worktree", "remove", "--force", str(tmp / "code")],
                capture_output=True,
                check=False,
            )
            shutil.rmtree(tmp, ignore_errors=True)
    med = {k: float(np.median(v)) for k, v in speeds.items()}
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "torch_threads": 1,
        "steps": steps,
        "rounds": rounds,
        "baseline_commit": commit,
        "examples_per_s": {k: round(v) for k, v in med.items()},
        "all_rounds": {k: [round(x) for x in v] for k, v in speeds.items()},
        "ratio_current_over_before_recipe": round(med["current"] / med["before_recipe"], 3),
    }
    if "baseline" in med:
        out["ratio_current_over_baseline"] = round(med["current"] / med["baseline"], 3)
    return out


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
    parser.add_argument(
        "--baseline-ref",
        default=None,
        help="--train-speed: also time this git commit's default recipe on its own code (a worktree)",
    )
    args = parser.parse_args(argv)
    if not Path(args.run_dir, "manifest.json").exists():
        parser.error(f"run_dir {args.run_dir!r} is not a prepared run directory (no manifest.json)")
    if args.rounds < 1:
        parser.error(f"--rounds: got {args.rounds}; expected an integer >= 1")
    if args.baseline_ref is not None:
        import subprocess

        repo = Path(__file__).resolve().parents[2]
        probe = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{args.baseline_ref}^{{commit}}"],
            capture_output=True,
            check=False,
        )
        if probe.returncode != 0:
            parser.error(
                f"--baseline-ref: {args.baseline_ref!r} is not a commit of {repo}; expected a commit id or ref"
            )
    if args.train_speed:
        sys.stdout.write(
            json.dumps(
                train_speed(args.run_dir, rounds=args.rounds, baseline_ref=args.baseline_ref), indent=2
            )
            + "\n"
        )
        return 0
    sys.stdout.write(
        json.dumps(bench(args.run_dir, n_index=args.n_index, k=args.k, repeats=args.repeats), indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
