"""Recommend latency at catalog scale: a run's catalog grown to N notes (default 1M), in process and over gRPC.

    python -m tagllm.bench.recommend_scale --run RUN [--notes 1000000] [--index-kinds exact,ivfpq]
        [--calls 500] [--warmup 50] [--json]

One JSON object on stdout; progress on stderr (logging). Steps:

1. Load the run's recommender (retrieval model + ranker, :meth:`Recommender.from_run`) and start the
   project's gRPC server on it (:func:`serving.server.start_server`, an asyncio loop in a thread of this
   process, a free loopback port; no tagger, no Feast sink, no journal), called through a plain
   synchronous channel.
2. At the run's own size, for each ``--index-kinds``: build the index over the catalog's vectors, then
   ``Recommend`` (K=50 from 300 candidates) for ``--calls`` random users after ``--warmup`` calls,
   sequentially, in process (:meth:`Recommender.recommend`) and over gRPC, the two paths alternating
   user by user (both see the same machine noise): p50/p99/mean.
3. Grow the catalog to ``--notes`` with synthetic notes: copies of the run's notes' category + tags
   under new ids, embedded by the item tower and indexed through :meth:`Recommender.add_notes` (the
   batched TagNotes / ``add_note`` path) in chunks: adds/s and RSS.
4. Step 2 again at the grown size, plus each ANN kind's recall of the exact top-``candidates`` on 100
   users (tie-aware: the copies share vectors, see :func:`_recall`); the JSON carries the grown /
   original p99 ratios.

As ``tagllm serve`` does after loading, the long-lived objects are moved out of the collector's reach
(``gc.freeze``) before timing, and the access log is off (``--no-access-log``). The run is only read. Exit 0 on success, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tagllm.bench.procs import percentiles

if TYPE_CHECKING:
    from ranking.recommend import Recommender

__all__ = ["bench", "grow", "main"]

log = logging.getLogger(__name__)

K = 50
CANDIDATES = 300
RECALL_USERS = 100


def _rss_mb() -> float:
    """Resident set size of this process now (MiB), from /proc (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def grow(rec: Recommender, notes: int, *, chunk: int = 20_000) -> dict[str, Any]:
    """Add synthetic notes until the catalog holds ``notes``: note ``j`` copies the category and tags of
    the run's note ``j mod N0`` under the id ``syn-<j>``, through :meth:`Recommender.add_notes`."""
    start = rec.num_notes
    sources = [str(n) for n in rec.catalog.note_ids[:start]]
    templates = [(rec.note_category(n), rec.note_tags(n)) for n in sources]
    t0 = time.perf_counter()
    for lo in range(start, notes, chunk):
        hi = min(notes, lo + chunk)
        rec.add_notes([(f"syn-{j}", *templates[j % start]) for j in range(lo, hi)])
        if (hi - start) % (10 * chunk) < chunk or hi == notes:
            log.info("grown to %d notes (%.0f adds/s)", hi, (hi - start) / (time.perf_counter() - t0))
    seconds = time.perf_counter() - t0
    added = max(0, notes - start)
    return {
        "from_notes": start,
        "to_notes": rec.num_notes,
        "added": added,
        "chunk": chunk,
        "seconds": round(seconds, 1),
        "adds_per_s": round(added / seconds, 1) if added else None,
    }


def _index_bytes(index: Any, kind: str) -> int | None:
    if kind == "exact":
        return int(index.index.ntotal * index.index.d * 4)
    if kind == "ivfpq":
        return int(sum(index.index.memory_bytes().values()))
    return None


def _timed(paths: dict[str, Callable[[str], Any]], warm: list[str], measured: list[str]) -> dict[str, Any]:
    """Latency of each path over the same users, alternating path by path for every user (so both
    see the same machine noise): :func:`percentiles` plus sequential calls/s per path."""
    for u in warm:
        for fn in paths.values():
            fn(u)
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for u in measured:
        for name, fn in paths.items():
            t = time.perf_counter()
            fn(u)
            samples[name].append(time.perf_counter() - t)
    out: dict[str, Any] = {}
    for name, s in samples.items():
        out[name] = percentiles(s)
        out[name]["per_s_sequential"] = round(1e3 / out[name]["mean_ms"], 1)
    return out


def _recall(rec: Recommender, found: dict[str, np.ndarray], exact: dict[str, np.ndarray], n: int) -> float:
    """Tie-aware recall of the exact top ``n``: the share of a user's retrieved notes whose exact score
    reaches the exact ``n``-th score (the grown catalog holds many copies with equal vectors, so which
    of equally scored copies comes back is arbitrary and note-id overlap would understate recall)."""
    hits = total = 0
    for u, rows in found.items():
        q = rec.towers.query(rec.users.vector(rec.users.row(u), rec.now_s))  # the shared query
        kth = float(np.min(rec.items[exact[u]] @ q)) if len(exact[u]) else 0.0
        hits += int(np.sum(rec.items[rows[:n]] @ q >= kth - 1e-5))
        total += min(n, len(exact[u]))
    return round(hits / total, 4) if total else 0.0


def _measure(
    rec: Recommender,
    kinds: list[str],
    stub: Any,
    users: list[str],
    args: argparse.Namespace,
    recall_users: list[str],
) -> dict[str, Any]:
    """Per index kind: build time, index bytes, RSS, in-process and gRPC latency, recall vs exact."""
    from ranking.retrieval.index import NoteIndex
    from serving.api.v1 import recommendation_pb2

    rng = random.Random(args.seed)
    warm, measured = rng.sample(users, min(args.warmup, len(users))), rng.choices(users, k=args.calls)
    ids = list(rec.catalog.note_ids)
    out: dict[str, Any] = {"notes": rec.num_notes, "rss_mb_before_index": _rss_mb(), "kinds": {}}
    exact_rows: dict[str, np.ndarray] = {}
    for kind in kinds:
        rec.live.index = None  # type: ignore[assignment]  # drop the previous index before building
        gc.collect()
        t0 = time.perf_counter()
        rec.live.index = NoteIndex.build(rec.items, ids, kind=kind)
        r: dict[str, Any] = {"build_s": round(time.perf_counter() - t0, 1)}
        r["index_bytes"] = _index_bytes(rec.live.index, kind)
        gc.collect()
        gc.freeze()  # as `tagllm serve` does after loading: full collections skip the long-lived objects
        r["rss_mb"] = _rss_mb()
        log.info("%d notes, %s: built in %.1fs", rec.num_notes, kind, r["build_s"])
        paths: dict[str, Callable[[str], Any]] = {
            "in_process": lambda u: rec.recommend(u, args.k, candidates=args.candidates)
        }
        if stub is not None:

            def via_grpc(u: str) -> Any:
                req = recommendation_pb2.RecommendRequest(user_id=u, k=args.k, candidates=args.candidates)
                resp = stub.Recommend(req, timeout=30)
                if len(resp.notes) != args.k:
                    raise RuntimeError(
                        f"Recommend({u!r}) returned {len(resp.notes)} notes; expected {args.k}"
                    )
                return resp

            paths["grpc"] = via_grpc
        log.info("%d notes, %s: Recommend via %s, alternating", rec.num_notes, kind, " and ".join(paths))
        r.update(_timed(paths, warm, measured))
        if stub is not None:
            r["grpc_overhead_p50_ms"] = round(r["grpc"]["p50_ms"] - r["in_process"]["p50_ms"], 3)
        found = {u: rec.retrieve(u, args.candidates)[0] for u in recall_users}
        if kind == "exact":
            exact_rows = found
        elif exact_rows:
            r[f"recall_at_{args.candidates}_vs_exact"] = _recall(rec, found, exact_rows, args.candidates)
        gc.unfreeze()
        out["kinds"][kind] = r
    return out


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark (module docstring) for parsed arguments."""
    import faiss
    import grpc

    from ranking.recommend import Recommender
    from serving.api.v1 import recommendation_pb2_grpc
    from serving.loop_thread import LoopThread
    from serving.server import start_server

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "faiss_omp_threads": faiss.omp_get_max_threads(),
        },
        "run": str(args.run),
        "k": args.k,
        "candidates": args.candidates,
        "calls": args.calls,
        "warmup": args.warmup,
        "index_kinds": args.kinds,
    }
    t0 = time.perf_counter()
    rec = Recommender.from_run(args.run)
    result["load_s"] = round(time.perf_counter() - t0, 1)
    users = rec.user_ids()
    recall_users = random.Random(args.seed + 1).sample(users, min(RECALL_USERS, len(users)))
    loop = channel = None
    stub = None
    running = None
    try:
        if args.grpc:
            loop = LoopThread()
            journal = Path(tempfile.mkdtemp(prefix="recommend-scale-")) / "none.journal"
            coro = start_server(
                args.run, recommender=rec, tagger=None, features=None, port=0, journal=journal
            )
            running = loop.run(coro)
            result["grpc_target"] = running.target
            channel = grpc.insecure_channel(running.target)
            stub = recommendation_pb2_grpc.RecommendationStub(channel)
        result["original"] = _measure(rec, args.kinds, stub, users, args, recall_users)
        rec.live.index = None  # type: ignore[assignment]
        gc.collect()
        from ranking.retrieval.index import NoteIndex

        rec.live.index = NoteIndex.build(rec.items, list(rec.catalog.note_ids), kind="exact")
        log.info("growing the catalog from %d to %d notes", rec.num_notes, args.notes)
        result["grow"] = grow(rec, args.notes, chunk=args.chunk)
        result["grow"]["rss_mb_after"] = _rss_mb()
        result["scaled"] = _measure(rec, args.kinds, stub, users, args, recall_users)
    finally:
        if channel is not None:
            channel.close()
        if loop is not None:
            if running is not None:
                loop.run(running.stop(1.0))
            loop.close()
    result["ratios_scaled_over_original"] = {
        kind: {
            f"{path}_p99": round(
                result["scaled"]["kinds"][kind][path]["p99_ms"]
                / result["original"]["kinds"][kind][path]["p99_ms"],
                2,
            )
            for path in ("in_process", "grpc")
            if path in result["scaled"]["kinds"][kind]
        }
        for kind in args.kinds
    }
    result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tagllm.bench.recommend_scale",
        description="Recommend p50/p99 at catalog scale (a run grown to --notes), in process and over gRPC.",
    )
    p.add_argument(
        "--run", required=True, type=Path, help="a run with retrieval/model.pt and ranker/model.txt"
    )
    p.add_argument("--notes", type=int, default=1_000_000, help="grow the catalog to this many notes")
    p.add_argument(
        "--index-kinds", default="exact,ivfpq", help="comma-separated: exact, ivf, hnsw, ivfpq [exact,ivfpq]"
    )
    p.add_argument("--calls", type=int, default=500, help="measured sequential Recommend calls per path")
    p.add_argument("--warmup", type=int, default=50, help="calls before the measured ones")
    p.add_argument("--k", type=int, default=K, help="notes per Recommend")
    p.add_argument("--candidates", type=int, default=CANDIDATES, help="retrieval candidates per Recommend")
    p.add_argument("--chunk", type=int, default=20_000, help="notes per add_notes call while growing")
    p.add_argument(
        "--faiss-threads",
        type=int,
        default=0,
        help="OpenMP threads for faiss searches (0 = faiss's default, what `tagllm serve` runs with)",
    )
    p.add_argument("--no-grpc", dest="grpc", action="store_false", help="in-process timings only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="compact JSON (default: indented)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("notes", "calls", "k", "candidates", "chunk"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: got {getattr(args, name)}; expected an integer >= 1")
    if args.faiss_threads < 0:
        parser.error(f"--faiss-threads: got {args.faiss_threads}; expected an integer >= 0 (0 = default)")
    if args.warmup < 0:
        parser.error(f"--warmup: got {args.warmup}; expected an integer >= 0")
    if args.candidates < args.k:
        parser.error(f"--candidates: got {args.candidates}; expected >= --k ({args.k})")
    if args.faiss_threads:
        # OpenMP reads this once, when faiss loads (below): it then holds for every thread, the gRPC
        # server's worker included (omp_set_num_threads would set the calling thread's only)
        os.environ["OMP_NUM_THREADS"] = str(args.faiss_threads)
    from ranking.retrieval.index import INDEX_KINDS

    args.kinds = [k.strip() for k in args.index_kinds.split(",") if k.strip()]
    bad = [k for k in args.kinds if k not in INDEX_KINDS]
    if bad or not args.kinds or len(set(args.kinds)) != len(args.kinds):
        parser.error(
            f"--index-kinds: got {args.index_kinds!r}; expected distinct names of {', '.join(INDEX_KINDS)}"
        )
    args.kinds.sort(key=lambda k: k != "exact")  # exact first: the others' recall is measured against it
    from features.io import RunDir

    run = args.run.resolve()
    rd = RunDir(run)
    missing = [str(p) for p in (rd.manifest_path, rd.retrieval_model, rd.ranker_model) if not p.exists()]
    if missing:
        parser.error(
            f"--run {run}: missing {', '.join(missing)}; expected a run with a trained model and ranker"
        )
    have = int(json.loads(rd.manifest_path.read_text()).get("tables", {}).get("notes", 0))
    if args.notes < have:
        parser.error(f"--notes: got {args.notes}; the run already has {have} notes (expected at least that)")
    args.run = run
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s [recommend_scale] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    # as `tagllm serve --no-access-log` (the serving benchmark's setting): no JSON line per request
    logging.getLogger("serving.server.access").setLevel(logging.WARNING)
    result = bench(args)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
