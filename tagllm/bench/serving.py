"""Serving benchmark: our gRPC server vs Feast's servers, Recommend latency, freshness.

    python -m tagllm.bench.serving --run RUN [--big-run BIG] [--json] [--rounds R] [--calls N]
        [--seconds S] [--skip note_tags|recommend|freshness]

One JSON object on stdout in every mode; progress on stderr (logging):

1. ``note_tags``: ``GetNoteTags`` with 100 random existing note ids against our server (a ``tagllm serve``
   subprocess on a free loopback port, one reused gRPC stub), the stock ``feast listen`` (gRPC) and the
   stock ``feast serve`` (HTTP ``POST /get-online-features``, one reused ``requests`` session) over the
   same run's Feast store, same ids, same ``note_tags`` features. All three run at once; ``--rounds``
   rounds of ``--calls`` sequential calls each, alternating call by call (ours, feast listen, feast
   serve), so every server sees the same machine noise: per-round p50/p99 of each, the per-round ratios
   p99_feast / p99_ours and their median/min/max (one ratio hides a wide swing on a shared box). Then
   QPS with 4 client threads for ``--seconds`` per server.
2. ``recommend``: ``Recommend`` K=50 from 300 candidates on ``--big-run`` (100k synthetic notes; built
   once when absent, see :func:`ensure_big_run`), sequential calls for random users, over gRPC and
   through :class:`~ranking.recommend.Recommender` in this process (the gRPC overhead). Without
   ``--big-run`` this section is ``{"skipped": "..."}`` (its target is about >= 50k notes; the demo run
   has a few thousand).
3. ``freshness``: ``TagNotes`` a copy (new id) of a note a user engaged with most, then poll
   ``Recommend(user, k=50, cold_start_only)`` until the note appears (1 s limit; misses are counted).

A section that fails is ``{"error": "..."}`` in the JSON, the others still run, and the exit status is 1
with a one-line error on stderr; 0 when every section that ran succeeded; 2 for a usage error.

Every server is a subprocess we start and stop by pid; ours counts as started when its gRPC health
check answers SERVING. The run's Feast store and journal are written to by TagNotes: pass a copy of the
run, never the original. TagNotes needs write permission: our server gets a random write token (env
``TAGLLM_WRITE_TOKEN``) that the freshness calls send.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tagllm.bench.procs import free_port, percentiles, stop_process, wait_health, wait_port

if TYPE_CHECKING:
    from features.feast_repo import FeastSettings

__all__ = ["bench_note_tags", "ensure_big_run", "feast_serve", "main", "our_server", "throughput"]

log = logging.getLogger(__name__)

K = 50
CANDIDATES = 300
FRESH_LIMIT_S = 1.0
SECTIONS = ("note_tags", "recommend", "freshness")


# ---- servers ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OurServer:
    """A ``tagllm serve`` subprocess: its gRPC target, process, log file and write token."""

    target: str
    proc: subprocess.Popen[Any]
    log_path: Path
    startup_s: float
    write_token: str = ""

    @property
    def write_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata TagNotes calls send."""
        return (("authorization", f"Bearer {self.write_token}"),)


@contextlib.contextmanager
def our_server(run_dir: Path, *flags: str, timeout: float = 900) -> Iterator[OurServer]:
    """Run ``tagllm serve --run RUN --port 0`` (access log off, a random write token, no read token) as
    a subprocess until its health check answers SERVING; stop it by pid."""
    tmp = Path(tempfile.mkdtemp(prefix="tagllm-serving-bench-"))
    port_file, log_path = tmp / "port", tmp / "server.log"
    exe = Path(sys.executable).with_name("tagllm")
    cmd = [str(exe), "serve", "--run", str(run_dir), "--port", "0", "--port-file", str(port_file)]
    cmd += ["--no-access-log", *flags]
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("TAGLLM_TOKEN", "TAGLLM_WRITE_TOKEN")}
    env["TAGLLM_WRITE_TOKEN"] = token
    t0 = time.perf_counter()
    with log_path.open("wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"our server did not start (exit {proc.poll()}; log {log_path}: {tail})")
            time.sleep(0.1)
        port = int(port_file.read_text().strip())
        wait_port(port, proc, 10)
        target = f"127.0.0.1:{port}"
        wait_health(target, proc, max(10.0, timeout - (time.perf_counter() - t0)))
        yield OurServer(target, proc, log_path, time.perf_counter() - t0, token)
    finally:
        stop_process(proc)


@contextlib.contextmanager
def feast_serve(settings: FeastSettings) -> Iterator[Callable[[list[str], list[str]], Any]]:
    """Run the stock ``feast serve`` (HTTP) for this run; yield ``call(ids, features) -> JSON body``.

    One gunicorn worker (our server is one process too), no access log, no periodic worker restart
    (``--max-requests 0``; the default 1000 would restart the worker during the benchmark).
    """
    import requests

    from tagllm.bench.features import start_feast_cli

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
            log.warning("%s did not start (%s); try %d/%d", what, exc, attempt + 1, tries)
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


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "per_round": [round(v, 2) for v in values],
    }


def bench_note_tags(
    run: Path, server: OurServer, *, n_ids: int, rounds: int, calls: int, seconds: float, seed: int
) -> dict[str, Any]:
    """GetNoteTags: ours vs ``feast listen`` vs ``feast serve``, ``rounds`` x ``calls`` alternating calls.

    Returns:
        per-round p50/p99 of each server, the per-round ratios p50/p99 feast / ours with their
        median/min/max, the QPS of each with 4 client threads, and whether the answers agree.
    """
    import grpc
    import pyarrow.parquet as pq

    from features.client import VIEW_FEATURES
    from features.feast_repo import FeastSettings
    from features.io import RunDir
    from serving.api.v1 import tag_features_pb2, tag_features_pb2_grpc
    from tagllm.bench.features import feast_listen

    settings = FeastSettings(run)
    table = RunDir(settings.run_dir).feature_table("note_tags")
    all_ids = pq.read_table(table, columns=["note_id"]).column(0).to_pylist()
    ids = random.Random(seed).sample([str(x) for x in all_ids], n_ids)
    features = list(VIEW_FEATURES["note_tags"])
    out: dict[str, Any] = {
        "ids": n_ids,
        "features": features,
        "rounds": rounds,
        "calls_per_round": calls,
        "order": "call by call: ours, feast_listen, feast_serve (50 warm-up calls each first)",
        "qps_seconds": seconds,
    }
    channel = grpc.insecure_channel(server.target)
    stub = tag_features_pb2_grpc.TagFeaturesStub(channel)
    with contextlib.ExitStack() as stack:
        stack.callback(channel.close)
        log.info("GetNoteTags: starting feast listen and feast serve")
        listen = stack.enter_context(
            _started(lambda: feast_listen(settings, start_timeout_s=300), "feast listen")
        )
        serve_call = stack.enter_context(_started(lambda: feast_serve(settings), "feast serve"))
        servers: dict[str, Callable[[], Any]] = {
            "ours": lambda: stub.GetNoteTags(tag_features_pb2.GetNoteTagsRequest(note_ids=ids), timeout=10),
            "feast_listen": lambda: listen("note_tags", "note_id", ids, features),
            "feast_serve": lambda: serve_call(ids, features),
        }
        out.update(_answers(servers, ids))
        for fn in servers.values():
            for _ in range(50):
                fn()
        per_round = []
        for r in range(rounds):
            samples: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(calls):
                for name, fn in servers.items():
                    t = time.perf_counter()
                    fn()
                    samples[name].append(time.perf_counter() - t)
            row: dict[str, Any] = {name: percentiles(s) for name, s in samples.items()}
            row["load_avg"] = _load_avg()
            per_round.append(row)
            log.info(
                "GetNoteTags round %d/%d: p99 ours %.2f ms, feast listen %.2f ms, feast serve %.2f ms",
                r + 1, rounds, row["ours"]["p99_ms"], row["feast_listen"]["p99_ms"],
                row["feast_serve"]["p99_ms"],
            )  # fmt: skip
        out["per_round"] = per_round
        for q in ("p50", "p99"):
            for peer in ("feast_listen", "feast_serve"):
                out[f"{q}_{peer}_over_ours"] = _spread(
                    [row[peer][f"{q}_ms"] / row["ours"][f"{q}_ms"] for row in per_round]
                )
        log.info("GetNoteTags: QPS, 4 threads x %.0f s per server", seconds)
        out["qps"] = {name: throughput(fn, 4, seconds) for name, fn in servers.items()}
    qps = {name: v["qps"] for name, v in out["qps"].items()}
    out["qps_ours_over_feast_listen"] = round(qps["ours"] / max(qps["feast_listen"], 1e-9), 2)
    out["qps_ours_over_feast_serve"] = round(qps["ours"] / max(qps["feast_serve"], 1e-9), 2)
    return out


def _answers(servers: dict[str, Callable[[], Any]], ids: list[str]) -> dict[str, Any]:
    """Rows each server returns and whether ours equal ``feast serve``'s tag texts."""
    ours = {n.note_id: [t.text for t in n.tags] for n in servers["ours"]().notes}
    grpc_resp = servers["feast_listen"]()
    body = servers["feast_serve"]()
    names = list(body["metadata"]["feature_names"])
    texts = body["results"][names.index("tag_texts")]["values"]
    http_tags = dict(zip(body["results"][names.index("note_id")]["values"], texts, strict=True))
    return {
        "rows": {
            "ours": len(ours),
            "feast_listen": len(grpc_resp.results[0].values) if grpc_resp.results else 0,
            "feast_serve": len(texts),
        },
        "answers_equal_ours_vs_feast_serve": all(list(http_tags.get(i) or []) == ours.get(i) for i in ids),
    }


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
    log.info("building the big run at %s (prepare + retrieval + ranker; minutes)", path)
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

    from features.io import RunDir
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
        log.info("Recommend over gRPC: %d calls", calls)
        samples, sizes = [], []
        for u in measured:
            t = time.perf_counter()
            resp = via_grpc(u)
            samples.append(time.perf_counter() - t)
            sizes.append(len(resp.notes))
        out["grpc"] = {**percentiles(samples), "min_results": min(sizes)}
        channel.close()
    log.info("Recommend in process")
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

    from features.io import RunDir
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
            tagging_pb2.TagNotesRequest(notes=[common_pb2.Note(note_id=nid, **note)]),
            timeout=30,
            metadata=server.write_metadata,
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
    parser.add_argument(
        "--big-run",
        type=Path,
        help="large run for Recommend (built here when absent; else recommend is skipped)",
    )
    parser.add_argument("--json", action="store_true", help="compact JSON (default: indented)")
    parser.add_argument("--rounds", type=int, default=5, help="GetNoteTags rounds (ratios per round)")
    parser.add_argument("--calls", type=int, default=500, help="GetNoteTags calls per server per round")
    parser.add_argument("--seconds", type=float, default=5.0, help="QPS phase length per server")
    parser.add_argument("--ids", type=int, default=100, help="note ids per GetNoteTags call")
    parser.add_argument("--recommend-calls", type=int, default=500, help="sequential Recommend calls")
    parser.add_argument("--fresh", type=int, default=100, help="TagNotes -> Recommend freshness trials")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip", action="append", default=[], choices=list(SECTIONS))
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error(f"--rounds {args.rounds} / --calls {args.calls}: expected integers >= 1")
    from features.io import RunDir

    run = args.run.resolve()
    rd = RunDir(run)
    missing = [str(p) for p in (rd.manifest_path, rd.retrieval_model, rd.feast_registry) if not p.exists()]
    if missing:
        parser.error(
            f"--run {run}: missing {', '.join(missing)}; expected a copy of a finished `tagllm demo` run"
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [serving_bench] %(message)s", datefmt="%H:%M:%S"
    )
    result = _bench(run, args)
    print(json.dumps(result, indent=None if args.json else 2))
    failed = {
        name: v["error"] for name in SECTIONS if isinstance(v := result.get(name), dict) and "error" in v
    }
    if failed:
        name, error = next(iter(failed.items()))
        print(f"tagllm.bench.serving: {', '.join(failed)} failed; {name}: {error}", file=sys.stderr)
        return 1
    return 0


def _bench(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every section, each one's figures or ``{"skipped": why}`` or ``{"error": one line}``."""
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
    for name in args.skip:
        result[name] = {"skipped": "--skip " + name}
    if "note_tags" not in args.skip or "freshness" not in args.skip:
        try:
            with our_server(run) as server:
                result["our_server_startup_s"] = round(server.startup_s, 1)
                if "note_tags" not in args.skip:
                    result["note_tags"] = _section(
                        "note_tags",
                        lambda: bench_note_tags(
                            run, server, n_ids=args.ids, rounds=args.rounds, calls=args.calls,
                            seconds=args.seconds, seed=args.seed,
                        ),
                    )  # fmt: skip
                if "freshness" not in args.skip:
                    log.info("freshness: %d TagNotes", args.fresh)
                    result["freshness"] = _section(
                        "freshness", lambda: bench_freshness(run, server, n=args.fresh, seed=args.seed)
                    )
        except RuntimeError as exc:  # our server did not start
            for name in ("note_tags", "freshness"):
                result.setdefault(name, {"error": _one_line(exc)})
    if "recommend" not in args.skip:
        if args.big_run is None:
            result["recommend"] = {
                "skipped": "no --big-run given (the Recommend target is about a run of >= 50k notes)"
            }
        else:
            big = args.big_run.resolve()

            def recommend() -> dict[str, Any]:
                result["big_run"] = ensure_big_run(big)
                return bench_recommend(big, calls=args.recommend_calls, seed=args.seed)

            result["recommend"] = _section("recommend", recommend)
    result["machine"]["load_avg_at_end"] = _load_avg()
    result["targets"] = _targets(result)
    return result


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:500]


def _section(name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``fn()``, or ``{"error": one line}`` when it fails for a reason outside this process's code (a
    server that did not start or answered an error, a file, a subprocess)."""
    import grpc

    from features.errors import TagLLMError

    try:
        return fn()
    except (RuntimeError, OSError, subprocess.SubprocessError, grpc.RpcError, TagLLMError) as exc:
        log.error("%s failed: %s", name, _one_line(exc))
        return {"error": _one_line(exc)}


def _targets(r: dict[str, Any]) -> dict[str, Any]:
    """The issue-7 targets for the sections that ran (GetNoteTags: on the median per-round ratio, and
    whether every round met it)."""
    t: dict[str, Any] = {}
    nt = r.get("note_tags", {})
    if "per_round" in nt:
        for peer in ("feast_listen", "feast_serve"):
            ratio = nt[f"p99_{peer}_over_ours"]
            t[f"get_note_tags_p99_5x_lower_than_{peer}"] = {
                "median_ratio": ratio["median"],
                "met_on_median": ratio["median"] >= 5,
                "met_in_every_round": ratio["min"] >= 5,
            }
    rec = r.get("recommend", {})
    if "grpc" in rec:
        t["recommend_p99_le_30ms"] = rec["grpc"]["p99_ms"] <= 30
        t["recommend_from_50k_notes"] = rec["notes"] >= 50_000
    fresh = r.get("freshness", {})
    if "p99_within_limit_counting_misses" in fresh:
        t["freshness_p99_le_1s"] = fresh["p99_within_limit_counting_misses"]
    return t


if __name__ == "__main__":
    raise SystemExit(main())
