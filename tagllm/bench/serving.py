"""Serving benchmark: our gRPC server vs Feast's servers, Recommend latency, freshness.

    python -m tagllm.bench.serving --run RUN [--big-run BIG] [--json] [--repeats N] [--seconds S]

One run, one JSON object on stdout (progress on stderr):

1. ``note_tags``: ``GetNoteTags`` with 100 random existing note ids against our server (a ``tagllm serve``
   subprocess on a free loopback port, one reused gRPC stub), the stock ``feast listen`` (gRPC) and the
   stock ``feast serve`` (HTTP ``POST /get-online-features``, one reused ``requests`` session) over the
   same run's Feast store, same ids, same ``note_tags`` features: p50/p99 of sequential calls after
   warm-up, QPS with 4 client threads for ``--seconds``, and p99_feast / p99_ours.
2. ``recommend``: ``Recommend`` K=50 from 300 candidates on ``--big-run`` (100k synthetic notes; built
   once when absent, see :func:`ensure_big_run`), sequential calls for random users, over gRPC and
   through :class:`~ranking.recommend.Recommender` in this process (the gRPC overhead).
3. ``freshness``: ``TagNotes`` a copy (new id) of a note a user engaged with most, then poll
   ``Recommend(user, k=50, cold_start_only)`` until the note appears (1 s limit; misses are counted).

Every server is a subprocess we start and stop by pid. The run's Feast store is written to by TagNotes
(the server pushes fresh tags): pass a copy of the run, never the original.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.feast_repo import FeastSettings
from features.io import RunDir
from tagllm.bench.features import feast_listen, start_feast_cli
from tagllm.bench.procs import free_port, percentiles, stop_process, time_call, wait_port

__all__ = ["ensure_big_run", "feast_serve", "main", "our_server", "throughput"]

K = 50
CANDIDATES = 300
FRESH_LIMIT_S = 1.0


def _say(msg: str) -> None:
    print(f"[serving_bench] {msg}", file=sys.stderr, flush=True)


# ---- servers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OurServer:
    """A ``tagllm serve`` subprocess: its gRPC target, process and log file."""

    target: str
    proc: subprocess.Popen[Any]
    log_path: Path
    startup_s: float


@contextlib.contextmanager
def our_server(run_dir: Path, *flags: str, timeout: float = 900) -> Iterator[OurServer]:
    """Run ``tagllm serve --run RUN --port 0`` (access log off) as a subprocess; stop it by pid."""
    tmp = Path(tempfile.mkdtemp(prefix="tagllm-serving-bench-"))
    port_file, log_path = tmp / "port", tmp / "server.log"
    exe = Path(sys.executable).with_name("tagllm")
    cmd = [str(exe), "serve", "--run", str(run_dir), "--port", "0", "--port-file", str(port_file)]
    cmd += ["--no-access-log", *flags]
    t0 = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        while not port_file.exists():
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"our server did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.1)
        port = int(port_file.read_text().strip())
        wait_port(port, proc, 10)
        yield OurServer(f"127.0.0.1:{port}", proc, log_path, time.perf_counter() - t0)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def feast_serve(settings: FeastSettings) -> Iterator[Callable[[list[str], list[str]], Any]]:
    """Run the stock ``feast serve`` (HTTP) for this run; yield ``call(ids, features) -> JSON body``.

    One gunicorn worker (our server is one process too), no access log, no periodic worker restart
    (``--max-requests 0``; the default 1000 would restart the worker during the benchmark).
    """
    import requests

    port = free_port()
    proc = start_feast_cli(
        settings, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        "--workers", "1", "--max-requests", "0",
    )  # fmt: skip
    session = requests.Session()
    url = f"http://127.0.0.1:{port}/get-online-features"
    local = threading.local()
    try:
        wait_port(port, proc, 300)

        def call(ids: list[str], features: list[str]) -> Any:
            # requests.Session is not thread-safe: one per thread for the QPS phase.
            s = session if threading.current_thread() is threading.main_thread() else _session(local)
            body: dict[str, Any] = {
                "features": [f"note_tags:{f}" for f in features],
                "entities": {"note_id": ids},
            }
            r = s.post(url, json=body, timeout=10)
            r.raise_for_status()
            return r.json()

        yield call
    finally:
        session.close()
        stop_process(proc)


@contextlib.contextmanager
def _started(factory: Callable[[], Any], what: str, tries: int = 3) -> Iterator[Any]:
    """Enter ``factory()`` (a server context manager), retrying a failed start: on this shared 2-core
    box ``import feast`` alone can exceed ``tagllm.bench.features.feast_listen``'s 60 s start limit."""
    for attempt in range(1, tries + 1):
        stack = contextlib.ExitStack()
        try:
            value = stack.enter_context(factory())
        except RuntimeError as exc:
            stack.close()
            if attempt == tries:
                raise
            _say(f"{what} did not start ({exc}); try {attempt + 1}/{tries}")
            continue
        with stack:
            yield value
        return


def _session(local: threading.local) -> Any:
    import requests

    if not hasattr(local, "session"):
        local.session = requests.Session()
    return local.session


# ---- measuring ----------------------------------------------------------------------------------------


def throughput(fn: Callable[[], Any], threads: int = 4, seconds: float = 5.0) -> dict[str, Any]:
    """Calls per second of ``fn`` from ``threads`` client threads for ``seconds`` (errors counted)."""
    counts = [0] * threads
    errors = [0] * threads
    start = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def worker(i: int) -> None:
        start.wait()
        while time.perf_counter() < stop_at[0]:
            try:
                fn()
                counts[i] += 1
            except Exception:
                errors[i] += 1

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    start.wait()
    for t in pool:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "qps": round(sum(counts) / wall, 1),
        "calls": sum(counts),
        "errors": sum(errors),
        "threads": threads,
    }


def _load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ---- 1. GetNoteTags vs feast listen / feast serve -----------------------------------------------------


def bench_note_tags(
    run: Path, server: OurServer, *, n_ids: int, repeats: int, seconds: float, seed: int
) -> dict[str, Any]:
    import grpc
    import pyarrow.parquet as pq

    from features.client import VIEW_FEATURES
    from serving.api.v1 import tag_features_pb2, tag_features_pb2_grpc

    settings = FeastSettings(run)
    all_ids = pq.read_table(RunDir(settings.run_dir).feature_table("note_tags"), columns=["note_id"]).column(
        0
    )
    ids = random.Random(seed).sample([str(x) for x in all_ids.to_pylist()], n_ids)
    features = list(VIEW_FEATURES["note_tags"])
    out: dict[str, Any] = {"ids": n_ids, "features": features, "repeats": repeats, "qps_seconds": seconds}

    channel = grpc.insecure_channel(server.target)
    stub = tag_features_pb2_grpc.TagFeaturesStub(channel)

    def ours() -> Any:
        return stub.GetNoteTags(tag_features_pb2.GetNoteTagsRequest(note_ids=ids), timeout=10)

    first = ours()
    ours_tags = {n.note_id: [t.text for t in n.tags] for n in first.notes}
    _say("GetNoteTags: ours")
    out["ours"] = {**time_call(ours, repeats, warmup=50), **throughput(ours, 4, seconds)}

    _say("GetNoteTags: feast listen")
    with _started(lambda: feast_listen(settings, start_timeout_s=300), "feast listen") as listen:

        def theirs_grpc() -> Any:
            return listen("note_tags", "note_id", ids, features)

        resp = theirs_grpc()
        rows = len(resp.results[0].values) if resp.results else 0
        out["feast_listen"] = {
            "rows": rows,
            **time_call(theirs_grpc, repeats, warmup=50),
            **throughput(theirs_grpc, 4, seconds),
        }

    _say("GetNoteTags: feast serve")
    with _started(lambda: feast_serve(settings), "feast serve") as serve_call:
        body = serve_call(ids, features)
        names = list(body["metadata"]["feature_names"])
        texts = body["results"][names.index("tag_texts")]["values"]
        http_tags = dict(zip(body["results"][names.index("note_id")]["values"], texts, strict=True))
        out["answers_equal_ours_vs_feast_serve"] = all(
            list(http_tags.get(i) or []) == ours_tags.get(i) for i in ids
        )

        def theirs_http() -> Any:
            return serve_call(ids, features)

        out["feast_serve"] = {
            "rows": len(texts),
            **time_call(theirs_http, repeats, warmup=50),
            **throughput(theirs_http, 4, seconds),
        }
    channel.close()
    p99 = out["ours"]["p99_ms"]
    out["p99_feast_listen_over_ours"] = round(out["feast_listen"]["p99_ms"] / p99, 2)
    out["p99_feast_serve_over_ours"] = round(out["feast_serve"]["p99_ms"] / p99, 2)
    out["qps_ours_over_feast_listen"] = round(out["ours"]["qps"] / max(out["feast_listen"]["qps"], 1e-9), 2)
    out["qps_ours_over_feast_serve"] = round(out["ours"]["qps"] / max(out["feast_serve"]["qps"], 1e-9), 2)
    return out


# ---- 2. Recommend on >= 50k notes ---------------------------------------------------------------------


BIG_BUILD: dict[str, dict[str, Any]] = {
    "prepare": {"source": "synthetic", "size": "large", "seed": 0},
    "retrieval": {"tag_sources": ["ground_truth"], "epochs": 1, "peers": False},
    "ranker": {
        "tag_source": "ground_truth",
        "n_estimators": 200,
        "max_examples": 100_000,
        "retrieval_epochs": 1,
    },
}


def ensure_big_run(path: Path) -> dict[str, Any]:
    """Build the large synthetic run once (prepare, 1-epoch retrieval, 200-tree ranker); reuse it after.

    The ranker keeps LightGBM's model size (200 trees, 31 leaves); to fit the machine, its training data
    is capped at 100k examples and its out-of-sample retrieval model trains 1 epoch.
    """
    from features.io import read_json, write_json

    marker = path / "serving_bench_build.json"
    if marker.exists() and (path / "ranker" / "model.txt").exists():
        return {**read_json(marker), "cached": True}
    from features.prepare import prepare
    from ranking.pipeline import ranker_stage, retrieval_stage
    from ranking.ranker import RankerConfig
    from ranking.retrieval.train import TrainConfig

    b = BIG_BUILD
    seconds: dict[str, float] = {}
    _say(f"building the big run at {path} (prepare + retrieval + ranker; minutes)")
    t = time.perf_counter()
    manifest = prepare(b["prepare"]["source"], path, size=b["prepare"]["size"], seed=b["prepare"]["seed"])
    seconds["prepare"] = time.perf_counter() - t
    t = time.perf_counter()
    retrieval_stage(
        path,
        tag_sources=b["retrieval"]["tag_sources"],
        config=TrainConfig(epochs=b["retrieval"]["epochs"]),
        peers=b["retrieval"]["peers"],
    )
    seconds["retrieval"] = time.perf_counter() - t
    t = time.perf_counter()
    r = b["ranker"]
    summary = ranker_stage(
        path,
        tag_source=r["tag_source"],
        config=RankerConfig(n_estimators=r["n_estimators"], max_examples=r["max_examples"]),
        retrieval_config=TrainConfig(feature_set="tags", epochs=r["retrieval_epochs"]),
    )
    seconds["ranker"] = time.perf_counter() - t
    info = {
        "build": b,
        "tables": manifest["tables"],
        "ranker_train_examples": summary["train_examples"],
        "ranker_auc": summary.get("full_auc"),
        "build_seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    write_json(info, marker)
    return {**info, "cached": False}


def bench_recommend(big: Path, *, calls: int, seed: int) -> dict[str, Any]:
    import grpc

    from ranking.recommend import Recommender
    from serving.api.v1 import recommendation_pb2, recommendation_pb2_grpc

    out: dict[str, Any] = {"run": str(big), "k": K, "candidates": CANDIDATES, "calls": calls}
    with our_server(big) as server:
        out["server_startup_s"] = round(server.startup_s, 1)
        channel = grpc.insecure_channel(server.target)
        stub = recommendation_pb2_grpc.RecommendationStub(channel)
        import pyarrow.parquet as pq

        users = [
            str(u)
            for u in pq.read_table(RunDir(big).table_path("users"), columns=["user_id"]).column(0).to_pylist()
        ]
        rng = random.Random(seed)
        warm = rng.sample(users, 50)
        measured = rng.sample(users, calls)

        def via_grpc(u: str) -> Any:
            req = recommendation_pb2.RecommendRequest(user_id=u, k=K, candidates=CANDIDATES)
            return stub.Recommend(req, timeout=10)

        for u in warm:
            via_grpc(u)
        _say(f"Recommend over gRPC: {calls} calls")
        samples, sizes = [], []
        for u in measured:
            t = time.perf_counter()
            resp = via_grpc(u)
            samples.append(time.perf_counter() - t)
            sizes.append(len(resp.notes))
        out["grpc"] = {**percentiles(samples), "min_results": min(sizes)}
        channel.close()
    _say("Recommend in process")
    t = time.perf_counter()
    rec = Recommender.from_run(big)
    out["in_process_load_s"] = round(time.perf_counter() - t, 1)
    out["notes"], out["users"] = rec.num_notes, len(users)
    for u in warm:
        rec.recommend(u, K, candidates=CANDIDATES)
    samples = []
    for u in measured:
        t = time.perf_counter()
        rec.recommend(u, K, candidates=CANDIDATES)
        samples.append(time.perf_counter() - t)
    out["in_process"] = percentiles(samples)
    out["grpc_overhead_p50_ms"] = round(out["grpc"]["p50_ms"] - out["in_process"]["p50_ms"], 3)
    return out


# ---- 3. freshness -------------------------------------------------------------------------------------


def _favourites(run: Path, n: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """(user, the note they engaged with most) for ``n`` random users with >= 5 engagements."""
    import pandas as pd

    from ranking.data import ENGAGEMENT_WEIGHTS

    inter = pd.read_parquet(RunDir(run).table_path("interactions"), columns=["user_id", "note_id", "event"])
    inter = inter[inter["event"].isin(list(ENGAGEMENT_WEIGHTS))]
    inter = inter.assign(w=inter["event"].map(ENGAGEMENT_WEIGHTS).astype(float))
    per = inter.groupby(["user_id", "note_id"], observed=True)["w"].sum().reset_index()
    counts = inter.groupby("user_id", observed=True).size()
    eligible = sorted(str(u) for u in counts[counts >= 5].index)
    users = random.Random(seed).sample(eligible, min(n, len(eligible)))
    best = per.sort_values(["user_id", "w", "note_id"], ascending=[True, False, True]).drop_duplicates(
        "user_id"
    )
    fav = dict(zip(best["user_id"].astype(str), best["note_id"].astype(str), strict=True))
    notes = pd.read_parquet(RunDir(run).table_path("notes")).set_index("note_id")
    out = []
    for u in users:
        row = notes.loc[fav[u]]
        note = {
            "category": str(row["category"]),
            "title": str(row["title"] or ""),
            "body": str(row["body"] or ""),
            "image_captions": [
                str(c) for c in (row["image_captions"] if row["image_captions"] is not None else [])
            ],
        }
        out.append((u, note))
    return out


def bench_freshness(run: Path, server: OurServer, *, n: int, seed: int) -> dict[str, Any]:
    import grpc

    from serving.api.v1 import (
        common_pb2,
        recommendation_pb2,
        recommendation_pb2_grpc,
        tagging_pb2,
        tagging_pb2_grpc,
    )

    channel = grpc.insecure_channel(server.target)
    tagging = tagging_pb2_grpc.TaggingStub(channel)
    recs = recommendation_pb2_grpc.RecommendationStub(channel)
    stamp = time.strftime("%Y%m%d%H%M%S")
    tag_s, fresh_s, polls, misses, ranks = [], [], [], [], []
    filters = recommendation_pb2.Filters(cold_start_only=True)
    for i, (user, note) in enumerate(_favourites(run, n, seed)):
        nid = f"fresh-{stamp}-{i:03d}"
        t0 = time.perf_counter()
        tagging.TagNotes(
            tagging_pb2.TagNotesRequest(notes=[common_pb2.Note(note_id=nid, **note)]), timeout=30
        )
        t1 = time.perf_counter()
        tag_s.append(t1 - t0)
        k = 0
        while True:
            k += 1
            resp = recs.Recommend(
                recommendation_pb2.RecommendRequest(user_id=user, k=K, filters=filters), timeout=10
            )
            got = [m.note_id for m in resp.notes]
            now = time.perf_counter()
            if nid in got:
                fresh_s.append(now - t1)
                ranks.append(got.index(nid) + 1)
                break
            if now - t1 > FRESH_LIMIT_S:
                # Was it retrievable but ranked below K (a relevance miss), or not there at all?
                deep = recs.Recommend(
                    recommendation_pb2.RecommendRequest(user_id=user, k=500, filters=filters), timeout=10
                )
                deep_ids = [m.note_id for m in deep.notes]
                rank = deep_ids.index(nid) + 1 if nid in deep_ids else None
                misses.append({"user": user, "note_id": nid, "polls": k, "rank_in_top_500": rank})
                break
        polls.append(k)
    channel.close()
    out: dict[str, Any] = {
        "notes": n,
        "k": K,
        "filter": "cold_start_only",
        "limit_s": FRESH_LIMIT_S,
        "tag_notes": percentiles(tag_s),
        "misses": len(misses),
        "miss_examples": misses[:5],
        "misses_ranked_below_k": sum(m["rank_in_top_500"] is not None for m in misses),
        "polls_mean": round(sum(polls) / len(polls), 2),
    }
    if fresh_s:
        out["tag_notes_return_to_visible"] = {"found": len(fresh_s), **percentiles(fresh_s)}
        out["rank_of_fresh_note"] = {"median": sorted(ranks)[len(ranks) // 2], "max": max(ranks)}
    # p99 over all N with misses counted as "never" (> limit): honest when misses exceed 1%.
    out["p99_within_limit_counting_misses"] = len(misses) <= int(0.01 * n) and (
        not fresh_s or percentiles(fresh_s)["p99_ms"] <= FRESH_LIMIT_S * 1000
    )
    return out


# ---- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tagllm.bench.serving", description=__doc__.split("\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--run", required=True, type=Path, help="a COPY of a demo run (Feast store + student)"
    )
    parser.add_argument("--big-run", type=Path, help="large run for Recommend (built here when absent)")
    parser.add_argument("--json", action="store_true", help="compact JSON (default: indented)")
    parser.add_argument("--repeats", type=int, default=1000, help="sequential calls per latency figure")
    parser.add_argument("--seconds", type=float, default=5.0, help="QPS phase length per server")
    parser.add_argument("--ids", type=int, default=100, help="note ids per GetNoteTags call")
    parser.add_argument("--recommend-calls", type=int, default=500, help="sequential Recommend calls")
    parser.add_argument("--fresh", type=int, default=100, help="TagNotes -> Recommend freshness trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--skip", action="append", default=[], choices=["note_tags", "recommend", "freshness"]
    )
    args = parser.parse_args(argv)
    run = args.run.resolve()
    rd = RunDir(run)
    missing = [str(p) for p in (rd.manifest_path, rd.retrieval_model, rd.feast_registry) if not p.exists()]
    if missing:
        parser.error(
            f"--run {run}: missing {', '.join(missing)}; expected a copy of a finished `tagllm demo` run"
        )
    from importlib.metadata import version

    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_start": _load_avg(),
            "python": platform.python_version(),
            "grpcio": version("grpcio"),
            "feast": version("feast"),
        },
        "run": str(run),
    }
    if "note_tags" not in args.skip or "freshness" not in args.skip:
        with our_server(run) as server:
            result["our_server_startup_s"] = round(server.startup_s, 1)
            if "note_tags" not in args.skip:
                result["note_tags"] = bench_note_tags(
                    run, server, n_ids=args.ids, repeats=args.repeats, seconds=args.seconds, seed=args.seed
                )
            if "freshness" not in args.skip:
                _say(f"freshness: {args.fresh} TagNotes")
                result["freshness"] = bench_freshness(run, server, n=args.fresh, seed=args.seed)
    if "recommend" not in args.skip:
        if args.big_run is None:
            parser.error("--big-run BIG is required for the recommend part (or --skip recommend)")
        big = args.big_run.resolve()
        result["big_run"] = ensure_big_run(big)
        result["recommend"] = bench_recommend(big, calls=args.recommend_calls, seed=args.seed)
    result["machine"]["load_avg_at_end"] = _load_avg()
    result["targets"] = _targets(result)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


def _targets(r: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = {}
    if "note_tags" in r:
        nt = r["note_tags"]
        t["get_note_tags_p99_5x_lower_than_feast_listen"] = nt["p99_feast_listen_over_ours"] >= 5
        t["get_note_tags_p99_5x_lower_than_feast_serve"] = nt["p99_feast_serve_over_ours"] >= 5
    if "recommend" in r:
        t["recommend_p99_le_30ms"] = r["recommend"]["grpc"]["p99_ms"] <= 30
        t["recommend_from_50k_notes"] = r["recommend"]["notes"] >= 50_000
    if "freshness" in r:
        t["freshness_p99_le_1s"] = r["freshness"]["p99_within_limit_counting_misses"]
    return t


if __name__ == "__main__":
    raise SystemExit(main())
