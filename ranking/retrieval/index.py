"""ANN index over note embeddings (faiss, inner product): exact, IVF, HNSW or IVF-PQ.

Vectors from the two towers: an L2-normalized tower part (inner product = cosine), then, with the
default recipe, the wide tag-overlap part and the freshness bias entry (user side 1), so the inner
product is the model's score (``TwoTowerConfig.vector_dim``); nothing here assumes unit norm. ``add``
indexes notes without a rebuild: a note published a second ago is searchable at once, and a note id
already present has its vector replaced (exact, IVF, IVF-PQ; HNSW cannot remove a vector and refuses).
``update`` replaces a row's vector in place.

``ivfpq`` (:mod:`ranking.retrieval.ivfpq`) is the catalog-scale kind: ~137 bytes a note with its re-rank
store instead of 388 (docs/scaling.md "Index"); train it on a sample with :meth:`NoteIndex.trained` and
add in chunks to index more vectors than fit in memory at once. :meth:`NoteIndex.save` /
:meth:`NoteIndex.load` persist any kind (one ``.npz``, written atomically).

Example::

    index = NoteIndex.build(item_vecs, note_ids, kind="hnsw")
    scores, ids = index.search(user_vecs, k=50)      # (Q, k) each; ids are note id strings
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.errors import ConfigError
from features.io import atomic_path
from ranking.retrieval.ivfpq import IVFPQConfig, IVFPQIndex

__all__ = ["INDEX_KINDS", "IVFPQConfig", "NoteIndex"]

INDEX_KINDS = ("exact", "ivf", "hnsw", "ivfpq")
_FORMAT = 1


@dataclass
class NoteIndex:
    """A faiss index (or :class:`~ranking.retrieval.ivfpq.IVFPQIndex`) plus the note ids of its rows.

    Row ``r`` of the index (its faiss id) is ``note_ids[r]``.
    """

    index: Any
    note_ids: list[str]
    kind: str
    _rows: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

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
        ivfpq: IVFPQConfig | None = None,
    ) -> NoteIndex:
        """Index ``vectors`` (N, D) float32 for ``note_ids`` (N).

        Args:
            kind: ``exact`` (IndexFlatIP), ``ivf`` (IndexIVFFlat; trained on ``vectors``), ``hnsw`` or
                ``ivfpq`` (trained on a sample of ``vectors``; see ``ivfpq``).
            nlist: IVF cells (default ~4 * sqrt(N)); ``ivf`` only.
            nprobe: IVF cells searched per query; ``ivf`` only.
            hnsw_m: HNSW neighbours per node.
            ef_search: HNSW search breadth.
            ivfpq: the ``ivfpq`` parameters (default :class:`IVFPQConfig()`).

        Raises:
            ConfigError: unknown ``kind``, shapes that do not match, or a duplicate note id.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(note_ids):
            raise ConfigError(
                f"vectors: got shape {vectors.shape} for {len(note_ids)} note ids; expected (N, D) with N = ids"
            )
        if kind == "ivfpq":
            out = cls.trained(vectors, kind="ivfpq", ivfpq=ivfpq)
            out.add(vectors, note_ids)
            if len(out) != len(note_ids):
                raise ConfigError(
                    f"note_ids: {len(note_ids) - len(out)} duplicate id(s); expected unique ids"
                )
            return out
        return cls._build_faiss(vectors, note_ids, kind, nlist, nprobe, hnsw_m, ef_search)

    @classmethod
    def trained(
        cls, sample: np.ndarray, kind: str = "ivfpq", *, ivfpq: IVFPQConfig | None = None
    ) -> NoteIndex:
        """An empty index for vectors like ``sample`` (S, D), ready for :meth:`add` in chunks.

        ``ivfpq`` trains its cells and codebooks on (a ``train_size`` subset of) ``sample``; ``exact``
        only takes its width. Other kinds train on everything: use :meth:`build`.

        Raises:
            ConfigError: ``kind`` other than ``ivfpq`` or ``exact``, or ``sample`` not (S, D).
        """
        import faiss

        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if sample.ndim != 2:
            raise ConfigError(f"sample: got shape {sample.shape}; expected (S, D)")
        if kind == "ivfpq":
            return cls(IVFPQIndex.trained(sample, ivfpq), [], kind)
        if kind == "exact":
            return cls(faiss.IndexFlatIP(sample.shape[1]), [], kind)
        raise ConfigError(f"kind: got {kind!r}; expected ivfpq or exact (build() for {kind!r})")

    @classmethod
    def _build_faiss(
        cls,
        vectors: np.ndarray,
        note_ids: Sequence[str],
        kind: str,
        nlist: int,
        nprobe: int,
        hnsw_m: int,
        ef_search: int,
    ) -> NoteIndex:
        import faiss

        if kind not in INDEX_KINDS:
            raise ConfigError(f"kind: got {kind!r}; expected one of {', '.join(INDEX_KINDS)}")
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
        """Index ``vectors`` (n, D) for ``note_ids`` (n) without retraining (IVF kinds use their cells).

        A new id gets the next row. An id already indexed keeps its row and has its vector replaced
        (as :meth:`update`); within one call the last vector of a repeated id wins.

        Raises:
            ConfigError: shapes that do not match, or a replacement on ``hnsw`` (it cannot remove a
                vector: rebuild instead); nothing is changed then.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(note_ids) or vectors.shape[1] != self.index.d:
            raise ConfigError(
                f"add: got vectors of shape {vectors.shape} for {len(note_ids)} note ids; expected "
                f"({len(note_ids)}, {self.index.d})"
            )
        rows = self._row_map()
        last = {nid: i for i, nid in enumerate(note_ids)}  # insertion order of first sight, last index
        old = [(rows[nid], i) for nid, i in last.items() if nid in rows]
        new = [(nid, i) for nid, i in last.items() if nid not in rows]
        if old and self.kind == "hnsw":
            shown = ", ".join(repr(note_ids[i]) for _, i in old[:5])
            raise ConfigError(f"note_ids: {shown} already indexed; hnsw cannot replace a vector (rebuild)")
        if old:
            self._replace(np.array([r for r, _ in old], np.int64), vectors[[i for _, i in old]])
        if new:
            start = len(self.note_ids)
            fresh = vectors[[i for _, i in new]] if len(new) != len(vectors) else vectors
            if self.kind == "ivfpq":
                self.index.add_with_ids(fresh, np.arange(start, start + len(new), dtype=np.int64))
            else:
                self.index.add(fresh)
            for j, (nid, _) in enumerate(new):
                rows[nid] = start + j
            self.note_ids.extend(nid for nid, _ in new)

    def update(self, row: int, vector: np.ndarray) -> bool:
        """Replace the vector of ``row`` (a re-tagged note) without a rebuild, where the index allows.

        ``exact``: overwritten in place in the flat storage (the same row, so results equal a rebuild's).
        ``ivf``, ``ivfpq``: removed and re-added under the same id, into the cell of its new vector
        (the cells are not retrained). ``hnsw`` cannot remove a vector: returns False and changes
        nothing, and the caller rebuilds.

        Raises:
            ConfigError: ``row`` out of range or ``vector`` of another size.
        """

        vec = np.ascontiguousarray(np.reshape(vector, (1, -1)), dtype=np.float32)
        if not 0 <= row < len(self) or vec.shape[1] != self.index.d:
            raise ConfigError(
                f"update: got row {row} and a vector of size {vec.shape[1]}; expected a row in "
                f"[0, {len(self)}) and size {self.index.d}"
            )
        if self.kind == "hnsw":
            return False
        self._replace(np.array([row], np.int64), vec)
        return True

    def _replace(self, rows: np.ndarray, vecs: np.ndarray) -> None:
        import faiss

        if self.kind == "exact":
            d = self.index.d
            flat = faiss.rev_swig_ptr(self.index.get_xb(), len(self) * d).reshape(-1, d)
            flat[rows] = vecs
        else:  # ivf, ivfpq: one scan of the lists for the whole batch
            self.index.remove_ids(rows)
            self.index.add_with_ids(vecs, rows)

    def _row_map(self) -> dict[str, int]:
        if self._rows is None or len(self._rows) != len(self.note_ids):
            self._rows = {nid: r for r, nid in enumerate(self.note_ids)}
        return self._rows

    def save(self, path: str | Path) -> None:
        """Write the index and its note ids to ``path`` (one ``.npz``; a temp file renamed into place,
        so a reader never sees a half-written index)."""
        import faiss

        path = Path(path)
        arrays: dict[str, Any] = {
            "format": np.array(_FORMAT),
            "kind": np.array(self.kind),
            "note_ids": np.array(self.note_ids, dtype=str),
        }
        if self.kind == "ivfpq":
            arrays.update(self.index.to_arrays())
        else:
            arrays["faiss"] = faiss.serialize_index(self.index)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> NoteIndex:
        """The index :meth:`save` wrote to ``path``.

        Raises:
            ConfigError: ``path`` is not an index file of this format.
        """
        import faiss

        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (OSError, ValueError) as e:
            raise ConfigError(f"path: cannot read {str(path)!r} as an index file: {e}") from e
        if "format" not in arrays or int(arrays["format"]) != _FORMAT:
            raise ConfigError(f"path: {str(path)!r} is not a NoteIndex file of format {_FORMAT}")
        kind = str(arrays["kind"])
        index = (
            IVFPQIndex.from_arrays(arrays) if kind == "ivfpq" else faiss.deserialize_index(arrays["faiss"])
        )
        return cls(index, arrays["note_ids"].tolist(), kind)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        """Top ``k`` notes per query: (scores (Q, k), note ids per query; missing slots dropped)."""
        if k < 1:
            raise ConfigError(f"k: got {k!r}; expected an integer >= 1")
        scores, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        ids = [[self.note_ids[r] for r in row if r >= 0] for row in rows]
        return scores, ids

    def __len__(self) -> int:
        return int(self.index.ntotal)
