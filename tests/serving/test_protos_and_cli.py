"""Generated code is fresh; the CLI groups have help and stay lazy."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tagllm.cli import cli

REPO = Path(__file__).resolve().parents[2]


def _gen_module():
    spec = importlib.util.spec_from_file_location("gen_protos", REPO / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checked_in_generated_code_is_fresh(tmp_path):
    gen = _gen_module()
    fresh = gen.generate(tmp_path)
    assert fresh, "no generated files"
    stale = []
    for path in fresh:
        rel = path.relative_to(tmp_path)
        checked_in = REPO / rel
        if not checked_in.exists() or checked_in.read_bytes() != path.read_bytes():
            stale.append(str(rel))
    have = {p.relative_to(REPO) for p in (REPO / "serving" / "api" / "v1").glob("*_pb2*.py*")}
    extra = have - {p.relative_to(tmp_path) for p in fresh}
    assert not stale and not extra, (
        f"generated code is stale ({stale}) or orphaned ({sorted(map(str, extra))}): "
        "run `python scripts/gen_protos.py`"
    )


def test_serve_and_client_help():
    runner = CliRunner()
    for args in (["serve", "--help"], ["client", "--help"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0 and "Usage:" in result.output, result.output
    assert "--port-file" in runner.invoke(cli, ["serve", "--help"]).output
    for sub in ("note-tags", "user-interests", "recommend", "rank", "tag-notes", "health"):
        result = runner.invoke(cli, ["client", sub, "--help"])
        assert result.exit_code == 0 and "--target" in result.output, (sub, result.output)


def test_serve_and_client_help_import_no_grpc_or_torch():
    code = (
        "import sys\nfrom tagllm.cli import cli\n"
        "for args in (['serve', '--help'], ['client', '--help']):\n"
        "    try:\n        cli(args)\n    except SystemExit:\n        pass\n"
        "print([m for m in ('grpc', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_serve_without_run_is_a_usage_error():
    result = CliRunner().invoke(cli, ["serve"])
    assert result.exit_code == 2 and "--run" in result.output
