"""The recommender's live catalog: every note with its category, tags, counts and embedding, the ANN
index over the embeddings, and :meth:`LiveCatalog.put` (add a note or re-tag one).

The catalog owns its arrays: each is a :class:`~ranking.recommend.buffer.GrowableArray`, so adding a
note costs amortized O(its tags + one embedding) rather than a copy of every array; :attr:`catalog`
is a :class:`~ranking.data.NoteCatalog` of views onto them (rebuilt, without copies, after a change).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from features.errors import ConfigError, NotFoundError
from ranking.data import NoteCatalog, RunData
from ranking.recommend.buffer import GrowableArray
from ranking.recommend.values import AddedNote
from ranking.retrieval.index import NoteIndex
from tagging.types import Tag

__all__ = ["LiveCatalog"]

# Known tags of a note as (tag id, dimension name, confidence).
_Known = list[tuple[int, str, float]]


class LiveCatalog:
    """Notes, tags, live counts and embeddings, growable in place.

    Args:
        data: the run (its catalog, cold-start flags and interactions for the note counts).
        note_map: (N,) the retrieval encoder's note-id map (new notes get id 0: unseen).
        items: (N, D) float32 note embeddings, in catalog order.
        index_kind: ``exact``, ``ivf`` or ``hnsw`` (:class:`~ranking.retrieval.index.NoteIndex`).
    """

    def __init__(self, data: RunData, note_map: np.ndarray, items: np.ndarray, index_kind: str) -> None:
        c = data.catalog
        inter = data.interactions
        self._base = c
        self._index = dict(c.index)  # ours: grown in place
        self._note_ids = GrowableArray(c.note_ids, object)
        self._category = GrowableArray(c.category, np.int64)
        self._created = GrowableArray(c.created_s, np.float64)
        self._tag_ptr = GrowableArray(c.tag_ptr, np.int64)
        self._tag_vals = GrowableArray(c.tag_vals, np.int64)
        self._tag_conf = GrowableArray(c.tag_conf, np.float32)
        self._tag_dims = GrowableArray(c.tag_dims, np.int64)
        self._cold = GrowableArray(data.cold, bool)
        m_imp, m_clk = inter.event == "impression", inter.event == "click"
        self._impressions = GrowableArray(np.bincount(inter.note[m_imp], minlength=c.num_notes), np.float64)
        self._clicks = GrowableArray(np.bincount(inter.note[m_clk], minlength=c.num_notes), np.float64)
        self._note_map = GrowableArray(note_map, np.int64)
        self._items = GrowableArray(items, np.float32)
        self.index = NoteIndex.build(items, list(c.note_ids), kind=index_kind)
        self.cat_index = {name: i for i, name in enumerate(c.categories, start=1)}
        self._dim_ids = {d: i for i, d in enumerate(c.dimensions, start=1)}
        self._tag_text = np.empty(c.num_tags, dtype=object)
        self._tag_text[0] = ""
        for text, i in c.vocab.items():
            self._tag_text[i] = text
        self._extra_tags: dict[int, list[Tag]] = {}  # as given to put(), unknown texts included
        self._run = data
        self._catalog: NoteCatalog | None = None
        self._data: RunData | None = None
        self._tag_dim_cache: np.ndarray | None = None

    # ---- views ----------------------------------------------------------------------------------

    @property
    def catalog(self) -> NoteCatalog:
        """The notes as a :class:`NoteCatalog` (views onto the buffers; valid until the next change)."""
        if self._catalog is None:
            self._catalog = replace(
                self._base,
                note_ids=self._note_ids.view(),
                category=self._category.view(),
                created_s=self._created.view(),
                tag_ptr=self._tag_ptr.view(),
                tag_vals=self._tag_vals.view(),
                tag_conf=self._tag_conf.view(),
                tag_dims=self._tag_dims.view(),
                index=self._index,
            )
        return self._catalog

    @property
    def data(self) -> RunData:
        """The run with :attr:`catalog` as its catalog (rebuilt, without copies, after a change)."""
        if self._data is None or self._data.catalog is not self.catalog:
            d = self._run
            self._data = RunData(self.catalog, d.user_ids, d.interactions, d.cutoff_s, d.source)
        return self._data

    @property
    def num_notes(self) -> int:
        return self._note_ids.size

    @property
    def cold(self) -> np.ndarray:
        """(N,) True for cold-start notes (published after the training cutoff, or added live)."""
        return self._cold.view()

    @property
    def items(self) -> np.ndarray:
        """(N, D) float32 note embeddings."""
        return self._items.view()

    @property
    def note_map(self) -> np.ndarray:
        """(N,) the encoder's note ids (0 for notes added live)."""
        return self._note_map.view()

    @property
    def note_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(impressions (N,), clicks (N,)) as of now."""
        return self._impressions.view(), self._clicks.view()

    @property
    def reallocations(self) -> int:
        """How many times a buffer grew (a test's handle on the amortized cost of :meth:`put`)."""
        return sum(b.reallocations for b in self._buffers())

    def _buffers(self) -> tuple[GrowableArray, ...]:
        return (
            *(self._note_ids, self._category, self._created, self._tag_ptr, self._tag_vals),
            *(self._tag_conf, self._tag_dims, self._cold, self._impressions, self._clicks),
            *(self._note_map, self._items),
        )

    # ---- lookups --------------------------------------------------------------------------------

    def rows(self, note_ids: Sequence[str]) -> np.ndarray:
        """Note indices of ``note_ids``.

        Raises:
            NotFoundError: unknown ids (the message lists up to five).
        """
        idx = self._index
        missing = [n for n in note_ids if n not in idx]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            raise NotFoundError(
                f"note_ids: {len(missing)} unknown note id(s): {shown}{' ...' if len(missing) > 5 else ''}"
            )
        return np.fromiter((idx[n] for n in note_ids), dtype=np.int64, count=len(note_ids))

    def has_note(self, note_id: str) -> bool:
        return note_id in self._index

    def tag_text(self, tag: int) -> str:
        return str(self._tag_text[tag])

    def tag_ids(self, i: int) -> list[int]:
        """Tag ids of note ``i``, in stored order."""
        c = self.catalog
        return c.tag_vals[c.tag_ptr[i] : c.tag_ptr[i + 1]].tolist()

    def note_tags(self, i: int) -> list[Tag]:
        """Note ``i``'s tags, in stored order (as given to :meth:`put` for notes added live)."""
        if i in self._extra_tags:
            return list(self._extra_tags[i])
        c = self.catalog
        lo, hi = int(c.tag_ptr[i]), int(c.tag_ptr[i + 1])
        return [
            Tag(
                str(self._tag_text[c.tag_vals[j]]),
                c.dimensions[c.tag_dims[j] - 1] if c.tag_dims[j] > 0 else "",
                float(c.tag_conf[j]),
            )
            for j in range(lo, hi)
        ]

    def category_name(self, i: int) -> str:
        return self._base.categories[self._category.view()[i] - 1]

    def dimension_name(self, dim: int) -> str:
        return self._base.dimensions[dim - 1] if dim > 0 else ""

    def tag_dims(self) -> np.ndarray:
        """(num_tags,) dimension id of each tag id (the last one seen wins; tags rarely change dimension)."""
        if self._tag_dim_cache is None:
            c = self.catalog
            dims = np.zeros(c.num_tags, np.int64)
            dims[c.tag_vals] = c.tag_dims
            self._tag_dim_cache = dims
        return self._tag_dim_cache

    # ---- changes --------------------------------------------------------------------------------

    def count(self, i: int, event: str) -> None:
        """Count an impression or a click of note ``i`` (other events leave the counts alone)."""
        if event == "impression":
            self._impressions.view()[i] += 1
        elif event == "click":
            self._clicks.view()[i] += 1

    def put(
        self,
        note_id: str,
        category: str,
        tags: Sequence[Tag],
        created_s: float,
        embed: Callable[[np.ndarray], np.ndarray],
    ) -> AddedNote:
        """Add ``note_id`` (or re-tag it when present) and index its embedding at once.

        Args:
            note_id: the note.
            category: its category name.
            tags: its tags; texts outside the vocabulary are kept for :meth:`note_tags`, not embedded.
            created_s: publication time (a re-tag keeps the original one).
            embed: note indices (K,) -> (K, D) embeddings, computed from :attr:`catalog` after the change.

        Raises:
            NotFoundError: unknown ``category``.
        """
        if category not in self.cat_index:
            raise NotFoundError(
                f"category: unknown {category!r}; expected one of {list(self._base.categories)}"
            )
        vocab = self._base.vocab
        known = [(vocab[t.text], t.dimension, float(t.confidence)) for t in tags if t.text in vocab]
        unknown = tuple(t.text for t in tags if t.text not in vocab)
        replaced = note_id in self._index
        if replaced:
            i = self._index[note_id]
            self._retag(i, self.cat_index[category], known)
        else:
            i = self.num_notes
            self._append(note_id, self.cat_index[category], created_s, known)
        self._extra_tags[i] = [Tag(t.text, t.dimension, float(t.confidence)) for t in tags]
        vec = embed(np.array([i]))
        if replaced:
            self._items.view()[i] = vec[0]
            if not self.index.update(i, vec[0]):  # hnsw cannot remove a vector: rebuild
                self.index = NoteIndex.build(self.items, list(self.catalog.note_ids), kind=self.index.kind)
        else:
            self._items.extend(vec)
            self.index.add(vec, [note_id])
        texts = tuple(self._tag_text[t] for t, _, _ in known)
        return AddedNote(note_id, texts, unknown, len(self.index), replaced)

    def _changed(self) -> None:
        self._catalog = None
        self._tag_dim_cache = None

    def put_new(
        self,
        notes: Sequence[tuple[str, str, Sequence[Tag]]],
        created_s: float,
        embed: Callable[[np.ndarray], np.ndarray],
    ) -> list[AddedNote]:
        """Add many new notes at once: the same catalog, embeddings and index as :meth:`put` per note
        in order, with one item-tower forward and one index add for the batch.

        Args:
            notes: (note_id, category name, tags) per note; every id new and listed once.
            created_s: publication time of every note.
            embed: as in :meth:`put`.

        Raises:
            ConfigError: an id already in the catalog or repeated in ``notes`` (re-tag with :meth:`put`).
            NotFoundError: an unknown category. Nothing is changed on an error.
        """
        repeated, fresh = [], set()
        for note_id, _, _ in notes:
            if note_id in self._index or note_id in fresh:
                repeated.append(note_id)
            fresh.add(note_id)
        if repeated:
            shown = ", ".join(repr(n) for n in repeated[:5])
            raise ConfigError(
                f"notes: {len(repeated)} id(s) already present or repeated: {shown}; expected new, "
                "distinct ids (re-tag a note with add_note)"
            )
        unknown_cats = sorted({c for _, c, _ in notes if c not in self.cat_index})
        if unknown_cats:
            raise NotFoundError(
                f"category: unknown {unknown_cats[:5]}; expected one of {list(self._base.categories)}"
            )
        if not notes:
            return []
        vocab = self._base.vocab
        known = [
            [(vocab[t.text], t.dimension, float(t.confidence)) for t in tags if t.text in vocab]
            for _, _, tags in notes
        ]
        start = self.num_notes
        self._append_many(
            [n for n, _, _ in notes], [self.cat_index[c] for _, c, _ in notes], created_s, known
        )
        for j, (_, _, tags) in enumerate(notes):
            self._extra_tags[start + j] = [Tag(t.text, t.dimension, float(t.confidence)) for t in tags]
        vecs = embed(np.arange(start, start + len(notes)))
        self._items.extend(vecs)
        size = len(self.index)
        self.index.add(vecs, [n for n, _, _ in notes])
        return [
            AddedNote(
                note_id,
                tuple(self._tag_text[t] for t, _, _ in kn),
                tuple(t.text for t in tags if t.text not in vocab),
                size + j + 1,
                False,
            )
            for j, ((note_id, _, tags), kn) in enumerate(zip(notes, known, strict=True))
        ]

    def _append(self, note_id: str, cat: int, created: float, known: _Known) -> None:
        self._append_many([note_id], [cat], created, [known])

    def _append_many(self, note_ids: list[str], cats: list[int], created: float, known: list[_Known]) -> None:
        k, start = len(note_ids), self.num_notes
        self._index.update((n, start + j) for j, n in enumerate(note_ids))
        self._note_ids.extend(np.array(note_ids, dtype=object))
        self._category.extend(cats)
        self._created.extend(np.full(k, created))
        lens = np.fromiter((len(kn) for kn in known), np.int64, count=k)
        self._tag_ptr.extend(self._tag_ptr.view()[-1] + np.cumsum(lens))
        flat = [t for kn in known for t in kn]
        self._tag_vals.extend(np.fromiter((t for t, _, _ in flat), np.int64, count=len(flat)))
        self._tag_conf.extend(np.fromiter((x for _, _, x in flat), np.float32, count=len(flat)))
        dims = (self._dim_ids.get(d, 0) for _, d, _ in flat)
        self._tag_dims.extend(np.fromiter(dims, np.int64, count=len(flat)))
        self._cold.extend(np.ones(k, bool))
        self._impressions.extend(np.zeros(k))
        self._clicks.extend(np.zeros(k))
        self._note_map.extend(np.zeros(k, np.int64))  # never seen in training: the encoder's "unseen note" id
        self._changed()

    def _retag(self, i: int, cat: int, known: _Known) -> None:
        ptr = self._tag_ptr.view()
        lo, hi = int(ptr[i]), int(ptr[i + 1])
        self._tag_vals.splice(lo, hi, [t for t, _, _ in known])
        self._tag_conf.splice(lo, hi, [x for _, _, x in known])
        delta = self._tag_dims.splice(lo, hi, [self._dim_ids.get(d, 0) for _, d, _ in known])
        ptr[i + 1 :] += delta
        self._category.view()[i] = cat
        self._changed()
