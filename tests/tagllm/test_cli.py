"""The `tagllm` CLI: fast help without heavy imports, usage errors, prepare + describe."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from tagllm.cli import GROUPS, cli

HEAVY = ("torch", "feast", "grpc", "transformers", "torchrec", "lightgbm", "faiss", "pandas")


def test_help_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from tagllm.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def _walk(cmd: click.Command, path: list[str]):
    yield path
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None
            yield from _walk(sub, [*path, name])


def test_every_command_has_help():
    runner = CliRunner()
    paths = list(_walk(cli, []))
    assert len(paths) > len(GROUPS)
    for path in paths:
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_usage_error_exits_2_and_lists_choices():
    result = CliRunner().invoke(cli, ["data", "prepare", "--source", "nope", "--out", "x"])
    assert result.exit_code == 2
    assert "synthetic" in result.output and "movielens" in result.output
    result = CliRunner().invoke(cli, ["nosuchgroup"])
    assert result.exit_code == 2


def test_path_source_without_path_is_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["data", "prepare", "--source", "movielens", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "--path" in result.output


def test_domain_error_is_one_line_exit_1(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tagllm.cli", "data", "describe", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: ") and "not a prepared run directory" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(
        cli, ["data", "prepare", "--source", "synthetic", "--size", "tiny", "--out", str(run), "--json"]
    )
    assert result.exit_code == 0, result.output
    return run


def test_prepare_and_describe_synthetic(tiny_run):
    result = CliRunner().invoke(cli, ["data", "describe", str(tiny_run), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info["tables"]) >= {"notes", "users", "interactions"}
    assert info["tables"]["notes"]["rows"] > 0
    assert 0 < info["cold_start"]["note_share"] < 0.5
    assert len(info["categories"]) >= 8
    assert (tiny_run / "ground_truth" / "note_attributes.parquet").exists()
    human = CliRunner().invoke(cli, ["data", "describe", str(tiny_run)])
    assert human.exit_code == 0 and "Per category" in human.output


def test_demo_summary_table_shows_headlines_and_tolerates_unknown_sections(capsys, tmp_path):
    from tagllm.demo import print_summary

    summary = {
        "teacher": {"f1": 0.88621, "notes": 4000, "seconds": 1.5, "run": {"requests": 0}},
        "handbook": {"dimension_recovery": {"recovered_share": 0.9535}, "dimensions": 52},
        "new_stage": {"x": 1, "nested": {"y": 2}},
    }
    print_summary(summary, tmp_path / "summary.json")
    out = capsys.readouterr().out
    assert "f1: 0.8862" in out and "recovered_share: 0.9535" in out and "x: 1" in out
    assert "requests" not in out  # only headline figures are printed
