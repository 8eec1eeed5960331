"""Several server processes on one port: ``tagllm serve --workers N``.

One Python process serves with one core at most (the GIL); the recommender thread keeps the event loop
free but does not add cores. ``workers`` runs N independent servers that all bind the same port with
``SO_REUSEPORT``, so the kernel spreads new connections over them (a channel sticks to one worker).
Each loads its own copy of the models (memory × N) and follows the shared TagNotes journal: a note
accepted by one worker is applied by the others within ``journal_poll_s``.

The supervisor (this process) reserves the port (a bound, non-listening socket with ``SO_REUSEPORT``,
so ``--port 0`` works and a port used by a foreign process is a startup error), starts the workers
(``spawn``: nothing of the parent's threads or grpc state is inherited), writes the port file once every
worker is SERVING, restarts a worker that dies (at most ``MAX_RESTARTS`` in ``RESTART_WINDOW_S``, then
it stops everything and exits non-zero), and on SIGTERM/SIGINT stops the workers gracefully (each gets
``grace_s`` for calls in flight), killing any that outlive it.

Metrics: with ``metrics_port`` P each worker serves its own /metrics on P + its index (0: free ports,
logged); there is no merged endpoint.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from features.errors import ConfigError
from serving.config import ServerConfig

__all__ = ["MAX_RESTARTS", "RESTART_WINDOW_S", "Workers", "serve_workers"]

log = logging.getLogger(__name__)

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
_START_TIMEOUT_S = 600.0


@dataclass
class Workers:
    """The running worker processes (what ``ready`` receives). ``config.host`` and ``port`` as for a
    single server."""

    config: ServerConfig
    port: int
    pids: list[int] = field(default_factory=list)


def _reserve(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"host/port: cannot bind {host}:{port} ({exc.strerror}); expected a free port or 0"
        ) from exc
    return sock


def _worker(config: ServerConfig, index: int, ready: Any, levels: dict[str, int], fmt: str) -> None:
    """A worker process: one server on the shared port; reports (index, pid) on ``ready`` once SERVING."""
    logging.basicConfig(level=levels.get("", logging.INFO), format=fmt, datefmt="%H:%M:%S")
    for name, level in levels.items():
        if name:
            logging.getLogger(name).setLevel(level)
    from serving.server import serve

    def tell(_: Any) -> None:
        ready.put((index, os.getpid()))

    serve(config, tell, reuse_port=True)


def _logging_setup() -> tuple[dict[str, int], str]:
    root = logging.getLogger()
    fmt = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    for h in root.handlers:
        if h.formatter is not None and h.formatter._fmt:
            fmt = h.formatter._fmt
            break
    names = ("", "serving.server.access")
    return {n: logging.getLogger(n).getEffectiveLevel() for n in names}, f"[worker %(process)d] {fmt}"


class _Supervisor:
    def __init__(self, config: ServerConfig, port: int) -> None:
        self.config = config
        self.port = port
        self.ctx = mp.get_context("spawn")
        self.ready_q: Any = self.ctx.Queue()
        self.procs: dict[int, Any] = {}
        self.restarts: list[float] = []
        self.levels, self.fmt = _logging_setup()
        self.stopping = False

    def child_config(self, index: int) -> ServerConfig:
        metrics = self.config.metrics_port
        if metrics:
            metrics += index
        return replace(self.config, port=self.port, port_file=None, metrics_port=metrics, workers=1)

    def start(self, index: int) -> None:
        p = self.ctx.Process(
            target=_worker,
            args=(self.child_config(index), index, self.ready_q, self.levels, self.fmt),
            name=f"tagllm-worker-{index}",
            daemon=False,
        )
        p.start()
        self.procs[index] = p
        log.info("worker %d started (pid %d)", index, p.pid)

    def wait_ready(self, indices: set[int]) -> None:
        """Block until every worker in ``indices`` reports SERVING; ConfigError when one dies first."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        waiting = set(indices)
        while waiting:
            if self.stopping:
                return
            try:
                index, pid = self.ready_q.get(timeout=0.5)
            except queue.Empty:
                self._check_alive(waiting, deadline)
                continue
            waiting.discard(index)
            log.info("worker %d (pid %d) SERVING on port %d", index, pid, self.port)

    def _check_alive(self, waiting: set[int], deadline: float) -> None:
        for i in waiting:
            p = self.procs[i]
            if not p.is_alive():
                raise ConfigError(
                    f"workers: worker {i} (pid {p.pid}) exited with code {p.exitcode} before serving; "
                    "see its log lines above"
                )
        if time.monotonic() > deadline:
            raise ConfigError(f"workers: not serving after {_START_TIMEOUT_S:.0f}s")

    def watch(self) -> int:
        """Restart dead workers until told to stop; returns the exit status."""
        while not self.stopping:
            time.sleep(0.5)
            for i, p in list(self.procs.items()):
                if p.is_alive() or self.stopping:
                    continue
                now = time.monotonic()
                self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
                if len(self.restarts) >= MAX_RESTARTS:
                    log.error(
                        "worker %d died (code %s); %d restarts in %.0fs: giving up",
                        i,
                        p.exitcode,
                        len(self.restarts),
                        RESTART_WINDOW_S,
                    )
                    return 1
                log.error("worker %d (pid %d) died with code %s; restarting it", i, p.pid, p.exitcode)
                self.restarts.append(now)
                self.start(i)
        return 0

    def stop(self) -> None:
        for p in self.procs.values():
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.config.grace_s + 15.0
        for p in self.procs.values():
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                log.warning("worker pid %d outlived the grace period; killing it", p.pid)
                p.kill()
                p.join(5)


def serve_workers(config: ServerConfig, ready: Callable[[Workers], None] | None = None) -> int:
    """Run ``config.workers`` servers on one port until SIGTERM/SIGINT (module docstring); returns the
    exit status (0 after a signal, 1 when workers kept dying).

    Raises:
        ConfigError: the port cannot be bound, or a worker died before serving.
    """
    reserved = _reserve(config.host, config.port)
    port = reserved.getsockname()[1]
    sup = _Supervisor(config, port)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d received: stopping %d workers", signum, len(sup.procs))
        sup.stopping = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(config.workers):
            sup.start(i)
        sup.wait_ready(set(range(config.workers)))
        if not sup.stopping:
            if config.port_file is not None:
                from serving.server import write_port_file

                write_port_file(config.port_file, port)
            if ready is not None:
                ready(Workers(config, port, [p.pid for p in sup.procs.values() if p.pid is not None]))
        return sup.watch()
    finally:
        sup.stop()
        for s, h in old.items():
            signal.signal(s, h)
        reserved.close()
        if config.port_file is not None:
            config.port_file.unlink(missing_ok=True)
