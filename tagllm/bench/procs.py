"""The benchmarks' one helper for processes and timing: free loopback ports, waiting for a server to
listen, stopping what we started (by pid: SIGTERM, then SIGKILL), a throwaway ``redis-server``, and
latency percentiles."""

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

__all__ = ["free_port", "percentiles", "redis_server", "stop_process", "time_call", "wait_port"]


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
