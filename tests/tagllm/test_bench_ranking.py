"""`python -m tagllm.bench.ranking` argument errors (the benchmarks themselves are not timed tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagllm.bench.ranking import main


def test_bad_baseline_ref_is_a_usage_error_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--train-speed", "--baseline-ref", "no-such-ref-xyz"])
    assert exc.value.code == 2
    assert "--baseline-ref: 'no-such-ref-xyz' is not a commit" in capsys.readouterr().err


def test_not_a_run_dir_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--train-speed"])
    assert exc.value.code == 2 and "not a prepared run directory" in capsys.readouterr().err
