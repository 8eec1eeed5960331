"""Shared fixtures: real datasets from ../shared/data (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Where the real datasets live: $TAGLLM_SHARED_DATA, else ../shared/data beside the checkout."""
    env = os.environ.get("TAGLLM_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data():
    """Return a function name -> Path of ../shared/data/<name>, skipping the test when it is absent."""

    def get(name: str) -> Path:
        path = shared_data_root() / name
        if not path.is_dir():
            pytest.skip(f"real dataset {name!r} not found at {path} (set TAGLLM_SHARED_DATA to its parent)")
        return path

    return get


@pytest.fixture(scope="session")
def serving_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared tiny synthetic run with a 1-epoch retrieval model and a 10-tree ranker (~20 s; built
    once per session and shared by the serving tests and the recommend_scale benchmark test)."""
    from features.prepare import prepare
    from ranking.pipeline import ranker_stage, retrieval_stage
    from ranking.ranker import RankerConfig
    from ranking.retrieval.train import TrainConfig

    run = tmp_path_factory.mktemp("serving_run")
    prepare("synthetic", run, size="tiny", seed=0)
    retrieval_stage(run, tag_sources=["ground_truth"], config=TrainConfig(epochs=1), peers=False)
    ranker_stage(run, tag_source="ground_truth", config=RankerConfig(n_estimators=10))
    return run
