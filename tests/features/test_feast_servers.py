"""Redis online store against a real redis-server; the stock feast CLI (plan/apply/listen); our CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from features.client import VIEW_FEATURES, FeatureClient
from features.feast_repo import FEATURE_REPO, FeastSettings, apply, materialize
from features.features_cli import features as features_cli
from tests.features.conftest import make_tiny_run

FEAST = str(Path(sys.executable).with_name("feast"))


@pytest.mark.integration
def test_redis_fast_path_equals_feast_and_push(tmp_path, redis_server):
    run = make_tiny_run(tmp_path / "run")
    settings = FeastSettings(run.path, online="redis", redis=redis_server)
    apply(settings)
    materialize(settings)
    with FeatureClient(run.path, online="redis", redis=redis_server) as client:
        for view in VIEW_FEATURES:
            key = "user_id" if view == "user_interests" else "note_id"
            ids = ([f"u{i}" for i in range(8)] if key == "user_id" else [f"n{i:03d}" for i in range(30)]) + [
                "nope"
            ]
            ours = client.online(view, ids)
            feast = client.online_feast(view, ids)
            for name in VIEW_FEATURES[view]:
                assert ours.columns[name] == feast[name], (view, name)
            assert ours.found[-1] is False and sum(ours.found) > 1
        client.push_note_tags(
            [
                {
                    "note_id": "fresh",
                    "tags": [{"text": "tent", "dimension": "gear", "confidence": 1.0}],
                    "tagger_version": "s",
                }
            ]
        )
        got = client.note_tags(["fresh"])[0]
        assert got is not None and got.tag_texts == ["tent"]


@pytest.mark.integration
def test_stock_feast_cli_plan_apply_listen(tmp_path):
    """`feast apply` / `feast listen` work from feature_repo/ with only TAGLLM_RUN_DIR set (`feast plan`:
    the test below)."""
    from tagllm.bench.features import feast_listen

    run = make_tiny_run(tmp_path / "run")
    result = CliRunner().invoke(features_cli, ["apply", "--run", str(run.path), "--json"])
    assert result.exit_code == 0, result.output
    (run.path / "feast" / "registry.db").unlink()  # the stock CLI must rebuild it
    env = {**os.environ, "TAGLLM_RUN_DIR": str(run.path)}
    proc = subprocess.run(
        [FEAST, "apply"], cwd=FEATURE_REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (run.path / "feast" / "registry.db").exists()
    assert not (FEATURE_REPO / "data").exists()  # nothing per-run in the git tree
    result = CliRunner().invoke(features_cli, ["materialize", "--run", str(run.path)])
    assert result.exit_code == 0, result.output
    with feast_listen(FeastSettings(run.path)) as call:
        resp = call("note_tags", "note_id", ["n001", "zzz"], ["tag_texts", "tagger_version"])
    names = list(resp.metadata.feature_names.val)
    values = {n: resp.results[i].values for i, n in enumerate(names)}
    assert values["tagger_version"][0].string_val == "v1"
    assert values["tag_texts"][0].string_list_val.val  # n001 has tags
    assert values["tag_texts"][1].WhichOneof("val") is None  # unknown note: null


@pytest.mark.integration
def test_stock_feast_plan(applied_run):
    env = {**os.environ, "TAGLLM_RUN_DIR": str(applied_run)}
    proc = subprocess.run(
        [FEAST, "plan"], cwd=FEATURE_REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    env.pop("TAGLLM_RUN_DIR")
    proc = subprocess.run(
        [FEAST, "plan"], cwd=FEATURE_REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode != 0 and "TAGLLM_RUN_DIR" in proc.stdout + proc.stderr


def test_cli_usage_errors(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    r = CliRunner().invoke(features_cli, ["apply", "--run", str(run.path), "--online", "redis"])
    assert r.exit_code == 2 and "--redis HOST:PORT" in r.output
    r = CliRunner().invoke(features_cli, ["apply", "--run", str(run.path), "--online", "mongo"])
    assert r.exit_code == 2 and "sqlite" in r.output and "redis" in r.output
