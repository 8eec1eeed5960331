"""The cold-start overlap term (``TwoTowerConfig.cold_overlap``) held sparsely in the recommender.

The model's item vectors carry each id-less note's tag and category bags (centred) in
``num_tags + num_categories`` dense columns. In a recommender that is most of the memory (~1.5 KB a note
at ~370 tags) for a term only cold-only searches use, and warm notes hold zeros there. So the recommender
keeps the other columns (what the index holds) and scores the term from the live catalog's tag arrays when
a search ranks cold notes among themselves: the same numbers as the dense columns (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from features.errors import ConfigError
from ranking.data import ragged_gather

if TYPE_CHECKING:
    from ranking.recommend.live_catalog import LiveCatalog
    from ranking.retrieval.train import RetrievalModel

__all__ = ["ColdOverlap"]


@dataclass(frozen=True)
class ColdOverlap:
    """Weight, centre and layout of a model's cold-start overlap term.

    Attributes:
        weight: c of the cold-only query.
        center: (num_tags + num_categories,) the catalog's mean note bag.
        num_tags: tag columns before the category columns in a bag.
        bag: where the user's bags sit in a user vector made with overlap weight 1.
        keep: the other columns (the stored item vectors' and the shared query's).
        confidence: the note's tag bag holds its confidences (``overlap_confidence``), not their shares.
    """

    weight: float
    center: np.ndarray
    num_tags: int
    bag: slice
    keep: np.ndarray
    confidence: bool = False

    @classmethod
    def of(cls, model: RetrievalModel) -> ColdOverlap | None:
        """The term of ``model``, or None when it has none.

        Raises:
            ConfigError: ``shared_overlap`` > 0 (the term in the query over every note is not served).
        """
        cfg = model.model.config
        if not cfg.has_cold_overlap:
            return None
        if cfg.shared_overlap:
            raise ConfigError(
                f"shared_overlap: got {cfg.shared_overlap!r}; the recommender serves the cold-start overlap term "
                "in cold-only searches only; expected 0"
            )
        center = model.model.get_buffer("overlap_center").detach().numpy().astype(np.float64)
        cols = np.arange(cfg.vector_dim)
        keep = np.setdiff1d(cols, cols[cfg.overlap_slice])
        return cls(
            float(cfg.cold_overlap),
            center,
            cfg.num_tags,
            cfg.overlap_slice,
            keep,
            bool(cfg.overlap_confidence),
        )

    def narrow(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` (..., D) without the overlap columns (float32, contiguous)."""
        return np.ascontiguousarray(vectors[..., self.keep], dtype=np.float32)

    def cold_scores(self, live: LiveCatalog, rows: np.ndarray, user: np.ndarray) -> np.ndarray:
        """(len(rows),) the cold-only query's scores of notes ``rows``: the stored vectors' score plus
        c x (the note's tag bag (its confidences with ``confidence``, else their shares) and category
        . the user's bags - the user's overlap with the centre) for notes without an id.

        Args:
            live: the catalog (stored vectors, tag arrays, note-id map).
            rows: note indices.
            user: (D,) the user's vector with overlap weight 1 (what the recommender caches).
        """
        rows = np.asarray(rows, np.int64)
        base = live.items[rows] @ self.narrow(user)
        c = live.catalog
        bag = np.asarray(user[self.bag], np.float64)
        pos, lens = ragged_gather(c.tag_ptr, rows)
        r = np.repeat(np.arange(len(rows)), lens)
        conf = c.tag_conf[pos].astype(np.float64)
        total = np.bincount(r, weights=conf, minlength=len(rows))
        share = conf if self.confidence else conf / np.where(total[r] > 0, total[r], 1.0)
        tags = np.bincount(r, weights=share * bag[c.tag_vals[pos]], minlength=len(rows))
        overlap = tags + bag[self.num_tags + c.category[rows]] - float(bag @ self.center)
        id_less = live.note_map[rows] == 0
        return (base + self.weight * overlap * id_less).astype(np.float32)
