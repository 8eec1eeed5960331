"""``tagllm ab report --help`` stays fast: the CLI path imports no pandas, scipy, matplotlib or numpy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "scipy", "matplotlib", "numpy", "statsmodels", "pyarrow")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print(' '.join(sorted(sys.modules)))"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")[-2]
    return {m.split(".")[0] for m in out.split()}


def test_cli_module_import_is_light() -> None:
    loaded = _modules_after("import ab_analysis.cli, ab_analysis")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_ab_report_help_through_the_tagllm_command_is_light() -> None:
    code = (
        "import sys\n"
        "from tagllm.cli import cli\n"
        "try:\n"
        "    cli.main(['ab', 'report', '--help'], prog_name='tagllm', standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    loaded = _modules_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_help_lists_the_gate_and_strictness_flags() -> None:
    from click.testing import CliRunner

    from ab_analysis.cli import ab

    text = CliRunner().invoke(ab, ["report", "--help"]).output
    for flag in (
        "--srm-threshold",
        "--srm-warn",
        "--fail-on-srm",
        "--drop-unknown-variants",
        "--normalize-labels",
    ):
        assert flag in text
    assert "3 written but the SRM check failed" in " ".join(text.split())
