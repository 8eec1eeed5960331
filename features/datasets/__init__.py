"""Dataset adapters: every source becomes the same canonical tables.

An adapter is a module with a ``load(path, **options) -> Dataset`` function, registered in
:data:`SOURCES` by name and imported only when used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from features.errors import ConfigError

__all__ = ["SOURCES", "Dataset", "Loader", "load_source"]


@dataclass
class Dataset:
    """What an adapter returns.

    Attributes:
        tables: canonical tables by name; ``notes`` is always present, the others when the source
            has them (KuaiRec captions has no interaction logs, for example).
        ground_truth: evaluation-only tables by name (synthetic community: true attributes and
            preferences); written to RUN_DIR/ground_truth/.
        info: source facts for the manifest: options used, rows dropped and why, and optionally
            ``cold_start_cutoff`` (ISO timestamp: notes created after it are cold-start notes).
    """

    tables: dict[str, pd.DataFrame]
    ground_truth: dict[str, pd.DataFrame] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class Loader(Protocol):
    def __call__(self, path: str | None = None, **options: Any) -> Dataset: ...


# name -> (module, does it need --path, description)
SOURCES: dict[str, tuple[str, bool, str]] = {
    "synthetic": ("features.datasets.synthetic", False, "the embedded synthetic e-commerce community"),
    "movielens": ("features.datasets.movielens", True, "MovieLens ml-latest-small folder"),
    "kuairec": ("features.datasets.kuairec", True, "KuaiRec captions folder (kuairec_caption_category.csv)"),
    "mind": ("features.datasets.mind", True, "MIND folder (news.tsv, behaviors.tsv)"),
    "parquet": ("features.datasets.generic", True, "a folder of canonical tables as .parquet or .csv"),
}


def load_source(name: str, path: str | None = None, **options: Any) -> Dataset:
    """Load dataset ``name`` from ``path`` (sources other than ``synthetic`` need a path).

    Raises:
        ConfigError: unknown source, or a path-based source called without ``path``.
    """
    if name not in SOURCES:
        raise ConfigError(f"source {name!r} is not known; expected one of: {', '.join(SOURCES)}")
    module_name, needs_path, what = SOURCES[name]
    if needs_path and not path:
        raise ConfigError(f"source {name!r} needs --path pointing to {what}")
    module = importlib.import_module(module_name)
    dataset: Dataset = module.load(path, **options)
    return dataset
