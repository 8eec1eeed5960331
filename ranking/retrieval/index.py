"""ANN index over note embeddings (faiss, inner product): exact, IVF or HNSW.

Vectors from the two towers: an L2-normalized tower part (inner product = cosine), then, with the
default recipe, the wide tag-overlap part and the freshness bias entry (user side 1), so the inner
product is the model's score (``TwoTowerConfig.vector_dim``); nothing here assumes unit norm. ``add`` appends
brand-new notes (embedded from their tags) without a rebuild: a note published a second ago is
searchable at once; ``update`` replaces a re-tagged note's vector in place (exact, IVF).

Example::

    index = NoteIndex.build(item_vecs, note_ids, kind="hnsw")
    scores, ids = index.search(user_vecs, k=50)      # (Q, k) each; ids are note id strings
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from features.errors import ConfigError

__all__ = ["INDEX_KINDS", "NoteIndex"]

INDEX_KINDS = ("exact", "ivf", "hnsw")


@dataclass
class NoteIndex:
    """A faiss index plus the note ids of its rows."""

    index: Any
    note_ids: list[str]
    kind: str

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        note_ids: Sequence[str],
        kind: str = "exact",
        *,
        nlist: int = 0,
        nprobe: int = 8,
        hnsw_m: int = 32,
        ef_search: int = 64,
    ) -> NoteIndex:
        """Index ``vectors`` (N, D) float32 for ``note_ids`` (N).

        Args:
            kind: ``exact`` (IndexFlatIP), ``ivf`` (IndexIVFFlat; trained on ``vectors``) or ``hnsw``.
            nlist: IVF cells (default ~4 * sqrt(N)).
            nprobe: IVF cells searched per query.
            hnsw_m: HNSW neighbours per node.
            ef_search: HNSW search breadth.

        Raises:
            ConfigError: unknown ``kind``, or shapes that do not match.
        """
        import faiss

        if kind not in INDEX_KINDS:
            raise ConfigError(f"kind: got {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(note_ids):
            raise ConfigError(
                f"vectors: got shape {vectors.shape} for {len(note_ids)} note ids; expected (N, D) with N = ids"
            )
        d = vectors.shape[1]
        index: Any
        if kind == "exact":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            n_cells = nlist or max(1, int(4 * np.sqrt(len(vectors))))
            n_cells = min(n_cells, len(vectors))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, n_cells, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = nprobe
        else:
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = ef_search
        index.add(vectors)
        return cls(index, list(note_ids), kind)

    def add(self, vectors: np.ndarray, note_ids: Sequence[str]) -> None:
        """Append new notes (no retraining; IVF uses its existing cells)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) != len(note_ids):
            raise ConfigError(f"add: {len(vectors)} vectors for {len(note_ids)} note ids")
        self.index.add(vectors)
        self.note_ids.extend(note_ids)

    def update(self, row: int, vector: np.ndarray) -> bool:
        """Replace the vector of ``row`` (a re-tagged note) without a rebuild, where the index allows.

        ``exact``: overwritten in place in the flat storage (the same row, so results equal a rebuild's).
        ``ivf``: removed and re-added under the same id, into the cell of its new vector (the cells
        are not retrained). ``hnsw`` cannot remove a vector: returns False and changes nothing, and
        the caller rebuilds.

        Raises:
            ConfigError: ``row`` out of range or ``vector`` of another size.
        """
        import faiss

        vec = np.ascontiguousarray(np.reshape(vector, (1, -1)), dtype=np.float32)
        if not 0 <= row < len(self) or vec.shape[1] != self.index.d:
            raise ConfigError(
                f"update: got row {row} and a vector of size {vec.shape[1]}; expected a row in "
                f"[0, {len(self)}) and size {self.index.d}"
            )
        if self.kind == "exact":
            flat = faiss.rev_swig_ptr(self.index.get_xb(), len(self) * self.index.d)
            flat[row * self.index.d : (row + 1) * self.index.d] = vec[0]
            return True
        if self.kind == "ivf":
            ids = np.array([row], np.int64)
            self.index.remove_ids(ids)
            self.index.add_with_ids(vec, ids)
            return True
        return False

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top ``k`` notes per query: (scores (Q, k), note ids per query; missing slots dropped)."""
        if k < 1:
            raise ConfigError(f"k: got {k!r}; expected an integer >= 1")
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        ids = [[self.note_ids[r] for r in row if r >= 0] for row in rows]
        return scores, ids

    def __len__(self) -> int:
        return int(self.index.ntotal)
