"""The demo's serving stage: start ``tagllm serve`` on the run as users do, call every RPC once,
show the answers, stop it with SIGTERM.

It also walks the cold-start path once: a brand-new note written like one the chosen user engaged
with goes through ``TagNotes`` (student tags, Feast push, item-tower embedding, ANN add) and the
stage times how long until ``Recommend`` returns it for that user.

Example::

    from serving.demo import serving_stage
    figures = serving_stage("runs/demo")     # also sets summary.json's "serving" section
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from features.errors import NotFoundError
from features.io import RunDir

if TYPE_CHECKING:
    from serving.client import TagLLMClient

__all__ = ["serving_stage"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def _wait_for_port(port_file: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise NotFoundError(f"tagllm serve exited with code {proc.returncode} before binding its port")
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text().strip())
        time.sleep(0.2)
    raise TimeoutError(f"tagllm serve did not bind a port within {timeout_s:.0f} s")


def _pick_user(run: RunDir) -> tuple[str, dict[str, Any]]:
    """A user with history, and the note they engaged with most recently (the template for a new note)."""
    inter = run.read_table("interactions")
    eng = inter[inter["event"].isin(["click", "like", "collect", "comment", "share"])]
    counts = eng["user_id"].value_counts()
    user = str(counts.index[min(10, len(counts) - 1)])
    last = eng[eng["user_id"] == user].sort_values("ts").iloc[-1]
    notes = run.read_table("notes").set_index("note_id")
    row = notes.loc[last["note_id"]]
    template = {
        "category": str(row["category"]),
        "title": str(row["title"]),
        "body": str(row["body"]),
        "image_captions": [
            str(c) for c in (row["image_captions"] if row["image_captions"] is not None else [])
        ],
    }
    return user, template


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, round((time.perf_counter() - t0) * 1000, 2)


def _serve_command(run: RunDir, port_file: Path, write_token_file: Path) -> list[str]:
    """``tagllm serve`` on the run, on a free port written to ``port_file``; TagNotes needs the token in
    ``write_token_file`` (which also grants reads)."""
    return [
        sys.executable,
        "-m",
        "tagllm.cli",
        "serve",
        "--run",
        str(run.path),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--write-token-file",
        str(write_token_file),
    ]


def _stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (when still running), then the exit code; killed after 30 s without one."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _read_calls(client: TagLLMClient, user: str) -> dict[str, dict[str, Any]]:
    """Health, Recommend, GetNoteTags, GetUserInterests and Rank once each: RPC -> {ms, answer}."""
    from serving.client import as_plain

    calls: dict[str, dict[str, Any]] = {}
    health, ms = _timed(client.health)
    calls["Health"] = {"ms": ms, "answer": health}
    recs, ms = _timed(lambda: client.recommend(user, k=5))
    calls["Recommend"] = {
        "ms": ms,
        "answer": [
            {"note_id": r.note_id, "score": round(r.score, 4), "reasons": list(r.reasons)} for r in recs
        ],
    }
    note_ids = [r.note_id for r in recs]
    tags, ms = _timed(lambda: client.note_tags(note_ids[:2]))
    calls["GetNoteTags"] = {"ms": ms, "answer": as_plain(tags)}
    interests, ms = _timed(lambda: client.user_interests([user], top_k=5))
    calls["GetUserInterests"] = {"ms": ms, "answer": as_plain(interests)}
    ranked, ms = _timed(lambda: client.rank(user, list(reversed(note_ids))))
    calls["Rank"] = {"ms": ms, "answer": [(r.note_id, round(r.score, 4)) for r in ranked]}
    return calls


def _fresh_note(
    client: TagLLMClient, user: str, template: dict[str, Any], calls: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """TagNotes on a new note written like ``template`` (recorded in ``calls``), then Recommend
    (cold-start only) every 20 ms for up to 5 s until the note shows up: the freshness figures."""
    from serving.client import as_plain

    fresh_id = f"demo-fresh-{int(time.time())}"
    note = {"note_id": fresh_id, **template, "title": template["title"] + " (new)"}
    tagged, ms = _timed(lambda: client.tag_notes([note]))
    calls["TagNotes"] = {"ms": ms, "answer": as_plain(tagged)}
    t_fresh = time.perf_counter()
    seen_after_ms = None
    position = None
    polls = 0
    while time.perf_counter() - t_fresh < 5.0:
        polls += 1
        top = client.recommend(user, k=50, cold_start_only=True)
        ids = [r.note_id for r in top]
        if fresh_id in ids:
            seen_after_ms = round((time.perf_counter() - t_fresh) * 1000, 2)
            position = ids.index(fresh_id) + 1
            break
        time.sleep(0.02)
    return {
        "note_id": fresh_id,
        "ms_to_recommend": seen_after_ms,
        "rank_among_cold_start": position,
        "recommend_calls": polls,
        "tags": [t["text"] for t in as_plain(tagged)["notes"][0]["tags"]],
    }


def _start(
    run: RunDir, tmp: Path, token_file: Path, timeout_s: float
) -> tuple[subprocess.Popen[bytes], str, float]:
    port_file = tmp / f"port-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        _serve_command(run, port_file, token_file), env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    try:
        port = _wait_for_port(port_file, proc, timeout_s)
    except BaseException:
        _stop(proc)
        raise
    return proc, f"127.0.0.1:{port}", round(time.perf_counter() - t0, 2)


def serving_stage(run_dir: str | Path, *, startup_timeout_s: float = 300.0) -> dict[str, Any]:
    """Start the server as a subprocess, call each RPC, time the cold-start path, stop; start it again
    and check the fresh note is still served (the TagNotes journal), stop.

    Returns:
        the ``serving`` summary section: startup seconds, per-RPC latency (ms) and a short answer,
        freshness (ms from TagNotes returning to the note appearing in Recommend), shutdown code, and
        ``after_restart`` (start-up seconds, whether the fresh note came back with the same tags).
    """
    import secrets

    from serving.client import TagLLMClient

    run = RunDir(run_dir).require()
    user, template = _pick_user(run)
    with tempfile.TemporaryDirectory(prefix="tagllm-serve-") as tmp_name:
        tmp = Path(tmp_name)
        token = secrets.token_hex(16)
        token_file = tmp / "write-token"
        token_file.write_text(token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        proc, target, startup_s = _start(run, tmp, token_file, startup_timeout_s)
        try:
            log.info("server up on %s after %.1f s", target, startup_s)
            figures: dict[str, Any] = {"target": target, "startup_s": startup_s, "user": user, "calls": {}}
            with TagLLMClient(target, token=token, timeout=30.0) as client:
                figures["calls"] = _read_calls(client, user)
                figures["freshness"] = _fresh_note(client, user, template, figures["calls"])
        finally:
            code = _stop(proc)
        figures["shutdown_code"] = code
        fresh = figures["freshness"]
        proc, target, again_s = _start(run, tmp, token_file, startup_timeout_s)
        try:
            with TagLLMClient(target, token=token, timeout=30.0) as client:
                back = client.note_tags([fresh["note_id"]], allow_missing=True)
        finally:
            _stop(proc)
        same = bool(back) and [t["text"] for t in back[0].tags] == fresh["tags"]
        figures["after_restart"] = {"startup_s": again_s, "fresh_note_served": bool(back), "same_tags": same}
    for name, c in figures["calls"].items():
        log.info("%-16s %7.1f ms  %s", name, c["ms"], str(c["answer"])[:160])
    log.info("fresh note %s: %s", fresh["note_id"], fresh)
    log.info(
        "after a restart (%.1f s to SERVING): fresh note served %s, same tags %s", again_s, bool(back), same
    )
    run.update_summary("serving", figures)
    return figures
