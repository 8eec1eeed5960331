"""Online-read and fresh-push benchmark: our FeatureClient vs Feast's own paths, same run, same process.

    python -m tagllm.bench.features --run RUN_DIR [--redis HOST:PORT | --start-redis] [--json]

Per online store (SQLite; Redis when given or started): 100 notes x all ``note_tags`` features via
(1) ``FeatureClient.online`` (direct store read), (2) ``FeatureStore.get_online_features`` and
(3) ``feast listen`` (Feast's gRPC feature server, a subprocess on a free loopback port, queried with
its gRPC client). Then fresh tags: push a new note and read it back with our client, 100 times.
The run must have been applied + materialized (``tagllm features apply/materialize``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from features.feast_repo import FEATURE_REPO, FeastSettings
from features.io import RunDir
from tagllm.bench.procs import free_port, percentiles, redis_server, stop_process, time_call, wait_port

__all__ = ["bench_store", "feast_listen", "main", "start_feast_cli"]


def start_feast_cli(settings: FeastSettings, *args: str) -> subprocess.Popen[Any]:
    """Start ``feast -f <run's feature_store.yaml> <args>`` from the feature repo (quiet)."""
    feast_cli = Path(sys.executable).with_name("feast")
    return subprocess.Popen(
        [str(feast_cli), "-f", str(settings.yaml_path), *args],
        cwd=FEATURE_REPO,
        env={**os.environ, **settings.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.contextmanager
def feast_listen(settings: FeastSettings, *, start_timeout_s: float = 60.0) -> Iterator[Any]:
    """Run the stock ``feast listen`` for this run as a subprocess; yield a call(view, ids, features)."""
    import grpc
    from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerStub
    from feast.protos.feast.serving.ServingService_pb2 import FeatureList, GetOnlineFeaturesRequest
    from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

    port = free_port()
    proc = start_feast_cli(settings, "listen", "--address", f"127.0.0.1:{port}")
    channel = None
    try:
        wait_port(port, proc, start_timeout_s)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = GrpcFeatureServerStub(channel)

        def call(view: str, key: str, ids: list[str], features: list[str]) -> Any:
            req = GetOnlineFeaturesRequest(
                features=FeatureList(val=[f"{view}:{f}" for f in features]),
                entities={key: RepeatedValue(val=[Value(string_val=i) for i in ids])},
            )
            return stub.GetOnlineFeatures(req, timeout=10)

        yield call
    finally:
        if channel is not None:
            channel.close()
        stop_process(proc)


def bench_store(
    settings: FeastSettings, *, n_ids: int = 100, repeats: int = 200, pushes: int = 100
) -> dict[str, Any]:
    """Read latencies of the three paths and fresh-push latency for one online store."""
    from features.client import VIEW_FEATURES, FeatureClient

    features = list(VIEW_FEATURES["note_tags"])
    with FeatureClient(settings.run_dir, online=settings.online, redis=settings.redis) as client:
        import pyarrow.parquet as pq

        ids = (
            pq.read_table(RunDir(settings.run_dir).feature_table("note_tags"), columns=["note_id"])
            .column(0)
            .to_pylist()[:n_ids]
        )
        ours = client.online("note_tags", ids)
        theirs = client.online_feast("note_tags", ids)
        equal = all(ours.columns[f] == theirs[f] for f in features)
        out: dict[str, Any] = {"ids": len(ids), "features": len(features), "answers_equal": equal}
        out["ours"] = time_call(lambda: client.online("note_tags", ids), repeats)
        out["feast_get_online_features"] = time_call(lambda: client.online_feast("note_tags", ids), repeats)
        with feast_listen(settings) as call:
            resp = call("note_tags", "note_id", ids, features)
            out["feast_listen_grpc_rows"] = len(resp.results[0].values) if resp.results else 0
            out["feast_listen_grpc"] = time_call(lambda: call("note_tags", "note_id", ids, features), repeats)
        out["speedup_p50_vs_feast"] = round(
            out["feast_get_online_features"]["p50_ms"] / out["ours"]["p50_ms"], 2
        )
        out["speedup_p99_vs_feast"] = round(
            out["feast_get_online_features"]["p99_ms"] / out["ours"]["p99_ms"], 2
        )
        out["speedup_p99_vs_feast_listen"] = round(
            out["feast_listen_grpc"]["p99_ms"] / out["ours"]["p99_ms"], 2
        )
        # Fresh tags: push a new note, then poll our client until it reads the tags back.
        samples = []
        stamp = time.time_ns()
        for k in range(pushes):
            nid = f"bench-fresh-{stamp}-{k}"
            rec = {
                "note_id": nid,
                "tags": [{"text": "fresh", "dimension": "d", "confidence": 0.9}],
                "tagger_version": "bench",
            }
            t = time.perf_counter()
            client.push_note_tags([rec])
            while client.note_tags([nid])[0] is None:
                if time.perf_counter() - t > 5:
                    raise RuntimeError(f"pushed note {nid} not readable after 5 s")
            samples.append(time.perf_counter() - t)
        out["push_to_readable"] = {"pushes": pushes, **percentiles(samples)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tagllm.bench.features", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--run", required=True, help="applied + materialized run directory (SQLite)")
    parser.add_argument("--redis", help="HOST:PORT of a redis-server to benchmark too")
    parser.add_argument("--start-redis", action="store_true", help="start a throwaway redis-server")
    parser.add_argument("--ids", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--pushes", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print JSON (default: also JSON, indented)")
    args = parser.parse_args(argv)
    from features.feast_repo import apply, materialize

    run = Path(args.run).resolve()
    result: dict[str, Any] = {"run": str(run), "machine": f"{os.cpu_count()} CPUs"}
    sqlite = FeastSettings(run)
    result["sqlite"] = bench_store(sqlite, n_ids=args.ids, repeats=args.repeats, pushes=args.pushes)
    with contextlib.ExitStack() as stack:
        addr = args.redis or (stack.enter_context(redis_server()) if args.start_redis else None)
        if addr:
            rs = FeastSettings(run, online="redis", redis=addr)
            t = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress; stdout is JSON only
                apply(rs, compute=False)
                m = materialize(rs)
            result["redis_load"] = {
                "apply_and_materialize_s": round(time.perf_counter() - t, 2),
                **{"materialize_s": m["materialize_seconds"]},
            }
            result["redis"] = bench_store(rs, n_ids=args.ids, repeats=args.repeats, pushes=args.pushes)
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
