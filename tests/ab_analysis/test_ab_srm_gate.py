"""SRM as a gate: configurable fail threshold and warning band, overall and per segment, in JSON,
Markdown, HTML, on stderr and as exit status 3 with --fail-on-srm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from ab_analysis.analysis import analyze
from ab_analysis.cli import ab
from ab_analysis.errors import EXIT_SRM_FAILED, InvalidArgumentError
from ab_analysis.metrics import parse_metrics
from ab_analysis.srm import srm_check

Y = parse_metrics([{"name": "y", "type": "mean", "numerator": "y"}])


def _counts_with_p(target: float, n: int = 20000) -> tuple[int, int]:
    """Two arm sizes summing to ``n`` whose chi-square p-value is just below ``target``."""
    for d in range(0, n // 2):
        c = (n // 2 + d, n // 2 - d)
        if stats.chisquare(c).pvalue < target:
            return c
    raise AssertionError("unreachable")  # pragma: no cover


def _users(n_c: int, n_t: int, seed: int = 0, segment: list[str] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "user_id": np.arange(n_c + n_t),
            "variant": ["control"] * n_c + ["treatment"] * n_t,
            "y": rng.normal(10, 2, n_c + n_t) + np.r_[np.zeros(n_c), np.full(n_t, 0.5)],
        }
    )
    if segment is not None:
        df["platform"] = segment
    return df


@pytest.mark.parametrize(("target", "status"), [(0.9, "ok"), (0.009, "warning"), (0.0009, "fail")])
def test_srm_status_bands(target: float, status: str) -> None:
    c = _counts_with_p(target)
    res = srm_check(c)
    assert res.status == status and res.mismatch == (status == "fail")
    assert res.p_value == pytest.approx(stats.chisquare(c).pvalue, rel=1e-12)
    assert (res.threshold, res.warn_threshold) == (0.001, 0.01)


def test_thresholds_are_configurable_and_validated() -> None:
    c = _counts_with_p(0.009)  # a warning by default
    assert srm_check(c, threshold=0.01, warn_threshold=0.05).status == "fail"
    assert srm_check(c, threshold=0.0001, warn_threshold=0.001).status == "ok"
    rep = analyze(_users(*c), Y, srm_threshold=0.01, srm_warn=0.05)
    assert rep.srm.status == "fail" and rep.srm_status == "fail" and not rep.trusted
    with pytest.raises(InvalidArgumentError, match="srm_warn"):
        analyze(_users(*c), Y, srm_threshold=0.01, srm_warn=0.005)
    with pytest.raises(InvalidArgumentError, match="srm_threshold"):
        analyze(_users(*c), Y, srm_threshold=1.5)


def test_per_segment_check_greys_only_that_segment() -> None:
    # overall balanced (500/500), but "ios" has 350 control vs 150 treatment, "web" the reverse
    seg = ["ios"] * 350 + ["web"] * 150 + ["ios"] * 150 + ["web"] * 350
    rep = analyze(_users(500, 500, segment=seg), Y, segments=["platform"])
    assert rep.srm.status == "ok"
    by_scope = {s.label: s for s in rep.srm_segments}
    assert set(by_scope) == {"platform=ios", "platform=web"}
    assert all(s.status == "fail" for s in by_scope.values())
    assert by_scope["platform=ios"].counts == (350, 150)
    assert rep.srm_status == "fail"
    overall = rep.result("y")
    ios = rep.result("y", "platform", "ios")
    assert overall.trusted and not ios.trusted
    doc = rep.to_dict()
    assert doc["srm_gate"]["failed"] == ["platform=ios", "platform=web"]
    assert [s["segment_value"] for s in doc["srm_segments"]] == ["ios", "web"]


def test_failed_gate_in_json_markdown_html() -> None:
    c = _counts_with_p(1e-6)
    rep = analyze(_users(*c), Y)
    doc = rep.to_dict()
    assert doc["srm"]["status"] == "fail" and doc["srm"]["warn_threshold"] == 0.01
    assert doc["srm_gate"]["status"] == "fail" and doc["headline"]["trusted"] is False
    assert all(m["trusted"] is False for m in doc["metrics"])
    md = rep.to_markdown()
    first = md.splitlines()[2]
    assert first.startswith("> **⛔ SAMPLE RATIO MISMATCH") and "p < 0.001" in first
    assert md.index("SAMPLE RATIO MISMATCH") < md.index("**Headline**")
    assert "(untrusted: SRM)" in md
    html = rep.to_html()
    body = html[html.index("<body>") :]
    assert body.startswith('<body><div class="banner fail">SAMPLE RATIO MISMATCH')
    assert '<tr class="untrusted">' in html and 'class="win"' not in html


def test_warning_band_in_reports() -> None:
    rep = analyze(_users(*_counts_with_p(0.009)), Y)
    assert rep.srm.status == "warning" and rep.trusted
    assert "Sample ratio warning" in rep.to_markdown().splitlines()[2]
    assert '<div class="banner warning">' in rep.to_html()
    assert rep.to_dict()["srm_gate"]["warned"] == ["overall"]


def _cli(tmp_path: Path, counts: tuple[int, int], *extra: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "u.csv"
    _users(*counts).to_csv(path, index=False)
    metrics = tmp_path / "m.yaml"
    metrics.write_text("metrics:\n  - {name: y, type: mean, numerator: y}\n")
    return CliRunner().invoke(
        ab, ["report", "--users", str(path), "--metrics", str(metrics), "--out", str(tmp_path / "o"), *extra]
    )


def test_cli_stderr_and_exit_status(tmp_path: Path) -> None:
    ok = _cli(tmp_path, (500, 500))
    assert ok.exit_code == 0 and ok.stderr == ""
    warn = _cli(tmp_path, _counts_with_p(0.009))
    assert warn.exit_code == 0
    assert warn.stderr.count("\n") == 1 and warn.stderr.startswith("SRM warning (p < 0.01) in overall")
    fail = _cli(tmp_path, _counts_with_p(1e-5))
    assert fail.exit_code == 0 and fail.stderr.startswith("SRM FAILED (p < 0.001) in overall")
    gated = _cli(tmp_path, _counts_with_p(1e-5), "--fail-on-srm")
    assert gated.exit_code == EXIT_SRM_FAILED == 3, gated.output
    assert gated.stderr.count("\n") == 1 and "--fail-on-srm" in gated.stderr
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    assert doc["srm"]["status"] == "fail"  # the reports are written before the gate exits
    relaxed = _cli(
        tmp_path, _counts_with_p(1e-5), "--fail-on-srm", "--srm-threshold", "1e-9", "--srm-warn", "1e-8"
    )
    assert relaxed.exit_code == 0 and relaxed.stderr == ""
    bad = _cli(tmp_path, (500, 500), "--srm-threshold", "0.05", "--srm-warn", "0.01")
    assert bad.exit_code == 2 and "--srm-warn=0.01 is below --srm-threshold=0.05" in bad.output


def test_exit_status_3_through_the_tagllm_entry_point(tmp_path: Path) -> None:
    """The console script runs click with standalone_mode=False: the gate's status must survive it."""
    import subprocess
    import sys

    path = tmp_path / "u.csv"
    _users(*_counts_with_p(1e-5, n=4000)).to_csv(path, index=False)
    metrics = tmp_path / "m.yaml"
    metrics.write_text("metrics:\n  - {name: y, type: mean, numerator: y}\n")
    code = "import sys; from tagllm.cli import main; sys.argv = ['tagllm', *sys.argv[1:]]; main()"
    args = [
        "-q",
        "ab",
        "report",
        "--users",
        str(path),
        "--metrics",
        str(metrics),
        "--out",
        str(tmp_path / "o"),
    ]
    res = subprocess.run([sys.executable, "-c", code, *args, "--fail-on-srm"], capture_output=True, text=True)
    assert res.returncode == EXIT_SRM_FAILED, res.stderr
    assert res.stderr.strip().splitlines() == [
        "SRM FAILED (p < 0.001) in overall: do not trust the lifts; exit 3 (--fail-on-srm)"
    ]
