"""The benchmarks' one helper for processes and timing: free loopback ports, waiting for a server to
listen (or to answer the gRPC health check SERVING), stopping what we started (by pid: SIGTERM, then
SIGKILL), a throwaway ``redis-server``, the CPU seconds of a process tree, and latency percentiles."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = [
    "free_port",
    "percentiles",
    "redis_server",
    "stop_process",
    "time_call",
    "tree_cpu_s",
    "wait_health",
    "wait_port",
]


def percentiles(samples_s: list[float]) -> dict[str, float]:
    """p50/p99/mean in milliseconds."""
    s = sorted(samples_s)
    pick = lambda q: s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]  # noqa: E731
    return {
        "p50_ms": round(pick(0.5) * 1e3, 3),
        "p99_ms": round(pick(0.99) * 1e3, 3),
        "mean_ms": round(sum(s) / len(s) * 1e3, 3),
    }


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 10) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times, then time ``repeats`` calls: :func:`percentiles` of them."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return percentiles(samples)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (bound and released; the caller starts its server on it)."""
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start a throwaway redis-server on 127.0.0.1 (free port); stop it by pid. Yields HOST:PORT."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server not installed: `apt-get install -y redis-server`")
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc, 10)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Stop a server we started: SIGTERM by pid, then SIGKILL if it has not exited within ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_port(port: int, proc: subprocess.Popen[Any], timeout: float) -> None:
    """Block until 127.0.0.1:``port`` accepts a connection.

    Raises:
        RuntimeError: ``proc`` exited, or ``timeout`` seconds passed, first.
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"server on 127.0.0.1:{port} did not start (exit {proc.poll()})")
        time.sleep(0.1)


def wait_health(target: str, proc: subprocess.Popen[Any], timeout: float, service: str = "") -> None:
    """Block until ``grpc.health.v1.Health/Check(service)`` on ``target`` answers SERVING.

    A server that refuses connections or answers NOT_SERVING / UNKNOWN while it loads is polled again
    (every 50 ms, 1 s per check).

    Raises:
        RuntimeError: ``proc`` exited, or ``timeout`` seconds passed, first (names the last answer).
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    last = "no answer"
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.RpcError as exc:
                last = exc.code().name if isinstance(exc, grpc.Call) else type(exc).__name__
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"server at {target} not SERVING after {timeout:.0f} s (exit {proc.poll()}, last {last})"
                )
            time.sleep(0.05)


def tree_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` and its live descendants (Linux ``/proc``; None
    elsewhere or when ``pid`` is gone). Descendants that already exited are not counted."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent pid, cpu seconds)
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # Fields after "(comm)": state, ppid, ..., utime (14th overall) and stime (15th).
        stats[int(entry)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick)
    if pid not in stats:
        return None
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats[p][1]
        todo += [c for c, (parent, _) in stats.items() if parent == p]
    return total
