"""`python -m tagllm.bench.recommend_scale`: usage errors, and one tiny run grown to a few thousand notes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tagllm.bench.recommend_scale import main


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_help_is_fast_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "--index-kinds" in capsys.readouterr().out


def test_usage_errors_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "missing" in _usage_error(["--run", str(tmp_path)], capsys)
    err = _usage_error(["--run", str(tmp_path), "--index-kinds", "exact,annoy"], capsys)
    assert "--index-kinds: got 'exact,annoy'" in err and "ivfpq" in err
    assert "--calls: got 0" in _usage_error(["--run", str(tmp_path), "--calls", "0"], capsys)
    assert "--candidates: got 10" in _usage_error(["--run", str(tmp_path), "--candidates", "10"], capsys)


def test_notes_below_the_run_size_is_a_usage_error(
    serving_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "--notes: got 5" in _usage_error(["--run", str(serving_run), "--notes", "5"], capsys)


def test_grows_a_serving_run_and_times_both_paths(
    serving_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--run", str(serving_run), "--notes", "3000", "--calls", "20", "--warmup", "3", "--chunk", "1000"]
    assert main([*argv, "--index-kinds", "ivfpq,exact", "--k", "10", "--candidates", "40", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["index_kinds"] == ["exact", "ivfpq"]
    assert out["grow"]["to_notes"] == 3000 == out["scaled"]["notes"]
    assert out["grow"]["added"] == 3000 - out["original"]["notes"] and out["grow"]["adds_per_s"] > 0
    for size in ("original", "scaled"):
        for kind in ("exact", "ivfpq"):
            r = out[size]["kinds"][kind]
            assert r["in_process"]["p99_ms"] > 0 and r["grpc"]["p99_ms"] > 0 and r["rss_mb"] > 0
        assert 0 < out[size]["kinds"]["ivfpq"]["recall_at_40_vs_exact"] <= 1
    assert set(out["ratios_scaled_over_original"]["exact"]) == {"in_process_p99", "grpc_p99"}
