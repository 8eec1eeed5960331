"""The LLM teacher against a real loopback HTTP server that injects faults on 30% of calls.

Must-shows: a 1,000-note run completes with every note tagged or failed-with-reason; SIGKILL halfway
and restart gives no duplicate and no lost note; a cached re-run makes zero requests; the API key never
appears in logs, reasons or exceptions.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from features.errors import ConfigError
from tagging.runner import run_teacher
from tagging.teachers.llm import LLMTeacherConfig, make_llm_teacher

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _fake_openai import FakeOpenAI  # noqa: E402
from _teacher_worker import handbook, notes, teacher  # noqa: E402

SECRET = "sk-test-SECRET-0123456789abcdef"


@pytest.fixture
def server():
    srv = FakeOpenAI(fault_rate=0.3, seed=7, slow_s=1.0).start()
    yield srv
    srv.stop()


def _check_complete(run_dir: Path, n: int, out_name: str = "llm_tags") -> tuple[pd.DataFrame, pd.DataFrame]:
    tags = pd.read_parquet(run_dir / "tables" / f"{out_name}.parquet")
    fails = pd.read_parquet(run_dir / "tables" / f"{out_name}_failures.parquet")
    ids = list(tags["note_id"]) + list(fails["note_id"])
    assert len(ids) == len(set(ids)), "a note appears twice"
    assert set(ids) == {f"n{i:05d}" for i in range(n)}, "a note was lost"
    assert (fails["reason"].str.len() > 0).all()
    return tags, fails


def test_faulty_1000_note_run_then_cached_rerun_makes_zero_requests(server, tmp_path):
    # 14 retries: with 30 % faulty answers a note fails only after 15 faults in a row (p ~ 1.4e-8, so
    # ~1e-5 per 1000-note run); with 8 retries that was 0.3^9 ~ 2e-5 per note, a 2 % flake per run.
    t = teacher(server.base_url, price_prompt_per_1k=0.0005, price_completion_per_1k=0.0015, max_retries=14)
    summary = run_teacher(t, notes(1000), run_dir=tmp_path, out_name="llm_tags", batch_size=16)
    tags, _ = _check_complete(tmp_path, 1000)
    faults = {k: v for k, v in server.counts.items() if k != "ok"}
    print("\n1000-note faulty run:", json.dumps({**summary.as_dict(), "server": dict(server.counts)}))
    assert summary.ok + summary.failed == 1000 and summary.ok == len(tags)
    # every request the server handled was counted by the client; the client may count a few more:
    # a request sent on a pooled keep-alive connection the server was closing (or that timed out
    # before reaching the handler) fails in transport, is retried and never reaches the handler
    lost = t.stats.connection_errors + t.stats.timeouts
    assert server.requests <= summary.requests <= server.requests + lost and summary.retries > 0
    assert set(faults) == {"500", "503", "429", "slow", "invalid_json"}
    assert 0.2 < sum(faults.values()) / server.requests < 0.4
    assert summary.cost == pytest.approx(
        summary.prompt_tokens / 1000 * 0.0005 + summary.completion_tokens / 1000 * 0.0015
    )
    assert summary.prompt_tokens > 0 and tags["tags"].map(len).gt(0).mean() > 0.9
    assert summary.failed == 0  # 14 retries against 30 % faults: a failure would be a bug

    # (c) a fresh run (new log) over the same notes: every note from the cache, zero requests
    before = server.requests
    again = run_teacher(teacher(server.base_url), notes(1000), run_dir=tmp_path, out_name="llm_tags_again")
    assert server.requests == before and again.requests == 0
    assert again.cached == 1000 and again.ok == 1000
    again_tags = pd.read_parquet(tmp_path / "tables" / "llm_tags_again.parquet")
    assert sorted(again_tags["note_id"]) == sorted(tags["note_id"])

    # (c') and the same run again resumes from its log: nothing to do, zero requests
    resumed = run_teacher(teacher(server.base_url), notes(1000), run_dir=tmp_path, out_name="llm_tags")
    assert server.requests == before and resumed.resumed == 1000


def test_exhausted_retries_are_failed_results_with_reasons(tmp_path):
    srv = FakeOpenAI(fault_rate=1.0, seed=1, slow_s=0.5).start()
    try:
        t = teacher(srv.base_url, max_retries=2, timeout_s=0.2)
        summary = run_teacher(t, notes(20), run_dir=tmp_path, out_name="llm_tags")
    finally:
        srv.stop()
    _, fails = _check_complete(tmp_path, 20)
    assert summary.failed == 20 and len(fails) == 20
    assert fails["reason"].str.contains("retries exhausted").all()
    assert srv.requests >= 20 * 3


@pytest.mark.integration
def test_sigkill_halfway_then_restart_no_duplicate_no_loss(server, tmp_path):
    n = 1000
    log_path = tmp_path / "teacher" / "llm_tags.log.jsonl"
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    cmd = [sys.executable, str(HERE / "_teacher_worker.py"), server.base_url, str(tmp_path), str(n)]
    err_path = tmp_path / "worker.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 120
    lines = 0
    while time.time() < deadline and proc.poll() is None:
        lines = log_path.read_bytes().count(b"\n") if log_path.exists() else 0
        if lines >= n // 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err_path.read_text()[-2000:]
    assert not (tmp_path / "tables" / "llm_tags.parquet").exists()
    logged_before = log_path.read_bytes().count(b"\n")
    assert n // 2 <= logged_before < n

    # restart in a fresh process; it skips what the log holds and finishes the rest
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=180, check=True)
    summary = eval(done.stdout.decode().strip().splitlines()[-1])  # the worker prints a dict literal
    assert (
        summary["resumed"] >= logged_before
        and summary["resumed"] + summary["tagged_now"] + summary["cached"] == n
    )
    _check_complete(tmp_path, n)
    print(f"\nSIGKILL after {logged_before} logged notes; restart: {summary}")
    entries = [json.loads(x) for x in log_path.read_text().splitlines()]
    ids = [e["note_id"] for e in entries]
    assert len(ids) == len(set(ids)) == n, "the log holds a note twice or misses one"


def test_api_key_never_in_logs_reasons_or_reprs(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("TAGLLM_LLM_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    srv = FakeOpenAI(fault_rate=0.5, seed=3, slow_s=0.5).start()
    try:
        t = teacher(srv.base_url, max_retries=1, timeout_s=0.2)
        results = t.tag(notes(30))
    finally:
        srv.stop()
    assert srv.auth_headers == {f"Bearer {SECRET}"}  # the key was sent ...
    text = caplog.text + repr(t) + repr(t.config) + json.dumps([r.error for r in results])
    assert any(r.status == "failed" for r in results) and any(r.status == "ok" for r in results)
    assert SECRET not in text  # ... and appears nowhere else

    # a hostile server echoing the key in a 401 body: the reason is scrubbed
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"bad key {request.headers['authorization']}", status_code=401)

    echo_srv = FakeOpenAI(fault_rate=0.0)
    echo_srv._server.config.app = Starlette(routes=[Route("/v1/chat/completions", echo, methods=["POST"])])
    echo_srv.start()
    try:
        [res] = teacher(echo_srv.base_url).tag(notes(1))
    finally:
        echo_srv.stop()
    assert res.status == "failed" and "401" in res.error and "TAGLLM_LLM_API_KEY" in res.error
    assert SECRET not in res.error and SECRET not in caplog.text

    # unreachable endpoint: a failed result, no key in it
    [res] = teacher("http://127.0.0.1:9/v1", max_retries=1).tag(notes(1))
    assert res.status == "failed" and "connection" in res.error and SECRET not in res.error


def test_config_rejects_unknown_options_and_names_them():
    with pytest.raises(ConfigError, match="api_key"):
        make_llm_teacher(handbook(), base_url="http://x/v1", model="m", api_key=SECRET)
    with pytest.raises(ConfigError, match="concurrency"):
        make_llm_teacher(handbook(), base_url="http://x/v1", model="m", concurrency=0)
    assert "api_key" not in LLMTeacherConfig.model_fields


def test_backoff_honours_retry_after_capped():
    t = teacher("http://127.0.0.1:9/v1", backoff_base_s=0.01, max_retry_after_s=5)
    assert 2.0 <= t._backoff(0, 2.0) < 2.1
    assert 5.0 <= t._backoff(0, 100.0) < 5.1
    assert 0 <= t._backoff(3, None) <= 0.08
