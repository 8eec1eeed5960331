"""Benchmark: the IVF-PQ note index at catalog scale — build, memory, recall@k vs exact, latency, adds.

``python -m tagllm.bench.index_scale --n 10000000 --json``

1. Generates ``--n`` note vectors (a Gaussian mixture of ``--centers`` topics, unit-normalized, float32,
   ``--dim`` wide) in chunks of ``--chunk``; a chunk is added to the index and scored against the
   queries by brute force, then dropped, so the float vectors are never all in memory.
2. Trains :class:`~ranking.retrieval.index.NoteIndex` ``kind="ivfpq"`` on a separate sample of
   ``--train-size`` vectors, adds the chunks under string note ids, and keeps the exact top ``--k`` of
   each of ``--queries`` queries (drawn from the same mixture) as the ground truth.
3. Measures: build time (train, add), index bytes (PQ codes + ids in the lists, centroids,
   codebooks, re-rank store) and peak RSS; recall@k and single-query p50/p99 latency for each
   ``--sweep`` nprobe (and recall without the re-rank at ``--nprobe``); single-note add and replace
   latency and the batch add rate for ``--fresh`` new notes.
4. Prints one JSON. With ``--n`` below 10M it adds a ``projected_10m`` block (labelled so): add time
   and list/store bytes linear in N, query time linear in the codes scanned per query.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Mixture", "main", "run"]

log = logging.getLogger(__name__)

TEN_M = 10_000_000
TRAIN, QUERIES, FRESH = (0, 0), (1, 0), (2, 0)  # random streams; chunk streams are (3, first row)


@dataclass(frozen=True)
class Mixture:
    """A Gaussian mixture of unit topic directions; ``spread`` is the noise norm around a topic."""

    dim: int = 97
    centers: int = 2048
    spread: float = 0.5
    seed: int = 0

    def means(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, 0])
        mu = rng.standard_normal((self.centers, self.dim), dtype=np.float32)
        return mu / np.linalg.norm(mu, axis=1, keepdims=True)

    def draw(self, n: int, stream: tuple[int, int], mu: np.ndarray) -> np.ndarray:
        """(n, dim) float32 unit vectors from random stream ``stream`` (the same stream, the same draw)."""
        rng = np.random.default_rng([self.seed, 1, *stream])
        x = rng.standard_normal((n, self.dim), dtype=np.float32)
        x *= self.spread / np.sqrt(self.dim)
        x += mu[rng.integers(0, self.centers, n)]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, size):
        yield lo, min(n, lo + size)


def _top_k_merge(
    best_s: np.ndarray, best_i: np.ndarray, s: np.ndarray, offset: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge scores ``s`` (Q, c) of rows ``offset..offset+c`` into the running top ``k`` (unsorted)."""
    all_s = np.concatenate([best_s, s], axis=1)
    all_i = np.concatenate(
        [best_i, np.arange(offset, offset + s.shape[1])[None, :].repeat(len(s), 0)], axis=1
    )
    part = np.argpartition(-all_s, k - 1, axis=1)[:, :k]
    return np.take_along_axis(all_s, part, 1), np.take_along_axis(all_i, part, 1)


def _percentiles(seconds: list[float]) -> dict[str, float]:
    a = np.asarray(seconds) * 1000.0
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def _rss_mib() -> dict[str, float]:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    now = 0.0
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) / 1024
    return {"rss_now_mib": round(now, 1), "rss_peak_mib": round(peak, 1)}


def _build(a: argparse.Namespace, mix: Mixture, mu: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """Train, then add the N vectors chunk by chunk while keeping the exact top k of the queries."""
    from tqdm import tqdm

    from ranking.retrieval.index import IVFPQConfig, NoteIndex

    cfg = IVFPQConfig(
        nlist=a.nlist, m=a.m, nbits=a.nbits, nprobe=a.nprobe, refine=a.refine,
        refine_factor=a.refine_factor, train_size=a.train_size, opq=a.opq, seed=a.seed,
    )  # fmt: skip
    t = time.perf_counter()
    sample = mix.draw(a.train_size, stream=TRAIN, mu=mu)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    index = NoteIndex.trained(sample, ivfpq=cfg)
    train_s = time.perf_counter() - t
    del sample
    log.info(
        "trained %d cells, m=%d on %d vectors in %.1fs", index.index.ivf.nlist, a.m, a.train_size, train_s
    )
    index.index.reserve(a.n + a.fresh)
    best_s = np.full((len(queries), a.k), -np.inf, np.float32)
    best_i = np.full((len(queries), a.k), -1, np.int64)
    add_s = exact_s = 0.0
    for lo, hi in tqdm(list(_chunks(a.n, a.chunk)), desc="generate + add", unit="chunk", file=sys.stderr):
        t = time.perf_counter()
        x = mix.draw(hi - lo, stream=(3, lo), mu=mu)
        ids = [f"n{i}" for i in range(lo, hi)]
        gen_s += time.perf_counter() - t
        t = time.perf_counter()
        index.add(x, ids)
        add_s += time.perf_counter() - t
        t = time.perf_counter()
        best_s, best_i = _top_k_merge(best_s, best_i, queries @ x.T, lo, a.k)
        exact_s += time.perf_counter() - t
    truth = [{f"n{i}" for i in row} for row in best_i]
    return {
        "index": index, "truth": truth, "generate_s": gen_s, "train_s": train_s, "add_s": add_s,
        "exact_s": exact_s,
    }  # fmt: skip


def _query(index: Any, queries: np.ndarray, truth: list[set[str]], k: int, nprobe: int) -> dict[str, Any]:
    index.index.nprobe = nprobe
    _, got = index.search(queries, k)
    recall = float(np.mean([len(set(g) & t) / k for g, t in zip(got, truth, strict=True)]))
    times = []
    for q in queries:
        t = time.perf_counter()
        index.search(q[None, :], k)
        times.append(time.perf_counter() - t)
    return {"nprobe": nprobe, f"recall_at_{k}": round(recall, 4), **_percentiles(times)}


def _recall_without_rerank(index: Any, queries: np.ndarray, truth: list[set[str]], k: int) -> float:
    _, rows = index.index.base.search(queries, k)  # the PQ estimates alone
    got = [{index.note_ids[r] for r in row if r >= 0} for row in rows]
    return round(float(np.mean([len(g & t) / k for g, t in zip(got, truth, strict=True)])), 4)


def _fresh(a: argparse.Namespace, index: Any, mix: Mixture, mu: np.ndarray) -> dict[str, Any]:
    """Add ``--fresh`` new notes: single-note adds (as live publishing does), then a batch; replaces."""
    x = mix.draw(a.fresh, stream=FRESH, mu=mu)
    singles = min(500, a.fresh // 2)
    times = []
    for i in range(singles):
        t = time.perf_counter()
        index.add(x[i : i + 1], [f"fresh{i}"])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    index.add(x[singles:], [f"fresh{i}" for i in range(singles, a.fresh)])
    batch_s = time.perf_counter() - t
    _, top = index.search(x[:50], 10)
    found = sum(f"fresh{i}" in row for i, row in enumerate(top))
    replace = []
    for i in range(a.replaces):
        t = time.perf_counter()
        index.add(x[i + 1 : i + 2], [f"n{i}"])  # a re-tag: the old note gets a new vector
        replace.append(time.perf_counter() - t)
    return {
        "single_add": _percentiles(times),
        "single_adds_per_s": round(singles / sum(times), 1),
        "batch_add_per_s": round((a.fresh - singles) / batch_s, 1),
        "fresh_found_in_own_top10_of_50": found,
        "replace": _percentiles(replace) if replace else None,
    }


def _projection(out: dict[str, Any], n: int, nlist: int, nprobe: int) -> dict[str, Any]:
    """10M figures from an ``n``-vector run: linear in N where the work is (labelled as projected)."""
    f = TEN_M / n
    mem = out["memory_bytes"]
    scanned = f  # codes scanned per query grow with N at fixed nlist and nprobe; the rest does not
    main = out["at_nprobe"]
    return {
        "note": f"projected from N={n}: not measured",
        "add_s": round(out["build"]["add_s"] * f, 1),
        "build_s": round(out["build"]["train_s"] + out["build"]["add_s"] * f, 1),
        "index_bytes": int(mem["lists"] * f + mem["refine"] * f + mem["centroids"] + mem["codebooks"]),
        "query_p99_ms_upper": round(main["p99_ms"] * scanned, 2),
    }


def run(a: argparse.Namespace) -> dict[str, Any]:
    """The benchmark (see the module docstring); returns the JSON-ready result."""
    import faiss

    faiss.omp_set_num_threads(a.threads)
    mix = Mixture(dim=a.dim, centers=a.centers, spread=a.spread, seed=a.seed)
    mu = mix.means()
    queries = mix.draw(a.queries, stream=QUERIES, mu=mu)
    b = _build(a, mix, mu, queries)
    index, truth = b.pop("index"), b.pop("truth")
    out: dict[str, Any] = {
        "n": a.n, "dim": a.dim, "k": a.k, "queries": a.queries, "threads": a.threads,
        "params": {
            "nlist": index.index.ivf.nlist, "m": a.m, "nbits": a.nbits, "nprobe": a.nprobe,
            "refine": a.refine, "refine_factor": a.refine_factor, "train_size": a.train_size, "opq": a.opq,
        },
        "data": {"centers": a.centers, "spread": a.spread, "seed": a.seed},
        "build": {key: round(v, 1) for key, v in b.items()},
    }  # fmt: skip
    out["build"]["build_s"] = round(b["train_s"] + b["add_s"], 1)
    out["build"]["adds_per_s"] = round(a.n / b["add_s"], 1)
    mem = index.index.memory_bytes()
    out["memory_bytes"] = {**mem, "total": sum(mem.values())}
    out["memory_bytes_per_note"] = round(sum(mem.values()) / a.n, 1)
    out["rss_after_build"] = _rss_mib()
    sweep = sorted({*a.sweep, a.nprobe})
    out["sweep"] = [_query(index, queries, truth, a.k, p) for p in sweep]
    out["at_nprobe"] = next(r for r in out["sweep"] if r["nprobe"] == a.nprobe)
    index.index.nprobe = a.nprobe
    if a.refine != "none":
        out[f"recall_at_{a.k}_without_rerank"] = _recall_without_rerank(index, queries, truth, a.k)
    out["fresh"] = _fresh(a, index, mix, mu)
    out["rss_end"] = _rss_mib()
    if a.n < TEN_M:
        out["projected_10m"] = _projection(out, a.n, index.index.ivf.nlist, a.nprobe)
    return out


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"got {text!r}; expected comma-separated integers, e.g. 8,16,32"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}; expected positive integers, e.g. 8,16,32")
    return values


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``python -m tagllm.bench.index_scale``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=TEN_M, help="notes to index (default 10M)")
    p.add_argument("--dim", type=int, default=97, help="vector width (default 97: TwoTowerConfig.vector_dim)")
    p.add_argument("--k", type=int, default=100, help="top k for recall and latency (default 100)")
    p.add_argument(
        "--queries", type=int, default=200, help="queries with an exact ground truth (default 200)"
    )
    p.add_argument("--nlist", type=int, default=4096, help="IVF cells (default 4096; 0 = automatic)")
    p.add_argument("--m", type=int, default=32, help="PQ sub-quantizers = code bytes (default 32)")
    p.add_argument("--nbits", type=int, default=8, help="bits per PQ code (default 8)")
    p.add_argument("--nprobe", type=int, default=32, help="cells scanned per query (default 32)")
    p.add_argument("--sweep", type=_ints, default=[8, 16, 64], help="other nprobe values (default 8,16,64)")
    p.add_argument("--refine", choices=["none", "sq8", "flat"], default="sq8", help="re-rank store")
    p.add_argument("--refine-factor", type=int, default=4, help="candidates re-ranked per slot (default 4)")
    p.add_argument("--train-size", type=int, default=262_144, help="training sample (default 262144)")
    p.add_argument("--opq", action="store_true", help="learn an OPQ rotation instead of zero-padding")
    p.add_argument("--centers", type=int, default=2048, help="mixture topics (default 2048)")
    p.add_argument("--spread", type=float, default=0.5, help="noise norm around a topic (default 0.5)")
    p.add_argument("--chunk", type=int, default=100_000, help="vectors generated at a time (default 100k)")
    p.add_argument(
        "--fresh", type=int, default=20_000, help="fresh notes added after the build (default 20k)"
    )
    p.add_argument("--replaces", type=int, default=20, help="re-tags (replacing adds) timed (default 20)")
    p.add_argument(
        "--threads", type=int, default=1, help="faiss OpenMP threads (default 1: see docs/scaling.md)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--json", action="store_true", help="print the JSON on one line (logs go to stderr)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    for name in ("n", "dim", "k", "queries", "m", "nprobe", "refine_factor", "chunk", "threads", "fresh"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')}: got {getattr(a, name)}; expected an integer >= 1")
    if a.n < a.k or a.fresh < 2:
        p.error(f"--n: got {a.n} with --k {a.k} and --fresh {a.fresh}; expected n >= k and fresh >= 2")
    if a.nlist < 0 or a.train_size < max(a.nlist, 256):
        p.error(f"--train-size: got {a.train_size} for --nlist {a.nlist}; expected >= max(nlist, 256)")
    res = run(a)
    text = json.dumps(res, indent=None if a.json else 2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    sys.stdout.write(text + "\n")
    log.info("pid %d done", os.getpid())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
