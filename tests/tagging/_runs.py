"""A tiny prepared synthetic run (notes, handbook, optionally the offline teacher's tags) for tests."""

from __future__ import annotations

from pathlib import Path

import pytest


def tiny_synthetic_run(tmp_path_factory: pytest.TempPathFactory, name: str, *, teach: bool = False) -> Path:
    """``tagllm data prepare --size tiny`` + a handbook (+ ``tag teach`` with the offline teacher)."""
    from features.prepare import prepare
    from tagging.pipeline import build_run_handbook, teach_run

    out = tmp_path_factory.mktemp(name) / "run"
    prepare("synthetic", out, size="tiny")
    build_run_handbook(out, config={"min_df": 2, "min_hashtag_df": 1})
    if teach:
        teach_run(out, progress=False)
    return out
