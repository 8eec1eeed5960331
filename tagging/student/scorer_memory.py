"""The scorer student's memory: its training notes as tf-idf vectors, with the teacher's tags.

A note's nearest training notes (cosine similarity of hashed character n-gram tf-idf vectors, the
same vectors the network reads) vote for their teacher tags; every voted tag becomes a candidate with
its vote as evidence. This is how the student proposes *abstractive* tags (tags whose words are not in
the note: "饭制剪辑" for a fan edit, "亲情" for a father-daughter video) from a few thousand examples;
the candidate scorer then decides. A training note never votes for itself.

Saved beside the weights as ``memory.npz`` (the CSR matrix) and ``memory.json`` (note ids, tags).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import sparse

from features.io import atomic_path
from tagging.student.files import ModelFiles

__all__ = ["NeighbourMemory", "Vote", "to_csr"]

# (vote = sum of the similarities of the neighbours that have the tag, share = vote / sum of all
#  neighbours' similarities, max similarity of such a neighbour, number of such neighbours)
Vote = tuple[float, float, float, int]
_CHUNK = 512


def to_csr(ngrams: Sequence[np.ndarray], weights: Sequence[np.ndarray], buckets: int) -> sparse.csr_matrix:
    """Notes' (n-gram ids, tf-idf weights) -> an (n, buckets) CSR matrix (repeated ids summed)."""
    indptr = np.zeros(len(ngrams) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(g) for g in ngrams])
    indices = np.concatenate(ngrams) if len(ngrams) else np.zeros(0, dtype=np.int64)
    data = np.concatenate(weights) if len(weights) else np.zeros(0, dtype=np.float32)
    m = sparse.csr_matrix((data, indices, indptr), shape=(len(ngrams), buckets), dtype=np.float32)
    m.sum_duplicates()
    return m


@dataclass
class NeighbourMemory:
    """k-nearest-neighbour tag votes over the training notes.

    Args:
        matrix: (M, buckets) L2-normalized tf-idf rows of the training notes.
        note_ids: their ids.
        tags: each training note's teacher tags (canonical texts).
        k: neighbours per query.
    """

    matrix: sparse.csr_matrix
    note_ids: list[str]
    tags: list[tuple[str, ...]]
    k: int = 30
    _transposed: sparse.csr_matrix | None = field(default=None, init=False, repr=False, compare=False)

    def transposed(self) -> sparse.csr_matrix:
        """(buckets, M) in CSR, built once: ``queries @ matrix.T`` with a CSC right side made scipy
        convert the whole memory to CSR on every call (27 ms of a 37 ms single-note TagNotes)."""
        if self._transposed is None:
            self._transposed = self.matrix.T.tocsr()
        return self._transposed

    def votes(
        self, queries: sparse.csr_matrix, exclude: Sequence[int] | None = None
    ) -> list[dict[str, Vote]]:
        """Tag votes for each query row; ``exclude[i]`` is a memory row query i may not use (itself), or -1."""
        out: list[dict[str, Vote]] = []
        mt = self.transposed()
        for s in range(0, queries.shape[0], _CHUNK):
            sims = np.asarray((queries[s : s + _CHUNK] @ mt).todense())
            if exclude is not None:
                for i in range(sims.shape[0]):
                    j = exclude[s + i]
                    if j >= 0:
                        sims[i, j] = -1.0
            k = min(self.k, sims.shape[1])
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k else np.zeros((sims.shape[0], 0), int)
            for i in range(sims.shape[0]):
                out.append(self._vote(sims[i], top[i]))
        return out

    def _vote(self, sims: np.ndarray, top: np.ndarray) -> dict[str, Vote]:
        total = float(sum(max(sims[j], 0.0) for j in top)) or 1.0
        acc: dict[str, list[float]] = {}
        for j in top:
            s = float(sims[j])
            if s <= 0:
                continue
            for t in self.tags[j]:
                v = acc.setdefault(t, [0.0, 0.0, 0.0])
                v[0] += s
                v[1] = max(v[1], s)
                v[2] += 1
        return {t: (v[0], v[0] / total, v[1], int(v[2])) for t, v in acc.items()}

    def save(self, folder: str | os.PathLike[str]) -> None:
        folder = Path(folder)
        with atomic_path(ModelFiles(folder).memory) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, indptr=self.matrix.indptr, indices=self.matrix.indices, data=self.matrix.data,
                shape=np.asarray(self.matrix.shape),
            )  # fmt: skip
        with atomic_path(ModelFiles(folder).memory_meta) as tmp:
            tmp.write_text(
                json.dumps({"k": self.k, "note_ids": self.note_ids, "tags": [list(t) for t in self.tags]},
                           ensure_ascii=False),
                encoding="utf-8",
            )  # fmt: skip

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> NeighbourMemory:
        folder = Path(folder)
        with np.load(ModelFiles(folder).memory) as z:
            m = sparse.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        meta = json.loads(ModelFiles(folder).memory_meta.read_text(encoding="utf-8"))
        return cls(m, list(meta["note_ids"]), [tuple(t) for t in meta["tags"]], int(meta["k"]))
