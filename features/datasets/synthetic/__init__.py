"""The synthetic e-commerce community: the project's embedded default dataset.

Notes in 8 categories (sneakers, apparel, beauty, digital, food, travel, home, outdoor) carry 2-4
fine-grained true attributes (dimension -> value), rendered as noisy text; about a quarter of the
attributes are visible only in the image captions. Users have latent fine-grained preferences, and
a logging policy plus a click model turn them into impressions, clicks and engagements whose clicks
depend on the fine-grained match, not just the category. The truth is returned separately, for
evaluation only.

Example::

    from features.datasets.synthetic import load
    ds = load(size="tiny", seed=1)
    ds.tables["notes"].head(); ds.ground_truth["note_attributes"].head()
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.datasets import Dataset
from features.datasets.synthetic.behavior import UsersResult, make_interactions, make_users
from features.datasets.synthetic.notes import NotesResult, make_notes
from features.datasets.synthetic.phrases import BOILERPLATE
from features.datasets.synthetic.sizes import OPTIONS, PRESETS, GeneratorConfig, resolve_config
from features.datasets.synthetic.taxonomy import Taxonomy, build_taxonomy, value_popularity
from features.errors import ConfigError

__all__ = ["END", "GENERATOR_VERSION", "PRESETS", "Population", "generate", "load", "make_population"]

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
# A fixed end of the window keeps the data identical whatever day it is generated on.
END = pd.Timestamp("2026-03-01T00:00:00Z")
COLD_START_DAYS = 7.0
_DAY_US = 86_400 * 1_000_000


def load(
    path: str | None = None,
    *,
    seed: int = 0,
    size: str = "small",
    n_notes: int | None = None,
    n_users: int | None = None,
    days: int | None = None,
    progress: bool = False,
    **unknown: Any,
) -> Dataset:
    """Generate the synthetic community.

    Args:
        path: must be empty: the synthetic community is generated, not read.
        seed: random seed; the same seed and options give identical tables.
        size: preset, one of ``tiny`` (~300 notes, ~15k interactions), ``small`` (~4k notes,
            ~250k interactions), ``medium`` (~20k notes, ~1M), ``large`` (~100k notes, ~1.5M).
        n_notes, n_users, days: override the preset's counts / window length in days.
        progress: show progress bars while rendering notes and users.

    Returns:
        A :class:`~features.datasets.Dataset` with tables ``notes``, ``users``, ``interactions``;
        ground truth ``taxonomy``, ``note_attributes``, ``user_preferences``, ``user_categories``,
        ``boilerplate``; info with the options, counts, ``cold_start_cutoff`` and
        ``generator_version``.

    Raises:
        ConfigError: a path was given, an option is unknown, or an option value is invalid.
    """
    if path:
        raise ConfigError(f"source 'synthetic' takes no path, got path={path!r}; expected no --path")
    if unknown:
        raise ConfigError(
            f"option(s) {', '.join(sorted(unknown))} not known to source 'synthetic'; "
            f"expected any of: {', '.join(OPTIONS)}"
        )
    cfg = resolve_config(seed=seed, size=size, n_notes=n_notes, n_users=n_users, days=days, progress=progress)
    return generate(cfg)


@dataclass(frozen=True)
class Population:
    """Everything the generator draws before the interactions: the latent state of notes and users.

    Attributes:
        taxonomy, popularity: the attribute taxonomy and each value's popularity.
        notes, users: notes and users with their true attributes / preferences and latent state.
        start_us, end_us: the window, epoch microseconds.
        interactions_rng: the random stream the interactions are drawn from.
    """

    taxonomy: Taxonomy
    popularity: np.ndarray
    notes: NotesResult
    users: UsersResult
    start_us: int
    end_us: int
    interactions_rng: np.random.Generator


def make_population(cfg: GeneratorConfig) -> Population:
    """Taxonomy, notes and users for ``cfg``: the same random streams, in the same order, as
    :func:`generate` (the A/B simulator regenerates a run's latent state with it)."""
    taxonomy = build_taxonomy()
    streams = np.random.SeedSequence(cfg.seed).spawn(6)
    end_us = int(END.value // 1_000)
    start_us = end_us - cfg.days * _DAY_US
    popularity = value_popularity(taxonomy, np.random.default_rng(streams[0]))
    notes = make_notes(
        cfg,
        taxonomy,
        popularity,
        np.random.default_rng(streams[1]),
        random.Random(int(streams[2].generate_state(1)[0])),
        start_us,
        end_us,
    )
    users = make_users(
        cfg,
        taxonomy,
        popularity,
        np.random.default_rng(streams[3]),
        random.Random(int(streams[4].generate_state(1)[0])),
        start_us,
        end_us,
    )
    return Population(taxonomy, popularity, notes, users, start_us, end_us, np.random.default_rng(streams[5]))


def generate(cfg: GeneratorConfig) -> Dataset:
    """Generate the community for a resolved config (see :func:`load` for the result)."""
    began = time.perf_counter()
    pop = make_population(cfg)
    taxonomy, notes, users = pop.taxonomy, pop.notes, pop.users
    start_us, end_us = pop.start_us, pop.end_us
    cutoff_us = end_us - int(min(COLD_START_DAYS, cfg.days / 4) * _DAY_US)
    interactions = make_interactions(cfg, taxonomy, notes, users, pop.interactions_rng, start_us, end_us)

    cutoff = pd.Timestamp(cutoff_us * 1_000, tz="UTC")
    counts = interactions["event"].value_counts()
    info: dict[str, Any] = {
        "source": "synthetic",
        "seed": cfg.seed,
        "size": cfg.size,
        "n_notes": cfg.n_notes,
        "n_users": cfg.n_users,
        "days": cfg.days,
        "start": pd.Timestamp(start_us * 1_000, tz="UTC").isoformat(),
        "end": END.isoformat(),
        "cold_start_cutoff": cutoff.isoformat(),
        "n_cold_start_notes": int((notes.notes["created_at"] > cutoff).sum()),
        "n_interactions": len(interactions),
        "event_counts": {str(k): int(v) for k, v in counts.items()},
        "categories": list(taxonomy.category_names),
        "image_only_share": float((notes.attributes["channel"] == "image").mean()),
        "generator_version": GENERATOR_VERSION,
        "seconds": round(time.perf_counter() - began, 2),
    }
    log.info(
        "synthetic community (%s, seed %d): %d notes, %d users, %d interactions in %.1fs",
        cfg.size,
        cfg.seed,
        cfg.n_notes,
        cfg.n_users,
        len(interactions),
        info["seconds"],
    )
    return Dataset(
        tables={"notes": notes.notes, "users": users.users, "interactions": interactions},
        ground_truth={
            "taxonomy": taxonomy.frame(),
            "note_attributes": notes.attributes,
            "user_preferences": users.preferences,
            "user_categories": users.categories,
            "boilerplate": pd.DataFrame({"hashtag": list(BOILERPLATE)}),
        },
        info=info,
    )
