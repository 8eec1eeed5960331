"""Feast pushes in a helper process: :class:`ProcessSink`.

Importing Feast takes seconds of pure-Python work and every push refreshes its registry; done in a
thread of the server, that work holds the GIL the event loop and the recommender thread need (measured
with ``py-spy --gil`` under the load benchmark: the push thread held it 49 % of the time, Recommend fell
to a few calls a second). So the server hands push records to a child process (``spawn``: nothing of
the server's threads or grpc state is inherited) that owns the :class:`~features.client.FeatureClient`;
the child's imports and pushes run on another core.

The child is started when the sink is created (in the background, after the server is SERVING) and
stopped by :meth:`ProcessSink.close`; when it dies, the next push raises and the PushQueue counts a
failed push (the notes are in the journal and are pushed again at the next start).

Example::

    sink = ProcessSink("runs/demo", online="sqlite")
    sink.push_note_tags([{"note_id": "n1", "tags": [...], "tagger_version": "v", "created_at": None}])
    sink.close()
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from features.errors import ConfigError

__all__ = ["ProcessSink"]

log = logging.getLogger(__name__)

_READY_TIMEOUT_S = 300.0


def _child(conn: Any, run_dir: str, online: str, redis: str | None, level: int) -> None:
    """The helper process: load the Feast client, then answer push requests until told to stop."""
    logging.basicConfig(level=level, format="[feast-pusher %(process)d] %(levelname)s %(name)s: %(message)s")
    try:
        from features.client import FeatureClient

        client = FeatureClient(run_dir, online=online, redis=redis)  # type: ignore[arg-type]
    except Exception as exc:
        conn.send(("error", f"loading the Feast online store failed: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg is None:
            break
        try:
            conn.send(("ok", client.push_note_tags(msg)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    close = getattr(client, "close", None)
    if callable(close):
        close()


class ProcessSink:
    """A :class:`~serving.core.FeatureSink` whose pushes run in a child process (module docstring).

    ``note_tags`` (reading the store) is not offered: servers that read tags from Feast at start use
    the client in-process, before serving.
    """

    def __init__(
        self, run_dir: str | os.PathLike[str], *, online: str = "sqlite", redis: str | None = None
    ) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child,
            args=(child_conn, str(run_dir), online, redis, logging.getLogger().getEffectiveLevel()),
            name="tagllm-feast-pusher",
            daemon=True,
        )
        self._proc.start()
        child_conn.close()
        self._lock = threading.Lock()
        self._ready = False
        log.info("feast pusher started (pid %s)", self._proc.pid)

    def _wait_ready(self) -> None:
        if self._ready:
            return
        if not self._conn.poll(_READY_TIMEOUT_S):
            raise TimeoutError(
                f"the feast pusher (pid {self._proc.pid}) was not ready in {_READY_TIMEOUT_S:.0f}s"
            )
        kind, detail = self._conn.recv()
        if kind != "ready":
            raise RuntimeError(str(detail))
        self._ready = True

    def note_tags(self, note_ids: Sequence[str]) -> Sequence[Any]:
        raise ConfigError(
            "tags_from: the Feast helper process only pushes; tags are read at start with tags_from feast, "
            "which uses features.client.FeatureClient in the server"
        )

    def push_note_tags(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Push ``records`` in the child; raises what the child reported (or when it died)."""
        with self._lock:
            try:
                self._wait_ready()
                self._conn.send([dict(r) for r in records])
                kind, detail = self._conn.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
                raise RuntimeError(
                    f"the feast pusher (pid {self._proc.pid}) died: exit code {self._proc.exitcode}"
                ) from exc
        if kind != "ok":
            raise RuntimeError(str(detail))
        return int(detail)

    def warm(self) -> None:
        """Block until the child has loaded Feast (raises when it could not)."""
        with self._lock:
            self._wait_ready()

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(OSError):  # BrokenPipeError included: the child is gone
                self._conn.send(None)
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
            self._conn.close()
