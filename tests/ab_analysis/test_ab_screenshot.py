"""The HTML report in a real browser: a headless-Chromium screenshot shows the SRM banner and the
coloured verdicts (skipped where Chromium is not installed; `apt-get install chromium` on Debian)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ab_analysis.analysis import analyze
from ab_analysis.metrics import parse_metrics

CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None
)


def screenshot(html: Path, png: Path, width: int = 1400, height: int = 900) -> None:
    """The documented command (docs/ab-report.md), run on ``html``."""
    subprocess.run(
        [
            str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--window-size={width},{height}", f"--screenshot={png}", html.resolve().as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_screenshot_shows_banner_and_verdict_colours(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    n_c = next(c for c in range(1000, 1200) if stats.chisquare([c, 2000 - c]).pvalue < 0.009)  # warning band
    n = 2000
    treat = np.arange(n) >= n_c
    df = pd.DataFrame(
        {
            "variant": np.where(treat, "treatment", "control"),
            "engagement": rng.normal(10, 1, n) + 0.5 * treat,
            "latency": rng.normal(100, 5, n) + 3.0 * treat,
        }
    )
    defs = parse_metrics(
        [
            {"name": "engagement", "type": "mean", "numerator": "engagement"},
            {"name": "latency", "type": "mean", "numerator": "latency", "direction": "decrease"},
        ]
    )
    rep = analyze(df, defs)
    assert rep.srm.status == "warning"
    assert [r.verdict for r in rep.results] == ["win", "loss"]
    html, png = tmp_path / "report.html", tmp_path / "report.png"
    rep.to_html(html)
    screenshot(html, png)
    img = Image.open(png).convert("RGB")
    colours = {c for _, c in img.getcolors(maxcolors=1 << 20) or []}
    assert (0xFF, 0xE0, 0x8A) in colours  # the amber SRM banner
    assert img.getpixel((img.width // 2, 40)) == (0xFF, 0xE0, 0x8A)  # ... at the top
    assert (0xDF, 0xF5, 0xDF) in colours  # a green (win) row
    assert (0xFA, 0xDA, 0xDD) in colours  # a red (harmful) row
