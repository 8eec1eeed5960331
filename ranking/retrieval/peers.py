"""Peers scored on the same time split as the two-tower model.

- :class:`PopularityScorer`: training clicks per note (cold-start notes have none: chance among them).
- :class:`ALSScorer`: implicit-feedback ALS on (user, note) engagements, IDs only (the ``implicit``
  package; a note never seen in training has no factors and scores 0).
- :class:`TagOverlapScorer`: no learning — the user's engagement-weighted tag (and category)
  profile dotted with the note's tags; the content baseline a learned model must beat.
- LightFM (hybrid with item features) is not offered: lightfm 1.17 is sdist-only and its setup.py
  fails to build on this Python ("'dict' object has no attribute '__LIGHTFM_SETUP__'").
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from features.errors import ConfigError
from ranking.data import RunData, ragged_gather, user_exposure, user_states

__all__ = ["ALSScorer", "PopularityScorer", "TagOverlapScorer"]

log = logging.getLogger(__name__)


def _train_engagements(data: RunData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    inter = data.interactions
    m = (inter.weight > 0) & (inter.ts < data.cutoff_s)
    return inter.user[m], inter.note[m], inter.weight[m]


class PopularityScorer:
    """Score = number of training clicks of the note (same for every user)."""

    def __init__(self, data: RunData) -> None:
        inter = data.interactions
        m = (inter.event == "click") & (inter.ts < data.cutoff_s)
        self.counts = np.bincount(inter.note[m], minlength=data.catalog.num_notes).astype(np.float64)

    def scores(self, users: np.ndarray, notes: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts[notes], (len(users), len(notes)))


class ALSScorer:
    """Implicit ALS (IDs only) on engagement weights before the cutoff.

    Args:
        data: the run.
        factors: latent size.
        iterations: ALS sweeps.
        regularization: L2 weight.
        alpha: confidence scaling of the engagement weights.
        seed: random state.

    Raises:
        ConfigError: the ``implicit`` package is missing (names the requirements file).
    """

    def __init__(
        self,
        data: RunData,
        factors: int = 32,
        iterations: int = 15,
        regularization: float = 0.05,
        alpha: float = 2.0,
        seed: int = 0,
    ) -> None:
        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(
                "peer 'als' needs the implicit package: pip install --no-deps -r requirements/pending-ranking.txt"
            ) from exc
        u, n, w = _train_engagements(data)
        mat = sp.csr_matrix((w.astype(np.float32), (u, n)), shape=(data.num_users, data.catalog.num_notes))
        model = AlternatingLeastSquares(
            factors=factors,
            iterations=iterations,
            regularization=regularization,
            alpha=alpha,
            random_state=seed,
            num_threads=1,
        )
        model.fit(mat, show_progress=False)
        self.user_factors = np.asarray(model.user_factors)
        self.item_factors = np.asarray(model.item_factors)

    def scores(self, users: np.ndarray, notes: np.ndarray) -> np.ndarray:
        return self.user_factors[users] @ self.item_factors[notes].T


class TagOverlapScorer:
    """Engagement-weighted tag profile (history before the cutoff) dot note tag confidences.

    Args:
        data: the run (its catalog's tags are used).
        category_weight: weight of the user's category share added to the score.
        history_len: engagements kept per user.
        exposure: b >= 0: the user's tag profile minus b x the tag bag of the last
            :data:`~ranking.data.EXPOSURE_LEN` notes it was shown (impressions before the cutoff):
            what the user picks among what it is shown, not the tags of everything it is shown
            (``TwoTowerConfig.overlap_exposure``). 0 = the plain heuristic.
    """

    def __init__(
        self, data: RunData, category_weight: float = 1.0, history_len: int = 30, exposure: float = 0.0
    ) -> None:
        if exposure < 0:
            raise ConfigError(f"exposure: got {exposure!r}; expected a number >= 0 (0 = off)")
        c = data.catalog
        users = np.arange(data.num_users)
        ex = user_states(data, users, np.full(len(users), data.cutoff_s), history_len=history_len)
        row = np.repeat(np.arange(len(ex)), np.diff(ex.hist_ptr))
        pos, tl = ragged_gather(c.tag_ptr, ex.hist_note)
        prof = sp.csr_matrix(
            (np.repeat(ex.hist_weight, tl) * c.tag_conf[pos], (np.repeat(row, tl), c.tag_vals[pos])),
            shape=(len(users), c.num_tags),
        )
        self.user_tags = _row_normalize(prof)
        if exposure:
            shown = user_exposure(data, users, np.full(len(users), data.cutoff_s))
            self.user_tags = sp.csr_matrix(self.user_tags - exposure * sp.csr_matrix(shown.dense(c.num_tags)))
        nrow = np.repeat(np.arange(c.num_notes), np.diff(c.tag_ptr))
        self.note_tags = sp.csr_matrix((c.tag_conf, (nrow, c.tag_vals)), shape=(c.num_notes, c.num_tags))
        ncat = len(c.categories) + 1
        cats = sp.csr_matrix((ex.hist_weight, (row, c.category[ex.hist_note])), shape=(len(users), ncat))
        self.user_cats = _row_normalize(cats) * category_weight
        self.note_cats = sp.csr_matrix(
            (np.ones(c.num_notes), (np.arange(c.num_notes), c.category)), shape=(c.num_notes, ncat)
        )

    def scores(self, users: np.ndarray, notes: np.ndarray) -> np.ndarray:
        s = self.user_tags[users] @ self.note_tags[notes].T + self.user_cats[users] @ self.note_cats[notes].T
        return np.asarray(s.toarray())


def _row_normalize(m: sp.csr_matrix) -> sp.csr_matrix:
    tot = np.asarray(m.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / np.where(tot > 0, tot, 1.0)) @ m)
