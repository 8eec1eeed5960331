"""The two towers as the recommender uses them: the trained model, read-only, fed by the
recommender's own copy of the encoder, which reads the live catalog's arrays."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from ranking.data import Examples, UserTagBags, exposure_bags
from ranking.recommend.live_catalog import LiveCatalog
from ranking.recommend.overlap import ColdOverlap

if TYPE_CHECKING:
    from ranking.retrieval.train import RetrievalModel

__all__ = ["Towers"]


class Towers:
    """User and item embeddings over a live catalog; never writes into ``model``.

    Args:
        model: the trained retrieval model.
        live: the catalog whose notes (added ones included) the item tower embeds.
    """

    def __init__(self, model: RetrievalModel, live: LiveCatalog) -> None:
        self.model = model
        self.live = live
        self.overlap = ColdOverlap.of(model)
        self._encoder = copy.copy(model.encoder)  # ours: its catalog and note map follow ``live``

    def _sync(self) -> None:
        self._encoder.catalog = self.live.catalog
        self._encoder.note_map = self.live.note_map

    def users(self, ex: Examples) -> np.ndarray:
        """(B, D) user embeddings of the user side of ``ex``; with the cold-start overlap term, its
        entries at weight 1 (the user's bags): :meth:`query` and
        :meth:`~ranking.recommend.overlap.ColdOverlap.cold_scores` derive both queries from it."""
        import torch

        self._sync()
        with torch.no_grad():
            kjt = self._encoder.encode(ex)
            exposure = self.model.exposure(ex.exposure)
            return self.model.model.user_embedding(kjt, overlap_weight=1.0, exposure=exposure).numpy()

    @property
    def reads_exposure(self) -> bool:
        """True when the model's cold-start overlap term reads what each user was shown."""
        cfg = self.model.model.config
        return bool(cfg.has_cold_overlap and cfg.overlap_exposure)

    def exposure(self, ptr: np.ndarray, notes: np.ndarray) -> UserTagBags:
        """The tag bags of the notes shown per user (ragged ``ptr``, ``notes``), over the live catalog."""
        return exposure_bags(self.live.catalog, ptr, notes)

    def query(self, vector: np.ndarray) -> np.ndarray:
        """A cached user vector (:meth:`users`) as the query over the stored item vectors (the
        overlap columns dropped: the query over every note gives them weight 0)."""
        return vector if self.overlap is None else self.overlap.narrow(vector)

    def notes(self, notes: np.ndarray) -> np.ndarray:
        """(K, D') float32 item embeddings of note indices ``notes`` (K,), as stored: without the
        cold-start overlap columns (scored sparsely, :mod:`ranking.recommend.overlap`)."""
        import torch

        self._sync()
        self.model.model.eval()
        with torch.no_grad():
            mass = self.model.tag_mass(notes, self.live.catalog)
            vec = self.model.model.item_embedding(self._encoder.encode(notes=notes), mass).numpy()
        return vec.astype(np.float32) if self.overlap is None else self.overlap.narrow(vec)
