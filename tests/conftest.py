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
