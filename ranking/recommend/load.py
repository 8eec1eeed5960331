"""Loading a run's trained models for the in-memory recommender."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from features.errors import ConfigError, NotFoundError
from features.io import RunDir
from ranking.data import RunData, load_run_data

if TYPE_CHECKING:
    from ranking.ranker import Ranker
    from ranking.retrieval.train import RetrievalModel

__all__ = ["file_version", "load_ranker", "load_retrieval"]

log = logging.getLogger(__name__)


def load_retrieval(run_dir: str | Path, data: RunData | None = None) -> RetrievalModel:
    """Load RUN/retrieval/model.pt into a :class:`~ranking.retrieval.train.RetrievalModel`.

    Args:
        run_dir: the run.
        data: the run's data with the model's tag source (loaded when None).

    Raises:
        NotFoundError: the run has no trained retrieval model.
        ConfigError: ``data`` has another tag source, or the run's notes/users differ from the model's.
    """
    import torch

    from ranking.retrieval.model import FeatureEncoder, TwoTower, TwoTowerConfig
    from ranking.retrieval.train import RetrievalModel, TrainConfig

    run = RunDir(run_dir).require()
    path = run.retrieval_model
    if not path.exists():
        raise NotFoundError(f"{path}: no retrieval model; run `tagllm train retrieval --run {run.path}`")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if data is None:
        data = load_run_data(run, state["tag_source"])
    elif data.catalog.tag_source != state["tag_source"]:
        raise ConfigError(
            f"data: catalog tag source {data.catalog.tag_source!r}; the model was trained on {state['tag_source']!r}"
        )
    mcfg = TwoTowerConfig(**state["model_config"])
    known_train = {f.name for f in TrainConfig.__dataclass_fields__.values()}
    tcfg = TrainConfig(**{k: v for k, v in state["train_config"].items() if k in known_train})
    encoder = FeatureEncoder(
        data, mcfg.feature_set, np.zeros(0, np.int64), np.zeros(0, np.int64), freshness=mcfg.freshness
    )
    encoder.user_map = np.asarray(state["user_map"], np.int64)
    encoder.note_map = np.asarray(state["note_map"], np.int64)
    if len(encoder.note_map) != data.catalog.num_notes or len(encoder.user_map) != data.num_users:
        raise ConfigError(
            f"{path}: trained on {len(encoder.note_map)} notes / {len(encoder.user_map)} users; the run has "
            f"{data.catalog.num_notes} / {data.num_users} — retrain the model for this run"
        )
    model = TwoTower(mcfg)
    model.load_state_dict(state["state_dict"])
    model.eval()
    source = str(state.get("feature_source", "parquet"))
    if source == "feast":
        log.warning(
            "%s was trained with user tag bags from Feast snapshots (feature_source=feast); serving builds "
            "them from each user's live history (the same profile definition, fresher, not truncated "
            "to the snapshot's top tags)",
            path,
        )
    return RetrievalModel(model, encoder, data, tcfg, feature_source=source)


def load_ranker(run_dir: str | Path) -> Ranker | None:
    """Load RUN/ranker/model.txt into a :class:`~ranking.ranker.Ranker` (None when absent)."""
    import lightgbm as lgb

    from ranking.ranker import Ranker, RankerConfig

    path = RunDir(run_dir).ranker_model
    if not path.exists():
        return None
    booster = lgb.Booster(model_file=str(path))
    return Ranker(booster, tuple(booster.feature_name()), RankerConfig())


def file_version(*paths: Path) -> str:
    """A short hash of the files' names, sizes and modification times (a model version string)."""
    h = hashlib.sha256()
    for p in paths:
        if p.exists():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]
