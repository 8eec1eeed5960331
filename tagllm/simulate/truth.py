"""The synthetic users' true responses: the generator's own click / dwell / engagement model.

The simulator must answer a recommendation exactly as the synthetic community's users answered the
logging policy that produced the run's data. The run keeps only part of the truth on disk (true
note attributes and user preferences), not the latent note quality, user click bias and activity,
so :func:`load_truth` regenerates the generator's state from the run's manifest (same seed, same
options, same random streams as :func:`features.datasets.synthetic.generate`) and checks it
against the stored ground truth before using it. Responses then go through the generator's pure
functions (:func:`~features.datasets.synthetic.behavior.click_logit`, ``dwell_log_median``,
``engagement_logit``, ``preference_match``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.datasets.synthetic import GENERATOR_VERSION, make_population
from features.datasets.synthetic.behavior import (
    BehaviorParams,
    UsersResult,
    click_logit,
    dwell_log_median,
    engagement_logit,
    preference_match,
)
from features.datasets.synthetic.notes import NotesResult
from features.datasets.synthetic.sizes import resolve_config
from features.datasets.synthetic.taxonomy import Taxonomy
from features.errors import ConfigError
from features.io import RunDir

__all__ = ["ENGAGEMENTS", "Responses", "TrueModel", "load_truth"]

log = logging.getLogger(__name__)

#: Engagement events after a click, in the generator's order (``engagement_logit``'s ``event``).
ENGAGEMENTS = ("like", "collect", "comment", "share")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Responses:
    """One user's answers to a slate of K notes.

    Attributes:
        p_click: (K,) true click probability.
        click: (K,) bool.
        dwell: (K,) seconds (meaningful where ``click``).
        engaged: (K, 4) bool, columns in :data:`ENGAGEMENTS` order (only where ``click``).
    """

    p_click: np.ndarray
    click: np.ndarray
    dwell: np.ndarray
    engaged: np.ndarray


@dataclass
class TrueModel:
    """The generator's users and notes (the run's, then any published during the simulation), and
    its response model."""

    users: UsersResult
    notes: NotesResult
    n_values: int
    params: BehaviorParams
    user_index: pd.Index
    note_index: pd.Index
    taxonomy: Taxonomy
    popularity: np.ndarray

    def user(self, user_ids: pd.Index | list[str] | np.ndarray) -> np.ndarray:
        """Generator user indices of ``user_ids`` (-1 for unknown ids)."""
        return np.asarray(self.user_index.get_indexer(list(user_ids)), dtype=np.int64)

    def note(self, note_ids: list[str] | np.ndarray) -> np.ndarray:
        """Generator note indices of ``note_ids`` (-1 for unknown ids)."""
        return np.asarray(self.note_index.get_indexer(list(note_ids)), dtype=np.int64)

    def add_notes(self, new: NotesResult) -> None:
        """Append notes drawn during the simulation (:func:`~features.datasets.synthetic.notes.draw_notes`)
        so that :meth:`respond` answers them like the run's own notes."""
        n = self.notes
        self.notes = NotesResult(
            pd.concat([n.notes, new.notes], ignore_index=True),
            pd.concat([n.attributes, new.attributes], ignore_index=True),
            np.concatenate([n.category, new.category]),
            np.concatenate([n.created_us, new.created_us]),
            np.concatenate([n.quality, new.quality]),
            np.concatenate([n.attr_vids, new.attr_vids]),
        )
        self.note_index = self.note_index.append(pd.Index(new.notes["note_id"].astype(str)))

    @property
    def activity(self) -> np.ndarray:
        """(U,) the users' true relative activity (mean 1)."""
        return self.users.activity

    def respond(self, user: int, notes: np.ndarray, rng: np.random.Generator) -> Responses:
        """Draw one user's clicks, dwell and engagements on ``notes`` (generator indices), each note
        answered independently as an impression of the generator's logging policy."""
        k = len(notes)
        u = np.full(k, user, dtype=np.int64)
        match = preference_match(self.users, self.notes, u, notes, self.n_values)
        preferred = (self.users.cat_idx[user][None, :] == self.notes.category[notes][:, None]).any(axis=1)
        quality = self.notes.quality[notes]
        p = self.params
        p_click = _sigmoid(click_logit(p, match, quality, self.users.bias[u], preferred))
        # Every draw happens whatever the outcome, so a slate's randomness does not depend on its clicks.
        click = rng.random(k) < p_click
        dwell = np.round(
            np.clip(rng.lognormal(dwell_log_median(p, match, quality), p.dwell_sigma), 1.0, 1_200.0), 1
        )
        engaged = np.stack(
            [
                rng.random(k) < _sigmoid(engagement_logit(p, e, match, quality))
                for e in range(len(ENGAGEMENTS))
            ],
            axis=1,
        )
        return Responses(p_click, click, dwell, engaged & click[:, None])


def load_truth(run: RunDir) -> TrueModel:
    """Regenerate the synthetic community's latent state for ``run`` and check it against the run.

    Raises:
        ConfigError: the run is not a synthetic-community run, or its stored ground truth does not
            match the regenerated state (another generator version, edited tables).
    """
    manifest = run.manifest()
    if manifest.get("source") != "synthetic":
        raise ConfigError(
            f"run: {run.path} has source {manifest.get('source')!r}; the simulator needs a 'synthetic' run "
            "(its users' true preferences answer the recommendations)"
        )
    info = manifest.get("info") or {}
    if info.get("generator_version", GENERATOR_VERSION) != GENERATOR_VERSION:
        raise ConfigError(
            f"run: {run.path} was generated by synthetic generator {info.get('generator_version')!r}; "
            f"this code has {GENERATOR_VERSION!r}: re-run `tagllm data prepare`"
        )
    opts = manifest.get("options") or {}
    cfg = resolve_config(
        seed=opts.get("seed", 0),
        size=opts.get("size", "small"),
        n_notes=opts.get("n_notes"),
        n_users=opts.get("n_users"),
        days=opts.get("days"),
    )
    pop = make_population(cfg)
    users, notes = pop.users, pop.notes
    _check(run, "user_preferences", users.preferences)
    _check(run, "note_attributes", notes.attributes)
    return TrueModel(
        users,
        notes,
        len(pop.taxonomy.values),
        BehaviorParams(),
        pd.Index(users.users["user_id"].astype(str)),
        pd.Index(notes.notes["note_id"].astype(str)),
        pop.taxonomy,
        pop.popularity,
    )


def _check(run: RunDir, name: str, regenerated: pd.DataFrame) -> None:
    stored = run.read_ground_truth(name)
    a = stored.reset_index(drop=True).astype(str)
    b = (
        regenerated.reset_index(drop=True)[list(stored.columns)].astype(str)
        if set(stored.columns) <= set(regenerated.columns)
        else None
    )
    if b is None or not a.equals(b):
        raise ConfigError(
            f"run: {run.ground_truth_dir / (name + '.parquet')} differs from the synthetic generator's "
            "state for the run's options; the simulator cannot reproduce its users (re-run `tagllm data prepare`)"
        )
