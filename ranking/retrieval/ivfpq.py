"""A compressed ANN index for catalogs of millions of notes: IVF-PQ (faiss) with an optional re-rank.

Layout, for D-dimensional inner-product vectors (D = 97 with the default two-tower recipe):

- **coarse cells**: ``nlist`` k-means centroids (flat, inner product); a query scans ``nprobe`` cells.
- **PQ codes**: each vector's residual to its cell, cut into ``m`` sub-vectors of ``nbits`` bits each
  (``m`` bytes a vector at 8 bits) plus its int64 row id in the inverted list. D = 97 is prime, so the
  vectors are first spread over ``D' = ceil(D / m) * m`` dimensions by a zero-padding remap (inner
  products unchanged) or, with ``opq``, a learned rotation into D' dimensions.
- **re-rank store** (``refine``): one code per row (``sq8``: a byte per dimension; ``flat``: the float32
  vector), indexed by row; a search takes ``refine_factor * k`` PQ candidates and re-scores them with
  the stored codes, so the final order no longer depends on the PQ error.

Rows are the caller's (``add_with_ids``), so :class:`~ranking.retrieval.index.NoteIndex` keeps its
convention "faiss id = row of ``note_ids``"; ``remove_ids`` + ``add_with_ids`` replaces a row's vector
(the cells are not retrained). A removal scans the inverted lists (no direct map: it would cost ~16
bytes a vector), so replacing is meant for re-tags, in batches, not for bulk rewrites.

Example::

    ix = IVFPQIndex.trained(sample, IVFPQConfig(nlist=4096, m=32))   # sample (S, D) float32
    ix.add_with_ids(vecs, np.arange(len(vecs)))
    scores, rows = ix.search(queries, 100)                           # (Q, 100) each, rows -1 if missing
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from features.errors import ConfigError

__all__ = ["REFINE_KINDS", "IVFPQConfig", "IVFPQIndex"]

log = logging.getLogger(__name__)

REFINE_KINDS = ("none", "sq8", "flat")
_MISSING = -float(np.finfo(np.float32).max)  # faiss's score of an empty slot under inner product


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}: got {value!r}; expected an integer >= 1")


@dataclass(frozen=True)
class IVFPQConfig:
    """Parameters of :class:`IVFPQIndex` (defaults: the 10M-note setting of docs/scaling.md).

    Args:
        nlist: coarse cells; 0 = the smallest power of two >= sqrt(N) of the training call's N
            (4096 at 10M notes), capped at ``train_size / 39`` (faiss's minimum points per centroid).
        m: PQ sub-quantizers (bytes per vector at ``nbits`` = 8).
        nbits: bits per sub-quantizer code (8: 256 centroids each).
        nprobe: cells scanned per query.
        refine: re-rank store: ``none``, ``sq8`` (D bytes a vector) or ``flat`` (4 D bytes, exact scores).
        refine_factor: PQ candidates re-ranked per result slot.
        train_size: vectors the cells and codebooks are trained on (a random sample of the input).
        opq: learn a rotation (OPQ) before PQ instead of zero-padding.
        seed: the training sample and k-means seed.

    Raises:
        ConfigError: a count below 1, ``nbits`` outside 1..16 or an unknown ``refine``.
    """

    nlist: int = 0
    m: int = 32
    nbits: int = 8
    nprobe: int = 32
    refine: str = "sq8"
    refine_factor: int = 4
    train_size: int = 262_144
    opq: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.nlist, bool) or not isinstance(self.nlist, int) or self.nlist < 0:
            raise ConfigError(f"nlist: got {self.nlist!r}; expected an integer >= 0 (0 = automatic)")
        for name in ("m", "nprobe", "refine_factor", "train_size"):
            _positive(name, getattr(self, name))
        if isinstance(self.nbits, bool) or not isinstance(self.nbits, int) or not 1 <= self.nbits <= 16:
            raise ConfigError(f"nbits: got {self.nbits!r}; expected an integer in 1..16")
        if self.refine not in REFINE_KINDS:
            raise ConfigError(f"refine: got {self.refine!r}; expected one of {', '.join(REFINE_KINDS)}")

    def cells(self, n_train: int) -> int:
        """The number of cells for ``n_train`` training vectors."""
        if self.nlist:
            return self.nlist
        return max(1, min(2 ** math.ceil(math.log2(max(2, math.sqrt(n_train)))), n_train // 39))


class IVFPQIndex:
    """IVF-PQ over caller-chosen int64 row ids, with an optional re-rank store (module docstring).

    Duck-types the part of a faiss index that :class:`~ranking.retrieval.index.NoteIndex` and the
    recommender use: ``search``, ``add_with_ids``, ``remove_ids``, ``ntotal``, ``d``.
    """

    def __init__(self, base: Any, codec: Any, config: IVFPQConfig, dim: int) -> None:
        self.base = base  # faiss IndexPreTransform(remap or OPQ, IndexIVFPQ)
        self.codec = codec  # trained faiss IndexScalarQuantizer (sq8) or None
        self.config = config
        self.d = dim
        width = 0 if config.refine == "none" else dim
        dtype = np.float32 if config.refine == "flat" else np.uint8
        self._store = np.zeros((0, width), dtype)
        self._hi = 0  # 1 + the largest row ever stored
        import faiss

        ivf: Any = faiss.downcast_index(faiss.extract_index_ivf(base))
        ivf.nprobe = config.nprobe
        self.ivf = ivf  # the IndexIVFPQ inside ``base``

    @classmethod
    def trained(cls, sample: np.ndarray, config: IVFPQConfig | None = None) -> IVFPQIndex:
        """An empty index whose cells, codebooks (and re-rank codec) are trained on ``sample`` (S, D).

        Raises:
            ConfigError: ``sample`` not 2-D, or fewer rows than cells.
        """
        import faiss

        cfg = config or IVFPQConfig()
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if sample.ndim != 2 or len(sample) < 1:
            raise ConfigError(f"sample: got shape {sample.shape}; expected (S, D) with S >= 1")
        if len(sample) > cfg.train_size:
            pick = np.random.default_rng(cfg.seed).choice(len(sample), cfg.train_size, replace=False)
            sample = sample[np.sort(pick)]
        n, d = sample.shape
        nlist = cfg.cells(n)
        if nlist > n:
            raise ConfigError(f"nlist: got {nlist} cells for {n} training vectors; expected at most {n}")
        if n < 2**cfg.nbits:  # a small catalog: fewer PQ centroids than asked, said in the log
            nbits = max(1, int(math.log2(n)))
            log.warning("ivfpq: %d training vectors < 2**nbits = %d; using nbits=%d", n, 2**cfg.nbits, nbits)
            cfg = replace(cfg, nbits=nbits)
        d_pad = math.ceil(d / cfg.m) * cfg.m
        # uniform=True spreads the D inputs over the D' outputs, the padding zeros between them
        remap: Any = faiss.RemapDimensionsTransform(d, d_pad, True)  # type: ignore[arg-type]
        pre = faiss.OPQMatrix(d, cfg.m, d_pad) if cfg.opq else remap
        ivf = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(d_pad), d_pad, nlist, cfg.m, cfg.nbits, faiss.METRIC_INNER_PRODUCT
        )
        ivf.cp.seed = cfg.seed
        base = faiss.IndexPreTransform(pre, ivf)
        base.train(sample)
        codec = None
        if cfg.refine == "sq8":
            codec = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
            codec.train(sample)
        return cls(base, codec, cfg, d)

    # ---- faiss-like surface ---------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return int(self.base.ntotal)

    @property
    def nprobe(self) -> int:
        return int(self.ivf.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        _positive("nprobe", value)
        self.ivf.nprobe = value

    def add_with_ids(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        """Add ``vectors`` (n, D) under ``rows`` (n,) int64 (rows not in the index; see ``remove_ids``)."""
        vectors = self._check(vectors)
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if rows.shape != (len(vectors),) or (len(rows) and rows.min() < 0):
            raise ConfigError(f"rows: got shape {rows.shape}; expected ({len(vectors)},) non-negative ids")
        self.base.add_with_ids(vectors, rows)
        if self.config.refine != "none" and len(rows):
            need = int(rows.max()) + 1
            if need > len(self._store):  # grow by doubling: amortized O(1) a row
                self.reserve(max(need, 2 * len(self._store)))
            self._store[rows] = self._encode(vectors)
            self._hi = max(self._hi, need)

    def reserve(self, rows: int) -> None:
        """Size the re-rank store for ``rows`` rows now (a bulk load avoids the doubling's 2x peak)."""
        if self.config.refine != "none" and rows > len(self._store):
            grown = np.zeros((rows, self.d), self._store.dtype)
            grown[: len(self._store)] = self._store
            self._store = grown

    def remove_ids(self, rows: np.ndarray) -> int:
        """Remove ``rows`` from the inverted lists (a scan of every list); returns how many went."""
        return int(self.base.remove_ids(np.ascontiguousarray(rows, dtype=np.int64)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k) float32, rows (Q, k) int64), best first; empty slots: row -1.

        With a re-rank store the scores are those of the stored codes (``flat``: exact), ties in row
        order; without one they are PQ estimates.
        """
        _positive("k", k)
        queries = self._check(queries)
        if self.config.refine == "none":
            scores, rows = self.base.search(queries, k)
            return scores, rows
        _, cand = self.base.search(queries, k * self.config.refine_factor)
        valid = cand >= 0
        codes = self._store[np.where(valid, cand, 0).ravel()]
        vecs = self._decode(codes).reshape(*cand.shape, self.d)
        scores = np.einsum("qcd,qd->qc", vecs, queries).astype(np.float32)
        scores[~valid] = _MISSING
        order = np.lexsort((np.where(valid, cand, np.iinfo(np.int64).max), -scores), axis=-1)[:, :k]
        top_s = np.take_along_axis(scores, order, axis=1)
        top_r = np.take_along_axis(cand, order, axis=1)
        if top_r.shape[1] < k:  # fewer candidates than k (tiny index): pad like faiss
            pad = k - top_r.shape[1]
            top_s = np.pad(top_s, ((0, 0), (0, pad)), constant_values=_MISSING)
            top_r = np.pad(top_r, ((0, 0), (0, pad)), constant_values=-1)
        return top_s, top_r

    # ---- size and persistence -------------------------------------------------------------------

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held: PQ codes + ids in the lists, centroids, codebooks (+ rotation), re-rank store."""
        ivf = self.ivf
        invlists = ivf.invlists
        entries = sum(invlists.list_size(i) for i in range(ivf.nlist))
        pq = ivf.pq
        return {
            "lists": int(entries * (ivf.code_size + 8)),
            "centroids": int(ivf.nlist * ivf.d * 4),
            "codebooks": int(pq.M * pq.ksub * pq.dsub * 4 + (self.d * ivf.d * 4 if self.config.opq else 0)),
            "refine": int(self._store.nbytes),
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything needed by :meth:`from_arrays`, as numpy arrays (for ``np.savez``)."""
        import json

        import faiss

        out = {
            "ivfpq_base": faiss.serialize_index(self.base),
            "ivfpq_config": np.array(json.dumps({**asdict(self.config), "dim": self.d})),
            "ivfpq_store": self._store[: self._hi],
        }
        if self.codec is not None:
            out["ivfpq_codec"] = faiss.serialize_index(self.codec)
        return out

    @classmethod
    def from_arrays(cls, arrays: Any) -> IVFPQIndex:
        """The index :meth:`to_arrays` wrote (``arrays``: a mapping such as an ``np.load`` result)."""
        import json

        import faiss

        meta = json.loads(str(arrays["ivfpq_config"]))
        dim = int(meta.pop("dim"))
        cfg = IVFPQConfig(**meta)
        codec = faiss.deserialize_index(arrays["ivfpq_codec"]) if "ivfpq_codec" in arrays else None
        out = cls(faiss.deserialize_index(arrays["ivfpq_base"]), codec, cfg, dim)
        out._store = np.array(arrays["ivfpq_store"], dtype=out._store.dtype).reshape(-1, out._store.shape[1])
        out._hi = len(out._store)
        return out

    # ---- helpers --------------------------------------------------------------------------------

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.d:
            raise ConfigError(f"vectors: got shape {vectors.shape}; expected (n, {self.d})")
        return vectors

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        return vectors if self.codec is None else self.codec.sa_encode(vectors)

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        if self.codec is None:
            return codes
        return self.codec.sa_decode(np.ascontiguousarray(codes)) if len(codes) else codes.astype(np.float32)
