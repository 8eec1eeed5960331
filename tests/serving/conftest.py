"""Fixtures for the gRPC serving tests: one tiny trained run per session, servers on loopback.

Each server runs on its own asyncio loop in a background thread (``LoopThread``) and is called with
ordinary synchronous channels, so the tests need no async plugin. The taggers and the Feast sink here
are test doubles: the real server defaults to the run's student and the run's Feast store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from serving.loop_thread import LoopThread
from tagging.types import NoteInput, Tag, TagResult


class TitleTagger:
    """Test double: the note's title is ``tag|tag|...``; each tag's dimension is its text before ':'.

    A title starting with ``FAIL`` gives a failed result; ``delay_s`` makes every call slow."""

    name = "title-stub"
    version = "title-stub-1"

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        out = []
        for n in notes:
            if n.title.startswith("FAIL"):
                out.append(TagResult(n.note_id, status="failed", error="stub failure"))
                continue
            texts = [t for t in n.title.split("|") if t]
            out.append(TagResult(n.note_id, tuple(Tag(t, t.split(":", 1)[0], 0.9) for t in texts)))
        return out


@dataclass
class _Row:
    tag_texts: list[str]
    tag_dimensions: list[str]
    tag_confidences: list[float]
    tagger_version: str


class StubSink:
    """Test double of FeatureClient: rows for the first ``online`` notes, records pushes, can fail."""

    def __init__(self, online: int = 5) -> None:
        self.online = online
        self.pushed: list[Mapping[str, Any]] = []
        self.fail = False
        self.thread_names: list[str] = []

    def note_tags(self, note_ids: Sequence[str]) -> list[_Row | None]:
        return [
            _Row(["online:tag"], ["online"], [0.5], "student-0123456789ab") if i < self.online else None
            for i, _ in enumerate(note_ids)
        ]

    def push_note_tags(self, records: Sequence[Mapping[str, Any]]) -> int:
        self.thread_names.append(threading.current_thread().name)
        if self.fail:
            raise OSError("stub online store is down")
        self.pushed.extend(records)
        return len(records)


@dataclass
class Served:
    """A running server plus the loop it runs on and its doubles."""

    loop: LoopThread
    running: Any
    tagger: Any
    sink: Any

    @property
    def target(self) -> str:
        return str(self.running.target)

    def stop(self, grace: float = 1.0) -> None:
        self.loop.run(self.running.stop(grace))
        self.loop.close()


def start(run: Path, **kwargs: Any) -> Served:
    """Start a server on a free loopback port in its own loop thread."""
    from serving.server import start_server

    loop = LoopThread()
    kwargs.setdefault("port", 0)
    kwargs.setdefault("open_writes", True)  # the write-permission tests turn it off
    kwargs.setdefault("journal", run / "journals" / f"{id(loop)}.journal")  # no test sees another's notes
    tagger = kwargs.get("tagger")
    sink = kwargs.get("features")
    running = loop.run(start_server(run, **kwargs))
    return Served(loop, running, tagger, sink)


@pytest.fixture(scope="session")
def server(serving_run: Path) -> Iterator[Served]:
    """The main server: no auth, a title tagger, a stub Feast sink, metrics on a free port, small limits."""
    served = start(
        serving_run,
        tagger=TitleTagger(),
        features=StubSink(),
        tags_from="feast",
        metrics_port=0,
        max_message_bytes=256 * 1024,
        max_ids_per_call=100,
        max_k=50,
    )
    yield served
    served.stop()


@pytest.fixture(scope="session")
def auth_server(serving_run: Path) -> Iterator[Served]:
    """A server with bearer-token auth (token ``s3cret``) and no tagger."""
    served = start(serving_run, token="s3cret", tagger=None, features=None)
    yield served
    served.stop()
