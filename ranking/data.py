"""Training and evaluation data for retrieval and ranking, computed from a run's parquet tables.

Everything here is point-in-time: a user's features for an example at time ``t`` use only the
user's engagements with ``ts < t`` (strictly before), and the time split trains on interactions
before the run's ``cold_start_cutoff`` and evaluates on clicks at or after it.

The Feast path (point-in-time user tag bags from the run's Feast store) is :mod:`ranking.feast_data`.

Index conventions (shared with the model): position ``i`` in :attr:`NoteCatalog.note_ids` is the
note's index; embedding-table ids reserve 0 for "unknown/padding", so tag ids are ``1..V``,
category ids ``1..C``, user ids ``1..U`` and note ids ``1..N_train`` (0 for notes never seen in
training: every cold-start note).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from features.compute import DEFAULT_EVENT_WEIGHTS
from features.errors import ConfigError, NotFoundError
from features.io import RunDir
from features.vocab import TagVocabulary

__all__ = [
    "ENGAGEMENT_WEIGHTS",
    "EXPOSURE_LEN",
    "FEATURE_SOURCES",
    "TAG_SOURCES",
    "Examples",
    "Interactions",
    "NoteCatalog",
    "RunData",
    "UserTagBags",
    "build_training_examples",
    "exposure_bags",
    "last_shown",
    "load_catalog",
    "load_run_data",
    "ragged_gather",
    "resolve_tag_source",
    "tag_mass",
    "user_exposure",
    "user_states",
]

log = logging.getLogger(__name__)

# Impressions carry no interest; stronger actions weigh more: the same weights as the Feast features.
ENGAGEMENT_WEIGHTS: Mapping[str, float] = {e: w for e, w in DEFAULT_EVENT_WEIGHTS.items() if w > 0}

# Impressions whose notes make a user's exposure bag (TwoTowerConfig.overlap_exposure): the last ones.
EXPOSURE_LEN = 100

# "auto" = student tags (tables/tags.parquet) when present, else teacher tags, else reference tags.
TAG_SOURCES = ("auto", "student", "teacher", "ground_truth", "reference", "none")

# Where the user tower's tag bag comes from: recomputed from parquet history, or the run's Feast store.
FEATURE_SOURCES = ("parquet", "feast")


def resolve_tag_source(run: RunDir, tag_source: str) -> str:
    """Return the concrete tag source for ``tag_source`` (``auto`` picks student, else teacher).

    Raises:
        ConfigError: unknown ``tag_source``.
    """
    if tag_source not in TAG_SOURCES:
        raise ConfigError(f"tag_source: got {tag_source!r}; expected one of {', '.join(TAG_SOURCES)}")
    if tag_source == "auto":
        if run.has_table("tags"):
            return "student"
        return "teacher" if run.has_table("teacher_tags") else "reference"
    return tag_source


def _tag_lists(run: RunDir, notes: pd.DataFrame, source: str) -> pd.DataFrame:
    """(note_id, texts, dims, confs) for ``source``; notes without tags get empty lists."""
    if source == "none":
        rows = pd.DataFrame({"note_id": notes["note_id"]})
        rows["texts"] = [[] for _ in range(len(rows))]
        rows["dims"] = rows["texts"]
        rows["confs"] = rows["texts"]
        return rows
    if source in ("student", "teacher"):
        table = "tags" if source == "student" else "teacher_tags"
        if not run.has_table(table):
            raise NotFoundError(
                f"tag_source={source!r}: {run.table_path(table)} does not exist "
                f"({'`tagllm tag apply`' if source == 'student' else '`tagllm tag teach`'} writes it)"
            )
        df = run.read_table(table, check=False)
        df = df.sort_values("generated_at", kind="stable").drop_duplicates("note_id", keep="last")
        texts = [[str(t["text"]) for t in ts] for ts in df["tags"]]
        dims = [[str(t["dimension"]) for t in ts] for ts in df["tags"]]
        confs = [[float(t["confidence"]) for t in ts] for ts in df["tags"]]
        return pd.DataFrame(
            {"note_id": df["note_id"].to_numpy(), "texts": texts, "dims": dims, "confs": confs}
        )
    if source == "ground_truth":
        gt = run.read_ground_truth("note_attributes")
        gt = gt.assign(text=gt["dimension"].astype(str) + ":" + gt["value"].astype(str).str.lower())
        grouped = gt.groupby("note_id", sort=False)
        return pd.DataFrame(
            {
                "note_id": list(grouped.groups),
                "texts": grouped["text"].agg(list).tolist(),
                "dims": grouped["dimension"].agg(list).tolist(),
                "confs": [[1.0] * len(t) for t in grouped["text"].agg(list)],
            }
        )
    # reference: the dataset's own human/creator tags, lower-cased, as one "reference" dimension.
    if "reference_tags" not in notes.columns:
        raise NotFoundError("tag_source='reference': notes has no reference_tags column")
    texts = [
        sorted({str(t).strip().lower() for t in (ts if ts is not None else []) if str(t).strip()})
        for ts in notes["reference_tags"]
    ]
    return pd.DataFrame(
        {
            "note_id": notes["note_id"].to_numpy(),
            "texts": texts,
            "dims": [["reference"] * len(t) for t in texts],
            "confs": [[1.0] * len(t) for t in texts],
        }
    )


@dataclass(frozen=True)
class NoteCatalog:
    """Every note with its category and tags, as flat arrays.

    Attributes:
        note_ids: (N,) note id strings; the position is the note's index.
        category: (N,) category ids in 1..C.
        created_s: (N,) creation time, epoch seconds.
        tag_ptr: (N+1,) CSR offsets into ``tag_vals``/``tag_conf``/``tag_dims``.
        tag_vals: (T,) tag ids in 1..V.
        tag_conf: (T,) tag confidences in [0, 1].
        tag_dims: (T,) dimension ids in 1..Dm (0 = unknown).
        vocab: tag text -> id.
        categories: category names; ``categories[c - 1]`` has id c.
        dimensions: dimension names; ``dimensions[d - 1]`` has id d.
        tag_source: the concrete tag source.
    """

    note_ids: np.ndarray
    category: np.ndarray
    created_s: np.ndarray
    tag_ptr: np.ndarray
    tag_vals: np.ndarray
    tag_conf: np.ndarray
    tag_dims: np.ndarray
    vocab: Mapping[str, int]
    categories: Sequence[str]
    dimensions: Sequence[str]
    tag_source: str
    index: Mapping[str, int] = field(repr=False)

    @property
    def num_notes(self) -> int:
        return len(self.note_ids)

    @property
    def num_tags(self) -> int:
        """Rows of the tag table (ids 0..V)."""
        return len(self.vocab) + 1

    def tags_of(self, i: int) -> np.ndarray:
        return self.tag_vals[self.tag_ptr[i] : self.tag_ptr[i + 1]]


def load_catalog(run: RunDir, tag_source: str = "auto", notes: pd.DataFrame | None = None) -> NoteCatalog:
    """Build the note catalog with tags from ``tag_source`` (see :data:`TAG_SOURCES`)."""
    source = resolve_tag_source(run, tag_source)
    notes = run.read_table("notes") if notes is None else notes
    tags = _tag_lists(run, notes, source)
    merged = notes[["note_id", "category", "created_at"]].merge(tags, on="note_id", how="left")
    for col in ("texts", "dims", "confs"):
        merged[col] = [v if isinstance(v, list) else [] for v in merged[col]]
    vocab = TagVocabulary.sorted_of(t for ts in merged["texts"] for t in ts)
    dimensions = sorted({d for ds in merged["dims"] for d in ds})
    dim_ids = {d: i for i, d in enumerate(dimensions, start=1)}
    categories = sorted(merged["category"].astype(str).unique())
    cat_ids = {c: i for i, c in enumerate(categories, start=1)}
    lens = np.array([len(t) for t in merged["texts"]], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    flat_texts = [t for ts in merged["texts"] for t in ts]
    note_ids = merged["note_id"].astype(str).to_numpy()
    catalog = NoteCatalog(
        note_ids=note_ids,
        category=merged["category"].astype(str).map(cat_ids).to_numpy(np.int64),
        created_s=_epoch_s(merged["created_at"]),
        tag_ptr=ptr,
        tag_vals=np.array([vocab[t] for t in flat_texts], dtype=np.int64),
        tag_conf=np.array([c for cs in merged["confs"] for c in cs], dtype=np.float32),
        tag_dims=np.array([dim_ids[d] for ds in merged["dims"] for d in ds], dtype=np.int64),
        vocab=vocab,
        categories=categories,
        dimensions=dimensions,
        tag_source=source,
        index={n: i for i, n in enumerate(note_ids)},
    )
    log.info(
        "catalog %s: %d notes, %d tags, %d tag texts", source, len(note_ids), len(flat_texts), len(vocab)
    )
    return catalog


@dataclass(frozen=True)
class Interactions:
    """Interactions as index arrays, sorted by (user, ts).

    Attributes:
        user: (M,) user index (position in :attr:`RunData.user_ids`).
        note: (M,) note index (position in the catalog).
        ts: (M,) epoch seconds.
        event: (M,) event names.
        weight: (M,) engagement weight (0 for impressions).
    """

    user: np.ndarray
    note: np.ndarray
    ts: np.ndarray
    event: np.ndarray
    weight: np.ndarray

    def select(self, mask: np.ndarray) -> Interactions:
        return Interactions(
            self.user[mask], self.note[mask], self.ts[mask], self.event[mask], self.weight[mask]
        )

    def __len__(self) -> int:
        return len(self.user)


@dataclass(frozen=True)
class RunData:
    """A run's notes, users and interactions as index arrays, plus its cold-start cutoff."""

    catalog: NoteCatalog
    user_ids: np.ndarray
    interactions: Interactions
    cutoff_s: float
    source: str

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def cold(self) -> np.ndarray:
        """(N,) True for notes created at or after the cutoff (cold-start)."""
        return self.catalog.created_s >= self.cutoff_s

    def with_catalog(self, catalog: NoteCatalog) -> RunData:
        """The same run with another tag source (the catalog must list the same notes in order)."""
        if not np.array_equal(catalog.note_ids, self.catalog.note_ids):
            raise ConfigError("with_catalog: catalog notes differ from the run's notes")
        return RunData(catalog, self.user_ids, self.interactions, self.cutoff_s, self.source)


def _epoch_s(ts: pd.Series) -> np.ndarray:
    return (ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").astype("int64") / 1e9).to_numpy(float)


def load_run_data(run: RunDir, tag_source: str = "auto") -> RunData:
    """Read a prepared run directory into :class:`RunData`.

    Raises:
        NotFoundError: the run is not prepared, or the tag source's table is missing.
        ConfigError: the manifest has no ``cold_start_cutoff``.
    """
    manifest = run.manifest()
    if not manifest.get("cold_start_cutoff"):
        raise ConfigError(f"{run.manifest_path}: no cold_start_cutoff; re-run `tagllm data prepare`")
    cutoff_s = pd.Timestamp(manifest["cold_start_cutoff"]).timestamp()
    notes = run.read_table("notes")
    catalog = load_catalog(run, tag_source, notes=notes)
    users = run.read_table("users")
    inter = run.read_table("interactions")
    user_ids = users["user_id"].astype(str).to_numpy()
    uidx = pd.Series(np.arange(len(user_ids)), index=user_ids)
    nidx = pd.Series(np.arange(catalog.num_notes), index=catalog.note_ids)
    u = uidx.reindex(inter["user_id"].astype(str)).to_numpy()
    n = nidx.reindex(inter["note_id"].astype(str)).to_numpy()
    ts = _epoch_s(inter["ts"])
    order = np.lexsort((ts, u))
    event = inter["event"].astype(str).to_numpy()
    weight = np.array([ENGAGEMENT_WEIGHTS.get(e, 0.0) for e in event], dtype=np.float32)
    interactions = Interactions(
        u[order].astype(np.int64), n[order].astype(np.int64), ts[order], event[order], weight[order]
    )
    return RunData(catalog, user_ids, interactions, cutoff_s, str(manifest.get("source", "")))


def ragged_gather(ptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the CSR entries of ``rows`` (concatenated, in order) and each row's length.

    Args:
        ptr: (R+1,) CSR offsets.
        rows: (K,) row indices.

    Returns:
        positions (sum of lengths,) into the CSR values, and lengths (K,).
    """
    starts = ptr[rows]
    lens = ptr[rows + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), lens
    offs = np.repeat(np.cumsum(lens) - lens, lens)
    return np.repeat(starts, lens) + (np.arange(total) - offs), lens


@dataclass(frozen=True)
class Examples:
    """(user, note, ts) rows with point-in-time user history, ready for batching.

    Attributes:
        user: (B,) user index.
        note: (B,) note index (-1 for user-only rows).
        ts: (B,) epoch seconds of the example; history uses events strictly before it.
        label: (B,) 1.0 for positives (retrieval examples are all positives).
        hist_ptr: (B+1,) CSR offsets into ``hist_note`` / ``hist_weight``.
        hist_note: (H,) note index of each history engagement (most recent last).
        hist_weight: (H,) engagement weight of each history entry.
        user_tags: optional per-row user tag bags (e.g. from Feast); when set, the model's ``u_tags``
            bag is this instead of the tags of the history notes.
        exposure: optional per-row tag bags of the notes each user was last shown
            (:func:`user_exposure`), for the cold-start overlap term's ``overlap_exposure``.
    """

    user: np.ndarray
    note: np.ndarray
    ts: np.ndarray
    label: np.ndarray
    hist_ptr: np.ndarray
    hist_note: np.ndarray
    hist_weight: np.ndarray
    user_tags: UserTagBags | None = None
    exposure: UserTagBags | None = None

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> Examples:
        pos, lens = ragged_gather(self.hist_ptr, rows)
        return Examples(
            self.user[rows],
            self.note[rows],
            self.ts[rows],
            self.label[rows],
            np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            self.hist_note[pos],
            self.hist_weight[pos],
            None if self.user_tags is None else self.user_tags.take(rows),
            None if self.exposure is None else self.exposure.take(rows),
        )

    def with_user_tags(self, bags: UserTagBags | None) -> Examples:
        """The same rows with ``bags`` as the user tag bag (None: back to history tags).

        Raises:
            ConfigError: ``bags`` has another number of rows.
        """
        if bags is not None and len(bags) != len(self):
            raise ConfigError(f"user_tags: got {len(bags)} rows; expected {len(self)} (one per example)")
        return replace(self, user_tags=bags)


@dataclass(frozen=True)
class UserTagBags:
    """One weighted tag bag per example, as CSR, in a catalog's tag ids (1..V).

    Attributes:
        ptr: (B+1,) offsets into ``vals`` / ``weight``.
        vals: (T,) catalog tag ids.
        weight: (T,) weights (the encoder normalizes each bag to sum 1).
    """

    ptr: np.ndarray
    vals: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def take(self, rows: np.ndarray) -> UserTagBags:
        pos, lens = ragged_gather(self.ptr, rows)
        return UserTagBags(
            np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), self.vals[pos], self.weight[pos]
        )

    def dense(self, width: int) -> np.ndarray:
        """(B, width) float32 matrix of the bags, each row normalized to sum 1 (empty rows stay 0)."""
        row = np.repeat(np.arange(len(self)), np.diff(self.ptr))
        out = np.zeros((len(self), width), np.float64)
        np.add.at(out, (row, self.vals), self.weight)
        total = out.sum(axis=1, keepdims=True)
        return (out / np.where(total > 0, total, 1.0)).astype(np.float32)


def tag_mass(catalog: NoteCatalog, notes: np.ndarray) -> np.ndarray:
    """(len(notes),) float32: each note's sum of tag confidences (0 for a note without tags)."""
    pos, lens = ragged_gather(catalog.tag_ptr, np.asarray(notes, np.int64))
    row = np.repeat(np.arange(len(lens)), lens)
    return np.bincount(row, weights=catalog.tag_conf[pos], minlength=len(lens)).astype(np.float32)


def exposure_bags(catalog: NoteCatalog, ptr: np.ndarray, notes: np.ndarray) -> UserTagBags:
    """One tag bag per row of the ragged note lists (``ptr``, ``notes``): each note's tags with its
    confidences normalized to sum 1, so every note shown weighs the same."""
    pos, lens = ragged_gather(catalog.tag_ptr, notes)
    conf = catalog.tag_conf[pos].astype(np.float64)
    note_of = np.repeat(np.arange(len(notes)), lens)
    total = tag_mass(catalog, notes).astype(np.float64)
    per_row = np.bincount(
        np.searchsorted(ptr, np.arange(len(notes)), side="right") - 1, weights=lens, minlength=len(ptr) - 1
    ).astype(np.int64)
    return UserTagBags(
        np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64),
        catalog.tag_vals[pos],
        (conf / np.where(total[note_of] > 0, total[note_of], 1.0)).astype(np.float32),
    )


def _last_before(
    events: Interactions, users: np.ndarray, ts: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr (B+1,), positions into ``events``) of the last ``k`` events of each (user, ts) row
    with ``ts' < ts``, oldest first."""
    # Events are sorted by (user, ts): one int64 key makes "events of u before t" one searchsorted.
    t0 = min(float(events.ts.min()) if len(events) else 0.0, float(np.min(ts)) if len(ts) else 0.0) - 1.0
    t1 = max(float(events.ts.max()) if len(events) else 0.0, float(np.max(ts)) if len(ts) else 0.0) + 1.0
    span = int(np.ceil((t1 - t0) * 1000)) + 2
    key = events.user * span + ((events.ts - t0) * 1000).astype(np.int64)
    q = users.astype(np.int64) * span + ((ts - t0) * 1000).astype(np.int64)
    end = np.searchsorted(key, q, side="left")
    start = np.searchsorted(key, users.astype(np.int64) * span, side="left")
    lo = np.maximum(start, end - k)
    lens = end - lo
    ptr = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    pos = np.repeat(lo, lens) + (np.arange(int(lens.sum())) - np.repeat(ptr[:-1], lens))
    return ptr, pos


def user_exposure(data: RunData, users: np.ndarray, ts: np.ndarray, k: int = EXPOSURE_LEN) -> UserTagBags:
    """The tag bag of the last ``k`` notes each (user, ts) row was shown (impressions with
    ``ts' < ts``; :func:`exposure_bags`). Empty rows for data without impressions.

    Raises:
        ConfigError: ``k`` < 1.
    """
    return exposure_bags(data.catalog, *last_shown(data, users, ts, k))


def last_shown(
    data: RunData, users: np.ndarray, ts: np.ndarray, k: int = EXPOSURE_LEN
) -> tuple[np.ndarray, np.ndarray]:
    """CSR (ptr (B+1,), note indices) of the last ``k`` notes each (user, ts) row was shown
    (impressions with ``ts' < ts``), oldest first.

    Raises:
        ConfigError: ``k`` < 1.
    """
    if k < 1:
        raise ConfigError(f"k: got {k!r}; expected an integer >= 1 (impressions per user)")
    shown = data.interactions.select(data.interactions.event == "impression")
    ptr, pos = _last_before(shown, users, ts, k)
    return ptr, shown.note[pos]


def user_states(
    data: RunData,
    users: np.ndarray,
    ts: np.ndarray,
    *,
    history_len: int = 30,
    label: np.ndarray | None = None,
    note: np.ndarray | None = None,
) -> Examples:
    """Point-in-time history for each (user, ts): the last ``history_len`` engagements with ``ts' < ts``.

    Args:
        data: the run.
        users: (B,) user indices.
        ts: (B,) epoch seconds.
        history_len: engagements kept per row (most recent).
        label: optional (B,) labels; default ones.
        note: optional (B,) note indices; default -1.
    """
    if history_len < 1:
        raise ConfigError(f"history_len: got {history_len!r}; expected an integer >= 1")
    eng = data.interactions.select(data.interactions.weight > 0)
    ptr, pos = _last_before(eng, users, ts, history_len)
    n = len(users)
    return Examples(
        user=users.astype(np.int64),
        note=np.full(n, -1, np.int64) if note is None else note.astype(np.int64),
        ts=ts.astype(float),
        label=np.ones(n, np.float32) if label is None else label.astype(np.float32),
        hist_ptr=ptr,
        hist_note=eng.note[pos],
        hist_weight=eng.weight[pos],
    )


def build_training_examples(
    data: RunData,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    positive_events: Sequence[str] = ("click",),
    history_len: int = 30,
) -> Examples:
    """Retrieval training examples: one per positive event in ``[start_s, end_s)`` (default: before the
    cold-start cutoff), each with the user's history strictly before the event.

    Args:
        data: the run data (:func:`load_run_data` reads it from a run directory, with its tag source).
        start_s: first event time, epoch seconds (None: from the first event).
        end_s: end of the window, exclusive (None: the run's cold-start cutoff).
        positive_events: the events that make an example.
        history_len: engagements kept per example's history.

    Returns:
        the examples (the user tag bag comes from the history; :func:`ranking.feast_data.
        feast_training_examples` takes it from the run's Feast store instead).

    Raises:
        NotFoundError: no positives in the window.
    """
    inter = data.interactions
    end = data.cutoff_s if end_s is None else end_s
    mask = np.isin(inter.event, list(positive_events)) & (inter.ts < end)
    if start_s is not None:
        mask &= inter.ts >= start_s
    if not mask.any():
        raise NotFoundError(
            f"no training positives: no {'/'.join(positive_events)} events before "
            f"{pd.Timestamp(end, unit='s', tz='UTC').isoformat()} (positive_events, end_s)"
        )
    pos = inter.select(mask)
    return user_states(data, pos.user, pos.ts, history_len=history_len, note=pos.note)


def summarize_examples(ex: Examples) -> dict[str, Any]:
    lens = np.diff(ex.hist_ptr)
    return {"examples": len(ex), "mean_history": round(float(lens.mean()), 2) if len(ex) else 0.0}
