"""Soak: concurrent clients mixing every RPC against one server; no non-OK reply, bounded memory.

``test_soak`` (slow; ``TAGLLM_SOAK_SECONDS``, default 60) runs 8 clients; ``test_soak_short`` runs 4
clients for 5 s in the default suite. The server runs in this process (its own loop thread, see
conftest), so the RSS measured is this process's: server + clients. TagNotes re-tags a bounded pool of
note ids, so the data the server holds stops growing after warm-up and any RSS growth is a leak.

    TAGLLM_SOAK_SECONDS=60 pytest tests/serving/test_soak.py -m slow -s     # prints the figures as JSON
"""

from __future__ import annotations

import gc
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from serving.client import TagLLMClient, TagLLMClientError
from tests.serving.conftest import TitleTagger, start

POOL = 32  # TagNotes note ids: the first call adds each, later calls re-tag it


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS missing from /proc/self/status")


class _CountingSink:
    """Feast sink double that keeps nothing (a recording double would itself grow memory)."""

    def __init__(self) -> None:
        self.pushed = 0
        self._lock = threading.Lock()

    def note_tags(self, note_ids: Sequence[str]) -> list[None]:
        return [None] * len(note_ids)

    def push_note_tags(self, records: Sequence[Mapping[str, Any]]) -> int:
        with self._lock:
            self.pushed += len(records)
        return len(records)


@dataclass
class _Workload:
    """Valid requests only: known ids, limits respected."""

    notes: list[str]
    users: list[str]
    categories: list[str]
    tags: list[str]
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def tag_note(self, client: TagLLMClient, rng: random.Random, i: int) -> None:
        title = "|".join(rng.sample(self.tags, 3))
        note = {"note_id": f"soak-{i}", "category": rng.choice(self.categories), "title": title}
        client.tag_notes([note])

    def one(self, client: TagLLMClient, rng: random.Random) -> None:
        r = rng.random()
        call: Callable[[], object]
        if r < 0.30:
            name = "GetNoteTags"
            call = lambda: client.note_tags(rng.sample(self.notes, rng.randint(1, 100)))  # noqa: E731
        elif r < 0.50:
            name = "GetUserInterests"
            ids = rng.sample(self.users, rng.randint(1, 20))
            call = lambda: client.user_interests(ids, top_k=rng.randint(0, 50))  # noqa: E731
        elif r < 0.75:
            name = "Recommend"
            kw: dict[str, Any] = {"candidates": rng.choice([0, 100, 300])}
            if rng.random() < 0.2:
                kw["categories"] = [rng.choice(self.categories)]
            if rng.random() < 0.2:
                kw["cold_start_only"] = True
            call = lambda: client.recommend(rng.choice(self.users), rng.randint(1, 50), **kw)  # noqa: E731
        elif r < 0.90:
            name = "Rank"
            ids = rng.sample(self.notes, rng.randint(1, 100))
            call = lambda: client.rank(rng.choice(self.users), ids)  # noqa: E731
        else:
            name = "TagNotes"
            call = lambda: self.tag_note(client, rng, rng.randrange(POOL))  # noqa: E731
        try:
            call()
            code = "OK"
        except TagLLMClientError as exc:
            code = exc.code
            with self.lock:
                self.failures.append(str(exc)[:300])
        with self.lock:
            self.outcomes[(name, code)] += 1


def _run_clients(target: str, work: _Workload, clients: int, seconds: float, seed: int) -> None:
    stop_at = time.perf_counter() + seconds
    crashed: list[BaseException] = []

    def loop(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        try:
            with TagLLMClient(target, timeout=30) as client:
                while time.perf_counter() < stop_at:
                    work.one(client, rng)
        except BaseException as exc:  # a client-side bug must fail the test, not vanish with the thread
            crashed.append(exc)

    threads = [threading.Thread(target=loop, args=(i,), name=f"soak-client-{i}") for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    assert not any(t.is_alive() for t in threads), "a soak client hung"
    assert not crashed, f"soak client crashed: {crashed[0]!r}"


def soak(run: Path, *, clients: int, seconds: float) -> dict[str, Any]:
    """Start a server, warm it up, run ``clients`` mixed clients for ``seconds``; return the figures."""
    sink = _CountingSink()
    # one TagNotes per client may be in flight: admission control is tested elsewhere, not here
    served = start(run, tagger=TitleTagger(), features=sink, max_inflight={"TagNotes": clients})
    try:
        rec = served.running.core.rec
        notes = [str(n) for n in rec.catalog.note_ids]
        work = _Workload(
            notes=notes,
            users=rec.user_ids(),
            categories=list(rec.catalog.categories),
            tags=sorted(rec.catalog.vocab)[:200],
        )
        # Warm-up: fill every per-user cache and create the whole TagNotes pool, then mix for a while.
        with TagLLMClient(served.target, timeout=30) as client:
            for i in range(0, len(work.users), 100):
                client.user_interests(work.users[i : i + 100])
            for u in work.users:
                client.recommend(u, 10)
            rng = random.Random(0)
            for i in range(POOL):
                work.tag_note(client, rng, i)
        _run_clients(served.target, work, clients, min(10.0, max(2.0, seconds * 0.15)), seed=1)
        gc.collect()
        rss0 = _rss_bytes()
        warm_calls = sum(work.outcomes.values())
        samples = [rss0]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(1.0):
                samples.append(_rss_bytes())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        _run_clients(served.target, work, clients, seconds, seed=2)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join(5)
        gc.collect()
        rss1 = _rss_bytes()
    finally:
        served.stop()
    by_method: dict[str, dict[str, int]] = {}
    for (name, code), n in sorted(work.outcomes.items()):
        by_method.setdefault(name, {})[code] = n
    calls = sum(work.outcomes.values()) - warm_calls
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "calls_measured": calls,
        "calls_per_s": round(calls / wall, 1),
        "outcomes_incl_warmup": by_method,
        "non_ok": sum(n for (_, code), n in work.outcomes.items() if code != "OK"),
        "failures": work.failures[:5],
        "rss_after_warmup_mib": round(rss0 / 2**20, 1),
        "rss_end_mib": round(rss1 / 2**20, 1),
        "rss_max_mib": round(max(samples) / 2**20, 1),
        "rss_growth": round(rss1 / rss0 - 1, 4),
        "feast_pushes": sink.pushed,
        "catalog_notes": len(notes),
        "index_size": len(rec.index),
    }


def _check(figures: dict[str, Any]) -> None:
    print("\nsoak figures:", json.dumps(figures))
    assert figures["non_ok"] == 0, figures["failures"]
    assert figures["calls_measured"] > 0
    assert set(figures["outcomes_incl_warmup"]) == {
        "GetNoteTags",
        "GetUserInterests",
        "Recommend",
        "Rank",
        "TagNotes",
    }
    assert figures["rss_growth"] < 0.10, figures
    assert figures["index_size"] == figures["catalog_notes"] + POOL  # the data stopped growing


def test_soak_short(serving_run: Path) -> None:
    """4 clients for 5 s (default suite): every RPC, all OK, RSS growth < 10 %."""
    _check(soak(serving_run, clients=4, seconds=5.0))


@pytest.mark.slow
def test_soak(serving_run: Path) -> None:
    """8 clients for TAGLLM_SOAK_SECONDS (default 60): zero non-OK replies, RSS growth < 10 %."""
    seconds = float(os.environ.get("TAGLLM_SOAK_SECONDS", "60"))
    _check(soak(serving_run, clients=8, seconds=seconds))
