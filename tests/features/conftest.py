"""Fixtures for the Feast feature tests: a real redis-server, a tiny hand-made run directory."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from features.io import RunDir
from tagllm.bench.procs import free_port, stop_process

T0 = pd.Timestamp("2026-01-01T00:00:00Z")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (free port, no persistence); yields ``HOST:PORT``.

    Skips when redis-server is not installed (Debian: ``apt-get install -y redis-server``); stops
    the server by its pid.
    """
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server not installed: `apt-get install -y redis-server` (Debian package)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start on 127.0.0.1:{port} (exit {proc.poll()})")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process(proc)


def make_tiny_run(path: Path, *, n_notes: int = 30, n_users: int = 6) -> RunDir:
    """A small, fully hand-made prepared run: notes, users, interactions, teacher_tags, manifest."""
    run = RunDir(path)
    notes = pd.DataFrame(
        {
            "note_id": [f"n{i:03d}" for i in range(n_notes)],
            "author_id": "a0",
            "category": ["food" if i % 2 else "outdoor" for i in range(n_notes)],
            "title": [f"note {i}" for i in range(n_notes)],
            "body": "body",
            "image_captions": [[] for _ in range(n_notes)],
            "created_at": [T0 + pd.Timedelta(hours=6 * i) for i in range(n_notes)],
        }
    )
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(n_users)], "created_at": T0})
    rows = []
    for u in range(n_users):
        for k in range(10):
            note = (u * 7 + k * 3) % n_notes
            ts = notes["created_at"][note] + pd.Timedelta(hours=1 + k)
            rows.append((f"u{u}", f"n{note:03d}", ts, "impression", None))
            if k % 2 == 0:
                rows.append((f"u{u}", f"n{note:03d}", ts + pd.Timedelta(minutes=1), "click", 12.0))
            if k % 4 == 0:
                rows.append((f"u{u}", f"n{note:03d}", ts + pd.Timedelta(minutes=2), "like", None))
    interactions = pd.DataFrame(rows, columns=["user_id", "note_id", "ts", "event", "dwell_seconds"])
    texts = ["ramen", "hiking", "tent", "spicy", "matcha", "trail"]
    dims = ["dish", "activity", "gear", "flavor", "drink", "place"]
    tags = pd.DataFrame(
        {
            "note_id": notes["note_id"],
            "tagger": "offline-handbook",
            "tagger_version": "v1",
            "tags": [
                [
                    {"text": texts[(i + j) % 6], "dimension": dims[(i + j) % 6], "confidence": 0.5 + 0.1 * j}
                    for j in range(1 + i % 3)
                ]
                for i in range(n_notes)
            ],
            "generated_at": pd.Timestamp("2026-03-01T00:00:00Z"),
        }
    )
    run.write_tables({"notes": notes, "users": users, "interactions": interactions, "teacher_tags": tags})
    cutoff = T0 + pd.Timedelta(days=5)
    run.write_manifest({"source": "test", "cold_start_cutoff": cutoff.isoformat(), "tables": {}})
    return run


@pytest.fixture(scope="session")
def applied_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with feature tables applied and materialized into SQLite (shared, read-only)."""
    from features.feast_repo import feature_stage

    run = make_tiny_run(tmp_path_factory.mktemp("feast_run") / "run")
    feature_stage(run.path)
    return run.path


@pytest.fixture(scope="session")
def sqlite_client(applied_run: Path) -> Iterator[object]:
    from features.client import FeatureClient

    with FeatureClient(applied_run) as client:
        yield client
