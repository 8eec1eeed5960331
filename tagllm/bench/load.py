"""Load benchmark: the TagLLM server under C concurrent clients with a mixed workload, per configuration.

    python -m tagllm.bench.load --run RUN [--clients 50] [--seconds 30] [--warmup 3]
        [--configs before,after_1,after_2] [--repeats 1] [--client-procs 1] [--server-flag FLAG ...] [--json]

Configurations (``tagllm serve --run COPY --port 0 --port-file F --no-access-log`` plus):

- ``before``: ``--no-offload --max-inflight METHOD=100000`` for every method: Recommend and Rank on the
  event loop, no admission control (the server before issue 15);
- ``after_1``: the defaults, one worker (``--workers 1``);
- ``after_2``: ``--workers 2``.

TagNotes needs write permission: the server gets a random write token (env ``TAGLLM_WRITE_TOKEN``) and
the TagNotes calls send it (``authorization: Bearer``); reads stay open (no read token). For each one:

1. RUN is copied to a fresh temporary directory (TagNotes appends its notes to the run's journal and
   pushes them to its Feast store, so each configuration starts from the same state; the copy is removed
   afterwards, the server log is kept);
2. the server starts; start-up is timed until ``grpc.health.v1.Health/Check("")`` answers SERVING;
3. ``--warmup`` seconds of the workload (not recorded), then ``--seconds`` measured: ``--clients`` asyncio
   tasks, each on its own grpc.aio channel and TCP connection (so ``--workers 2``, which shares the port
   with SO_REUSEPORT, gets connections on both workers), split over ``--client-procs`` processes, call
   back to back with a 2 s deadline: 50 % GetNoteTags (100 random note ids), 10 % GetUserInterests
   (5 random users), 25 % Recommend (random user, k=50), 10 % Rank (random user, 100 random note ids),
   5 % TagNotes (one new note: a unique id, category, title and body of a random note of the run);
4. the server is stopped by pid (SIGTERM, SIGKILL after 15 s), on errors too.

One JSON object on stdout. Per configuration its flags, ``runs`` (``--repeats`` of them, interleaved
with the other configurations) and ``median`` (of the headline figures over the runs). Per run and
method: calls, OK calls/s, p50/p99 (ms) of the OK calls and the calls per status code
(RESOURCE_EXHAUSTED is admission control at work); totals; client and server CPU seconds in the measured
window (a client near ``client_procs`` full cores was the bottleneck); start-up seconds; tracebacks and
ERROR lines in the server log (or ``error`` when the server or a client process failed). Then the
ratios between configurations and the issue-15 goals, on the medians. Progress goes to stderr; the exit
status is 1 when a run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import random
import re
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tagllm.bench.procs import percentiles, stop_process, tree_cpu_s, wait_health

__all__ = ["CONFIGS", "MIX", "Workload", "main", "measure_config", "run_clients"]

log = logging.getLogger(__name__)

#: Share of calls per method (percent).
MIX = {"GetNoteTags": 50, "GetUserInterests": 10, "Recommend": 25, "Rank": 10, "TagNotes": 5}
DEADLINE_S = 2.0
NOTE_IDS_PER_CALL = 100
USERS_PER_CALL = 5
K = 50
RANK_IDS = 100
UNLIMITED = 100_000

#: Server flags per configuration.
CONFIGS: dict[str, tuple[str, ...]] = {
    "before": ("--no-offload", *(x for m in MIX for x in ("--max-inflight", f"{m}={UNLIMITED}"))),
    "after_1": ("--workers", "1"),
    "after_2": ("--workers", "2"),
}

#: Goals of issue 15.
GOAL_NOTE_TAGS_P99_MS = 20.0
GOAL_RECOMMEND_P99_MS = 100.0
GOAL_WORKER_SCALING = 1.6
GOAL_STARTUP_S = 15.0


@dataclass(frozen=True)
class Workload:
    """What the clients send: ids and note texts from the run, and the timing.

    Args:
        note_ids: the run's notes (GetNoteTags and Rank draw from them).
        user_ids: the run's users.
        notes: (category, title, body) of run notes that TagNotes copies under new ids.
        clients: concurrent clients in all.
        warmup_s, seconds: unrecorded warm-up, then the measured window.
        seed: the clients' random choices.
        rate: 0: closed loop (each client sends its next call when the last one answered: the load
            adapts to the server, latency is in-flight / throughput). > 0: open loop at ``rate`` calls/s
            in all (Poisson arrivals split over the clients, a call never waits for the previous one):
            the latency a caller sees at that offered load.
        write_token: the server's write token (TagNotes sends it).
    """

    note_ids: tuple[str, ...]
    user_ids: tuple[str, ...]
    notes: tuple[tuple[str, str, str], ...]
    clients: int = 50
    warmup_s: float = 3.0
    seconds: float = 30.0
    seed: int = 0
    rate: float = 0.0
    write_token: str = field(default_factory=lambda: secrets.token_hex(16), repr=False)


def load_workload(run: Path, **timing: Any) -> Workload:
    """Note ids, user ids and 500 notes' texts from ``run``'s notes and users tables."""
    import pyarrow.parquet as pq

    from features.io import RunDir

    rd = RunDir(run)
    notes = pq.read_table(rd.table_path("notes"), columns=["note_id", "category", "title", "body"])
    rows = notes.to_pylist()
    users = pq.read_table(rd.table_path("users"), columns=["user_id"]).column(0).to_pylist()
    texts = random.Random(timing.get("seed", 0)).sample(rows, min(500, len(rows)))
    return Workload(
        note_ids=tuple(str(r["note_id"]) for r in rows),
        user_ids=tuple(str(u) for u in users),
        notes=tuple((str(r["category"]), str(r["title"] or ""), str(r["body"] or "")) for r in texts),
        **timing,
    )


# ---- the client processes -----------------------------------------------------------------------------


@dataclass
class _Tally:
    """One client process's results: OK latencies (s) and status codes per method."""

    ok_s: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MIX})
    codes: dict[str, Counter[str]] = field(default_factory=lambda: {m: Counter() for m in MIX})
    cpu_s: float = 0.0


async def _drive(target: str, work: Workload, proc: int, n: int, label: str, conn: Any) -> _Tally:
    import grpc

    from serving.api.v1 import (
        common_pb2,
        recommendation_pb2,
        recommendation_pb2_grpc,
        tag_features_pb2,
        tag_features_pb2_grpc,
        tagging_pb2,
        tagging_pb2_grpc,
    )

    # A local subchannel pool: one TCP connection per channel (gRPC shares them across equal channels).
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(n)
    ]
    await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 60)
    conn.send("ready")
    start = conn.recv()
    measure_from = start + work.warmup_s
    stop_at = measure_from + work.seconds
    tally = _Tally()
    names, weights = list(MIX), list(MIX.values())
    stamp = time.strftime("%H%M%S")
    write_auth = (("authorization", f"Bearer {work.write_token}"),)

    async def client(i: int, channel: grpc.aio.Channel) -> None:
        rng = random.Random(f"{work.seed}-{proc}-{i}")
        features = tag_features_pb2_grpc.TagFeaturesStub(channel)
        recs = recommendation_pb2_grpc.RecommendationStub(channel)
        tagging = tagging_pb2_grpc.TaggingStub(channel)
        fresh = 0

        def request(method: str) -> tuple[Any, Any, Any]:
            """(stub method, request, metadata) for one call of ``method``."""
            nonlocal fresh
            if method == "GetNoteTags":
                ids = rng.sample(work.note_ids, NOTE_IDS_PER_CALL)
                return features.GetNoteTags, tag_features_pb2.GetNoteTagsRequest(note_ids=ids), None
            if method == "GetUserInterests":
                users = rng.sample(work.user_ids, USERS_PER_CALL)
                req = tag_features_pb2.GetUserInterestsRequest(user_ids=users)
                return features.GetUserInterests, req, None
            if method == "Recommend":
                req = recommendation_pb2.RecommendRequest(user_id=rng.choice(work.user_ids), k=K)
                return recs.Recommend, req, None
            if method == "Rank":
                ids = rng.sample(work.note_ids, RANK_IDS)
                req = recommendation_pb2.RankRequest(user_id=rng.choice(work.user_ids), note_ids=ids)
                return recs.Rank, req, None
            fresh += 1
            category, title, body = rng.choice(work.notes)
            note = common_pb2.Note(
                note_id=f"load-{label}-{stamp}-{proc}-{i}-{fresh}", category=category, title=title, body=body
            )
            return tagging.TagNotes, tagging_pb2.TagNotesRequest(notes=[note]), write_auth

        async def one(now: float) -> None:
            method = rng.choices(names, weights)[0]
            call, req, metadata = request(method)
            t = time.perf_counter()
            try:
                await call(req, timeout=DEADLINE_S, metadata=metadata)
                code = "OK"
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            dt = time.perf_counter() - t
            if now >= measure_from:
                tally.codes[method][code] += 1
                if code == "OK":
                    tally.ok_s[method].append(dt)

        await asyncio.sleep(max(0.0, start - time.time()))
        if work.rate <= 0:
            await _closed_loop(one, stop_at)
        else:
            await _open_loop(one, work.rate / work.clients, rng, stop_at)

    async def cpu_window() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.time()))
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, stop_at - time.time()))
        tally.cpu_s = time.process_time() - cpu0

    await asyncio.gather(cpu_window(), *(client(i, c) for i, c in enumerate(channels)))
    for c in channels:
        await c.close()
    return tally


async def _closed_loop(one: Callable[[float], Coroutine[Any, Any, None]], stop_at: float) -> None:
    """Each call right after the previous answer."""
    while (now := time.time()) < stop_at:
        await one(now)


async def _open_loop(
    one: Callable[[float], Coroutine[Any, Any, None]], rate: float, rng: random.Random, stop_at: float
) -> None:
    """Calls at Poisson arrival times of ``rate`` per second, never waiting for earlier answers."""
    pending: set[asyncio.Task[None]] = set()
    due = time.time() + rng.expovariate(rate)
    while due < stop_at:
        await asyncio.sleep(max(0.0, due - time.time()))
        task = asyncio.get_running_loop().create_task(one(due))
        pending.add(task)
        task.add_done_callback(pending.discard)
        due += rng.expovariate(rate)
    if pending:
        await asyncio.gather(*pending)


def _client_process(target: str, work: Workload, proc: int, n: int, label: str, conn: Any) -> None:
    """A client process: ``n`` clients; sends "ready", receives the start time, sends its :class:`_Tally`."""
    try:
        conn.send(asyncio.run(_drive(target, work, proc, n, label, conn)))
    except Exception as exc:  # reported to the parent, which fails the benchmark with it
        conn.send(f"client process {proc}: {type(exc).__name__}: {exc}")
    finally:
        conn.close()


def run_clients(target: str, work: Workload, procs: int, label: str, server_pid: int) -> dict[str, Any]:
    """Drive ``target`` with ``work`` from ``procs`` client processes; the per-method and total figures.

    Raises:
        RuntimeError: a client process failed or did not answer in time.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    split = [work.clients // procs + (i < work.clients % procs) for i in range(procs)]
    pipes, workers = [], []
    try:
        for i, n in enumerate(split):
            ours, theirs = ctx.Pipe()
            p = ctx.Process(target=_client_process, args=(target, work, i, n, label, theirs), daemon=True)
            p.start()
            pipes.append(ours)
            workers.append(p)
        for i, conn in enumerate(pipes):
            msg = conn.recv() if conn.poll(120) else "no answer in 120 s"
            if msg != "ready":
                raise RuntimeError(f"client process {i} did not connect: {msg}")
        start = time.time() + 0.5
        for conn in pipes:
            conn.send(start)
        measure_from = start + work.warmup_s
        time.sleep(max(0.0, measure_from - time.time()))
        server0 = tree_cpu_s(server_pid)
        time.sleep(max(0.0, measure_from + work.seconds - time.time()))
        server1 = tree_cpu_s(server_pid)
        tallies: list[_Tally] = []
        for conn in pipes:
            msg = conn.recv() if conn.poll(DEADLINE_S + 60) else "no result in time"
            if not isinstance(msg, _Tally):
                raise RuntimeError(str(msg))
            tallies.append(msg)
    finally:
        for p in workers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    out = _summary(tallies, work.seconds)
    out["client"] = {
        "procs": procs,
        "cpu_s": round(sum(t.cpu_s for t in tallies), 2),
        "cores_busy": round(sum(t.cpu_s for t in tallies) / work.seconds, 2),
    }
    if server0 is not None and server1 is not None:
        busy = server1 - server0
        out["server_cpu"] = {
            "cpu_s": round(busy, 2),
            "cores_busy": round(busy / work.seconds, 2),
            "ms_per_call": round(1e3 * busy / max(out["total"]["calls"], 1), 2),
        }
    return out


def _summary(tallies: list[_Tally], seconds: float) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    calls = ok = 0
    for m in MIX:
        lat = [x for t in tallies for x in t.ok_s[m]]
        codes: Counter[str] = sum((t.codes[m] for t in tallies), Counter())
        n, n_ok = sum(codes.values()), codes.get("OK", 0)
        calls, ok = calls + n, ok + n_ok
        methods[m] = {"calls": n, "ok_per_s": round(n_ok / seconds, 1), "codes": dict(sorted(codes.items()))}
        if lat:
            methods[m].update(percentiles(lat))
    return {
        "methods": methods,
        "total": {
            "calls": calls,
            "ok": ok,
            "calls_per_s": round(ok / seconds, 1),
            "error_share": round((calls - ok) / calls, 4) if calls else None,
        },
    }


# ---- the servers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A started ``tagllm serve``: its target, process, log and start-up seconds."""

    target: str
    proc: subprocess.Popen[Any]
    log_path: Path
    startup_s: float
    port_file_s: float


@contextlib.contextmanager
def started_server(
    run: Path, flags: list[str], log_path: Path, *, write_token: str, timeout: float = 300
) -> Iterator[Server]:
    """``tagllm serve --run RUN --port 0 --port-file F --no-access-log FLAGS`` with ``write_token`` (env
    ``TAGLLM_WRITE_TOKEN``; no read token); stopped by pid on exit."""
    port_file = log_path.with_suffix(".port")
    port_file.unlink(missing_ok=True)
    exe = Path(sys.executable).with_name("tagllm")
    cmd = [str(exe), "serve", "--run", str(run), "--port", "0", "--port-file", str(port_file)]
    cmd += ["--no-access-log", *flags]
    log.info("starting %s", " ".join(cmd[1:]))
    t0 = time.perf_counter()
    with log_path.open("wb") as f:
        env = {k: v for k, v in os.environ.items() if k not in ("TAGLLM_TOKEN", "TAGLLM_WRITE_TOKEN")}
        env["TAGLLM_WRITE_TOKEN"] = write_token
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.perf_counter() - t0 > timeout:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"server did not start (exit {proc.poll()}; log {log_path}: {tail})")
            time.sleep(0.05)
        port_file_s = time.perf_counter() - t0
        target = f"127.0.0.1:{int(port_file.read_text().strip())}"
        wait_health(target, proc, max(1.0, timeout - port_file_s))
        yield Server(target, proc, log_path, time.perf_counter() - t0, port_file_s)
    finally:
        stop_process(proc, timeout=15)


def server_log_problems(path: Path) -> dict[str, Any]:
    """Tracebacks and ERROR/CRITICAL lines in a server log, with the first traceback's text."""
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    errors = [ln for ln in lines if re.search(r"\b(ERROR|CRITICAL)\b", ln)]
    out: dict[str, Any] = {"log": str(path), "tracebacks": text.count("Traceback (most recent call last)")}
    out["error_lines"] = len(errors)
    if errors:
        out["first_error_lines"] = errors[:5]
    if out["tracebacks"]:
        i = text.index("Traceback (most recent call last)")
        out["first_traceback"] = text[max(0, text.rfind("\n", 0, max(0, i - 1)) + 1) : i + 3000]
    return out


def server_flags() -> set[str]:
    """The long options ``tagllm serve --help`` lists."""
    exe = Path(sys.executable).with_name("tagllm")
    help_text = subprocess.run(
        [str(exe), "serve", "--help"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", help_text))


def config_flags(name: str, known: set[str]) -> tuple[list[str] | None, str]:
    """(flags for configuration ``name``, a note) or (None, why it cannot run on this server).

    ``before``'s flags restore the old behaviour, so a server without them already behaves that way:
    they are dropped. The ``after`` configurations need ``--workers``.
    """
    flags = list(CONFIGS[name])
    missing = sorted({f for f in flags if f.startswith("--")} - known)
    note = ""
    if missing and name == "before":
        flags, note = [], f"server has no {', '.join(missing)}: ran as is (it predates them)"
    elif missing:
        return None, f"server has no {', '.join(missing)}"
    return flags, note


def measure_config(
    name: str, run: Path, work: Workload, *, flags: list[str], client_procs: int, tmp: Path
) -> dict[str, Any]:
    """Copy ``run``, start the server with ``flags``, drive it, stop it; the configuration's figures
    (``error`` instead of them when the server or a client process failed)."""
    copy = tmp / f"run-{name}"
    log.info("%s: copying %s", name, run)
    shutil.copytree(run, copy, symlinks=True)
    log_path = tmp / f"server-{name}.log"
    out: dict[str, Any] = {"flags": flags}
    try:
        with started_server(copy, flags, log_path, write_token=work.write_token) as server:
            out["startup_s"] = round(server.startup_s, 2)
            out["port_file_s"] = round(server.port_file_s, 2)
            log.info(
                "%s: SERVING after %.1f s; %d clients, %.0f s",
                name,
                server.startup_s,
                work.clients,
                work.seconds,
            )
            out.update(run_clients(server.target, work, client_procs, name, server.proc.pid))
    except RuntimeError as exc:
        log.error("%s: %s", name, exc)
        out["error"] = str(exc)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
        if log_path.exists():
            out["server_log"] = server_log_problems(log_path)
    return out


# ---- ratios, goals, main ------------------------------------------------------------------------------


def _p99(r: dict[str, Any], config: str, method: str) -> float | None:
    m = r.get(config, {}).get("methods", {}).get(method, {})
    return m.get("p99_ms")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def median_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median over repeats of the headline figures (runs that failed are left out; {} if all did)."""
    done = [r for r in runs if "total" in r]
    if not done:
        return {}

    def med(values: list[Any]) -> float | None:
        values = [v for v in values if v is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "runs": len(done),
        "startup_s": med([r["startup_s"] for r in done]),
        "total": {k: med([r["total"][k] for r in done]) for k in ("calls_per_s", "error_share")},
        "methods": {
            m: {k: med([r["methods"][m].get(k) for r in done]) for k in ("ok_per_s", "p50_ms", "p99_ms")}
            for m in MIX
        },
        "client_cores_busy": med([r["client"]["cores_busy"] for r in done]),
        "server_cores_busy": med([r.get("server_cpu", {}).get("cores_busy") for r in done]),
    }


def ratios_and_goals(configs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """after_1 vs before, after_2 vs after_1, and the issue-15 goals on the configurations measured
    (``configs``: name -> figures with ``methods``, ``total`` and ``startup_s``, e.g. the medians).

    OK calls/s alone flatters a server that refuses its expensive calls (admission control), so the
    OK calls/s ratios are also given per method."""
    qps = {c: configs[c]["total"]["calls_per_s"] for c in configs if "total" in configs[c]}
    ratios: dict[str, Any] = {
        "get_note_tags_p99_after_1_over_before": _ratio(
            _p99(configs, "after_1", "GetNoteTags"), _p99(configs, "before", "GetNoteTags")
        ),
        "recommend_p99_after_1_over_before": _ratio(
            _p99(configs, "after_1", "Recommend"), _p99(configs, "before", "Recommend")
        ),
        "calls_per_s_after_1_over_before": _ratio(qps.get("after_1"), qps.get("before")),
        "calls_per_s_after_2_over_after_1": _ratio(qps.get("after_2"), qps.get("after_1")),
    }
    for a, b in (("after_1", "before"), ("after_2", "after_1")):
        if a in qps and b in qps:
            ratios[f"ok_per_s_{a}_over_{b}_per_method"] = {
                m: _ratio(configs[a]["methods"][m]["ok_per_s"], configs[b]["methods"][m]["ok_per_s"])
                for m in MIX
            }
    goals: dict[str, Any] = {}
    after = [c for c in ("after_1", "after_2") if c in qps]
    for key, method, limit in (
        ("get_note_tags_p99_le_20ms", "GetNoteTags", GOAL_NOTE_TAGS_P99_MS),
        ("recommend_p99_le_100ms", "Recommend", GOAL_RECOMMEND_P99_MS),
    ):
        goals[key] = {}
        for c in after:
            p = _p99(configs, c, method)
            goals[key][c] = {"p99_ms": p, "met": p is not None and p <= limit}
    scaling = ratios["calls_per_s_after_2_over_after_1"]
    if scaling is not None:
        goals["calls_per_s_2_workers_ge_1_6x_1_worker"] = {
            "ratio": scaling,
            "met": scaling >= GOAL_WORKER_SCALING,
        }
    goals["startup_to_serving_le_15s"] = {
        c: {"startup_s": configs[c]["startup_s"], "met": configs[c]["startup_s"] <= GOAL_STARTUP_S}
        for c in after
    }
    return ratios, goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tagllm.bench.load", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--run", required=True, type=Path, help="a finished demo run (copied per configuration)"
    )
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (asyncio tasks)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per configuration")
    parser.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds before measuring")
    parser.add_argument(
        "--client-procs", type=int, default=1, help="client processes the clients are split over"
    )
    parser.add_argument(
        "--configs", default="before,after_1,after_2", help=f"comma-separated, some of {','.join(CONFIGS)}"
    )
    parser.add_argument(
        "--server-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="extra `tagllm serve` flag for every configuration, repeatable (--server-flag=--max-inflight=Rank=4)",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="measure every configuration this often (interleaved); medians"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="open loop: calls/s offered in all (Poisson); 0 = closed loop (each client waits for its answer)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="compact JSON (default: indented)")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        parser.error(f"--configs {args.configs!r}: unknown {bad}; expected some of {','.join(CONFIGS)}")
    if args.clients < 1 or args.client_procs < 1 or args.client_procs > args.clients:
        parser.error(
            f"--clients {args.clients} / --client-procs {args.client_procs}: expected 1 <= procs <= clients"
        )
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: expected an integer >= 1")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error(f"--seconds {args.seconds} / --warmup {args.warmup}: expected seconds > 0, warmup >= 0")
    run = args.run.resolve()
    if not (run / "manifest.json").exists():
        parser.error(f"--run {run}: no manifest.json; expected a finished `tagllm demo` run")
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s [load_bench] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    command = shlex.join(["python", "-m", "tagllm.bench.load", *(sys.argv[1:] if argv is None else argv)])
    try:
        result = _bench(run, configs, args, command)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"tagllm.bench.load: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=None if args.json else 2))
    failed = [c for c, v in result["configs"].items() if any("error" in r for r in v.get("runs", []))]
    if failed:
        print(
            f"tagllm.bench.load: configuration(s) {failed} failed; see 'error' in their runs", file=sys.stderr
        )
        return 1
    return 0


def _code_state() -> dict[str, Any]:
    """The commit measured and the server files that differ from it (a server under development)."""
    repo = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30)
        return done.stdout.rstrip() if done.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "serving", "ranking", "features", "tagging").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD") or None, "uncommitted": [ln[3:] for ln in changed]}


def _bench(run: Path, configs: list[str], args: argparse.Namespace, command: str) -> dict[str, Any]:
    from importlib.metadata import version

    work = load_workload(
        run, clients=args.clients, warmup_s=args.warmup, seconds=args.seconds, seed=args.seed, rate=args.rate
    )
    known = server_flags()
    tmp = Path(tempfile.mkdtemp(prefix="tagllm-load-bench-"))
    result: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "grpcio": version("grpcio"),
        },
        "code": _code_state(),
        "run": str(run),
        "run_copies": "a fresh copy of --run per configuration (removed after); server logs kept in "
        + str(tmp),
        "workload": {
            "clients": work.clients,
            "loop": f"open, {work.rate:g} calls/s offered (Poisson)" if work.rate > 0 else "closed",
            "client_procs": args.client_procs,
            "warmup_s": work.warmup_s,
            "seconds": work.seconds,
            "deadline_s": DEADLINE_S,
            "mix_percent": MIX,
            "note_ids_per_get_note_tags": NOTE_IDS_PER_CALL,
            "users_per_get_user_interests": USERS_PER_CALL,
            "recommend_k": K,
            "rank_note_ids": RANK_IDS,
            "notes": len(work.note_ids),
            "users": len(work.user_ids),
        },
        "configs": {},
    }
    entries: dict[str, dict[str, Any]] = {}
    for name in configs:
        flags, note = config_flags(name, known)
        if flags is None:
            log.info("%s: skipped (%s)", name, note)
            entries[name] = {"skipped": note}
        else:
            entries[name] = {
                "flags": flags + args.server_flag,
                "runs": [],
                **({"note": note} if note else {}),
            }
    for rep in range(args.repeats):  # interleaved, so slow drifts of the machine's load hit every config
        for name, entry in entries.items():
            if "runs" in entry:
                log.info("%s: repeat %d/%d", name, rep + 1, args.repeats)
                figures = measure_config(
                    name, run, work, flags=entry["flags"], client_procs=args.client_procs, tmp=tmp
                )
                entry["runs"].append({k: v for k, v in figures.items() if k != "flags"})
    for entry in entries.values():
        if "runs" in entry:
            entry["median"] = median_figures(entry["runs"])
    result["configs"] = entries
    measured = {c: v["median"] for c, v in entries.items() if v.get("median")}
    result["ratios"], result["goals"] = ratios_and_goals(measured)
    result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


if __name__ == "__main__":
    raise SystemExit(main())
