"""The local-model teacher and `teacher serve` over a tiny random model built from a config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

pytest.importorskip("transformers")

from tagging.runner import run_teacher
from tagging.teacher_cli import teacher as teacher_group
from tagging.teachers.local import ChatOutput, LocalTeacher, LocalTeacherConfig, make_local_teacher
from tagging.teachers.tiny import build_tiny_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _fake_openai import answer_for  # noqa: E402
from _teacher_worker import handbook, notes  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def test_local_teacher_end_to_end_nonsense_becomes_failed_results(tiny_dir, tmp_path):
    t = make_local_teacher(handbook(), model_dir=str(tiny_dir), max_new_tokens=24)
    summary = run_teacher(t, notes(4), run_dir=tmp_path, out_name="local_tags")
    fails = pd.read_parquet(tmp_path / "tables" / "local_tags_failures.parquet")
    assert (
        summary.notes == 4
        and summary.failed == 4
        and sorted(fails["note_id"]) == [f"n{i:05d}" for i in range(4)]
    )
    assert fails["reason"].str.startswith("invalid answer").all()
    assert summary.requests == 4 and summary.prompt_tokens > 0 and summary.completion_tokens > 0
    # a failed note is not cached: the next run tries it again
    again = run_teacher(t, notes(4), run_dir=tmp_path, out_name="local_tags2")
    assert again.cached == 0 and again.requests == 4


def test_gpt2_without_chat_template_and_truncated_prompt(tmp_path):
    d = build_tiny_model(tmp_path / "tiny-gpt2", arch="gpt2", chat_template=False, max_positions=96)
    t = make_local_teacher(handbook(), model_dir=str(d), max_new_tokens=8, temperature=0.7, max_attempts=2)
    assert not t.model.tokenizer.chat_template and t.model.render(
        [{"role": "user", "content": "x"}]
    ).endswith("assistant:")
    [res] = t.tag(notes(1))
    assert res.status == "failed" and res.error and t.stats.retries == 1


class _Scripted:
    """A stand-in model that answers what a capable teacher would."""

    fingerprint = "scripted"

    def chat(self, messages, **_):
        return ChatOutput(text=f"Here you go:\n```json\n{answer_for(messages)}\n```", prompt_tokens=5,
                          completion_tokens=5, finish_reason="stop")  # fmt: skip


def test_local_teacher_valid_answer_gives_tags_with_evidence():
    cfg = LocalTeacherConfig(model_dir="unused")
    t = LocalTeacher(handbook(), cfg, model=_Scripted())  # type: ignore[arg-type]
    [res] = t.tag(notes(1))
    assert res.status == "ok" and res.tags and all(tag.evidence for tag in res.tags)
    assert res.trace["prompt_version"] and res.trace["ungrounded_tags"] == 0


def test_bad_model_dir_is_a_config_error(tmp_path):
    from features.errors import ConfigError

    with pytest.raises(ConfigError, match=r"config\.json"):
        make_local_teacher(handbook(), model_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="valid options"):
        make_local_teacher(handbook(), model_dir=str(tmp_path), nonsense=1)


def test_serve_usage_errors_exit_2(tmp_path):
    runner = CliRunner()
    assert runner.invoke(teacher_group, ["serve", "--model", str(tmp_path / "missing")]).exit_code == 2
    res = runner.invoke(teacher_group, ["serve", "--model", str(tmp_path)])
    assert res.exit_code == 2 and "config.json" in res.output
    assert runner.invoke(teacher_group, ["serve", "--model", str(tmp_path), "--port", "70000"]).exit_code == 2


@pytest.mark.integration
def test_teacher_serve_answers_chat_and_llm_teacher_can_call_it(tiny_dir, tmp_path):
    import httpx2 as httpx

    from tagging.teachers.llm import make_llm_teacher

    code = "from tagging.teacher_cli import teacher; teacher()"
    cmd = [
        sys.executable,
        "-c",
        code,
        "serve",
        "--model",
        str(tiny_dir),
        "--port",
        "0",
        "--max-new-tokens",
        "32",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = proc.stdout.readline()
        assert "serving" in first, proc.stderr.read()[-2000:] if proc.poll() is not None else first
        base = first.strip().split(" on ")[1]
        assert base.startswith("http://127.0.0.1:")
        assert httpx.get(base.removesuffix("/v1") + "/health", timeout=10).json()["status"] == "ok"
        assert httpx.get(base + "/models", timeout=10).json()["data"][0]["id"] == "tiny-llama"
        body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
        reply = httpx.post(base + "/chat/completions", json=body, timeout=60).json()
        assert reply["object"] == "chat.completion" and isinstance(
            reply["choices"][0]["message"]["content"], str
        )
        assert 0 < reply["usage"]["completion_tokens"] <= 8
        bad = httpx.post(base + "/chat/completions", json={"messages": []}, timeout=10)
        assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]

        t = make_llm_teacher(handbook(), base_url=base, model="tiny-llama", max_retries=0, json_repairs=0,
                             max_tokens=16, timeout_s=60)  # fmt: skip
        summary = run_teacher(t, notes(2), run_dir=tmp_path, out_name="served")
        assert summary.requests == 2 and summary.prompt_tokens > 0 and summary.failed == 2
        fails = pd.read_parquet(tmp_path / "tables" / "served_failures.parquet")
        assert fails["reason"].str.contains("invalid answer").all(), json.dumps(fails.to_dict("records"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
