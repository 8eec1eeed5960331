"""The recommend pipeline, held in memory: two-tower retrieval over a faiss index, the LightGBM
ranker, reasons (matched tags), and the cold-start path (a new note embedded from its tags and
added to the index at once).

The gRPC server and the A/B simulator both sit on :class:`Recommender`; nothing here touches the
network. Everything a request needs is precomputed or kept live: item embeddings (index), user
histories and embeddings, the users' tag profiles, note impression/click counts. A request costs
one user-tower forward when the user's history changed since the last call, one index search,
one feature computation over the candidates and one LightGBM predict.

Example::

    rec = Recommender.from_run("runs/demo")
    for r in rec.recommend("u00042", k=10):
        print(r.note_id, round(r.score, 3), r.reasons)
    rec.add_note("n-new", "outfits", [("cream white", "colour", 0.9), ("retro running", "style", 0.8)])
    rec.rank("u00042", ["n-new", "n00017"])

Not thread-safe: call it from one thread (the gRPC server runs it on its event loop).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from features.errors import ConfigError, NotFoundError
from features.io import RunDir
from ranking.dataset import ENGAGEMENT_WEIGHTS, Examples, NoteCatalog, RunData, load_run_data, user_states
from ranking.retrieval.evaluate import with_cold_slots

__all__ = [
    "AddedNote",
    "Filters",
    "Recommendation",
    "Recommender",
    "load_ranker",
    "load_retrieval",
]

log = logging.getLogger(__name__)

TagTriple = tuple[str, str, float]  # (text, dimension, confidence)


@dataclass(frozen=True)
class Filters:
    """Which notes a recommendation may return.

    Args:
        categories: keep only these categories (empty = every category).
        exclude_note_ids: never return these.
        include_seen: False (default) drops notes the user already engaged with.
        created_after_s: keep notes published after this epoch second (None = no limit).
        cold_start_only: keep only cold-start notes (published after the training cutoff or added live).
    """

    categories: tuple[str, ...] = ()
    exclude_note_ids: tuple[str, ...] = ()
    include_seen: bool = False
    created_after_s: float | None = None
    cold_start_only: bool = False

    @property
    def restrictive(self) -> bool:
        return bool(self.categories) or self.created_after_s is not None or self.cold_start_only


@dataclass(frozen=True)
class Recommendation:
    """One recommended (or ranked) note."""

    note_id: str
    score: float
    retrieval_score: float
    reasons: tuple[str, ...]
    category: str
    cold_start: bool


@dataclass(frozen=True)
class AddedNote:
    """What :meth:`Recommender.add_note` did: the tags the model knows (used for the embedding) and
    the ones it has never seen (kept for GetNoteTags, not embedded)."""

    note_id: str
    known_tags: tuple[str, ...]
    unknown_tags: tuple[str, ...]
    index_size: int
    replaced: bool


def load_retrieval(run_dir: str | Path, data: RunData | None = None) -> Any:
    """Load RUN/retrieval/model.pt into a :class:`~ranking.retrieval.train.RetrievalModel`.

    Args:
        run_dir: the run.
        data: the run's data with the model's tag source (loaded when None).

    Raises:
        NotFoundError: the run has no trained retrieval model.
    """
    import torch

    from ranking.retrieval.model import FeatureEncoder, TwoTower, TwoTowerConfig
    from ranking.retrieval.train import RetrievalModel, TrainConfig

    run = RunDir(run_dir).require()
    path = run.path / "retrieval" / "model.pt"
    if not path.exists():
        raise NotFoundError(f"{path}: no retrieval model; run `tagllm train retrieval --run {run.path}`")
    state = torch.load(path, map_location="cpu", weights_only=False)
    if data is None:
        data = load_run_data(run, state["tag_source"])
    elif data.catalog.tag_source != state["tag_source"]:
        raise ConfigError(
            f"data: catalog tag source {data.catalog.tag_source!r}; the model was trained on {state['tag_source']!r}"
        )
    mcfg = TwoTowerConfig(**state["model_config"])
    known_train = {f.name for f in TrainConfig.__dataclass_fields__.values()}
    tcfg = TrainConfig(**{k: v for k, v in state["train_config"].items() if k in known_train})
    encoder = FeatureEncoder(data, mcfg.feature_set, np.zeros(0, np.int64), np.zeros(0, np.int64))
    encoder.user_map = np.asarray(state["user_map"], np.int64)
    encoder.note_map = np.asarray(state["note_map"], np.int64)
    if len(encoder.note_map) != data.catalog.num_notes or len(encoder.user_map) != data.num_users:
        raise ConfigError(
            f"{path}: trained on {len(encoder.note_map)} notes / {len(encoder.user_map)} users; the run has "
            f"{data.catalog.num_notes} / {data.num_users} — retrain the model for this run"
        )
    model = TwoTower(mcfg)
    model.load_state_dict(state["state_dict"])
    model.eval()
    source = str(state.get("feature_source", "parquet"))
    if source == "feast":
        log.warning(
            "%s was trained with user tag bags from Feast snapshots (feature_source=feast); serving builds "
            "them from each user's live history (the same profile definition, fresher, not truncated "
            "to the snapshot's top tags)",
            path,
        )
    return RetrievalModel(model, encoder, data, tcfg, feature_source=source)


def load_ranker(run_dir: str | Path) -> Any:
    """Load RUN/ranker/model.txt into a :class:`~ranking.ranker.Ranker` (None when absent)."""
    import lightgbm as lgb

    from ranking.ranker import Ranker, RankerConfig

    path = RunDir(run_dir).path / "ranker" / "model.txt"
    if not path.exists():
        return None
    booster = lgb.Booster(model_file=str(path))
    return Ranker(booster, tuple(booster.feature_name()), RankerConfig())


def _top_exact(
    items: np.ndarray, q: np.ndarray, allowed: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best of ``allowed`` note indices by ``items @ q``, best first (one mat-vec)."""
    if not len(allowed) or n < 1:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    s = items[allowed] @ q
    top = np.argpartition(-s, n - 1)[:n] if len(s) > n else np.arange(len(s))
    top = top[np.argsort(-s[top], kind="stable")]
    return allowed[top].astype(np.int64), s[top].astype(np.float32)


def _file_version(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        if p.exists():
            st = p.stat()
            h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


@dataclass
class _UserState:
    hist_note: list[int] = field(default_factory=list)
    hist_weight: list[float] = field(default_factory=list)
    embedding: np.ndarray | None = None
    profile: dict[int, float] | None = None


class Recommender:
    """In-memory retrieval + ranking for one run (see the module docstring).

    Args:
        model: a trained RetrievalModel (its ``data`` is the catalog and interaction log).
        ranker: a trained Ranker, or None to order by the retrieval score.
        index_kind: ``exact``, ``ivf`` or ``hnsw`` (:class:`~ranking.retrieval.index.NoteIndex`).
        now_s: the serving clock for features (default: one second after the last interaction).
        history_len: engagements kept per user (the user tower reads the last ``tower_history``).
        tower_history: engagements the user tower reads.
        version: a model version string for responses.
        cold_candidates: a cold-start channel — this many extra candidates per request from the
            cold-start notes (published after the training cutoff or added live), scored by the same
            towers, so the ranker sees fresh notes even where warm notes' id embeddings outscore them
            (0 = off; docs/benchmarks.md "Cold-start quota").
        cold_slot_every: a fresh-note quota on the returned list — every N-th slot goes to the
            best-ranked cold-start candidate not yet listed (0 = off; the ``quota`` pool of
            :mod:`ranking.retrieval.evaluate` measures this policy offline). Cold notes may take the other
            slots too; a slot falls back to the ranker's order when no cold candidate is left, so
            use it with ``cold_candidates``.
        explain: False leaves ``reasons`` empty (callers that never show them, e.g. the simulator,
            skip a profile lookup per returned note).
    """

    def __init__(
        self,
        model: Any,
        ranker: Any = None,
        *,
        index_kind: str = "exact",
        now_s: float | None = None,
        history_len: int = 50,
        tower_history: int = 30,
        version: str = "",
        cold_candidates: int = 0,
        cold_slot_every: int = 0,
        explain: bool = True,
    ) -> None:
        import torch

        from ranking.retrieval.index import NoteIndex

        t0 = time.perf_counter()
        torch.set_num_threads(1)
        self.model = model
        self.ranker = ranker
        self.version = version or "in-memory"
        self.history_len = max(history_len, tower_history)
        self.tower_history = tower_history
        if not isinstance(cold_candidates, int) or cold_candidates < 0:
            raise ConfigError(f"cold_candidates: got {cold_candidates!r}; expected an integer >= 0")
        self.cold_candidates = cold_candidates
        if isinstance(cold_slot_every, bool) or not isinstance(cold_slot_every, int) or cold_slot_every < 0:
            raise ConfigError(f"cold_slot_every: got {cold_slot_every!r}; expected an integer >= 0 (0 = off)")
        self.cold_slot_every = cold_slot_every
        self.explain = explain
        self.data: RunData = model.data
        self._tag_dim_cache: np.ndarray | None = None
        # Our own note-id map: add_note grows it in place.
        self._set_catalog(replace(self.data.catalog, index=dict(self.data.catalog.index)))
        data = self.data
        inter = data.interactions
        self.now_s = (
            float(now_s) if now_s is not None else (float(inter.ts.max()) + 1.0 if len(inter) else 0.0)
        )
        self._user_index = {u: i for i, u in enumerate(data.user_ids)}
        c = data.catalog
        self._cat_index = {name: i for i, name in enumerate(c.categories, start=1)}
        self._cold = data.cold.copy()
        # Live note stats (as of now) and per-note tag lists (texts for notes the vocab lacks).
        m_imp = inter.event == "impression"
        m_clk = inter.event == "click"
        self._impressions = np.bincount(inter.note[m_imp], minlength=c.num_notes).astype(np.float64)
        self._clicks = np.bincount(inter.note[m_clk], minlength=c.num_notes).astype(np.float64)
        self._tag_text = np.empty(c.num_tags, dtype=object)
        self._tag_text[0] = ""
        for text, i in c.vocab.items():
            self._tag_text[i] = text
        self._extra_tags: dict[int, list[TagTriple]] = {}
        # Users: histories as of now, embeddings in one batch.
        ex = user_states(
            data, np.arange(data.num_users), np.full(data.num_users, self.now_s), history_len=self.history_len
        )
        self._users = [
            _UserState(
                ex.hist_note[ex.hist_ptr[u] : ex.hist_ptr[u + 1]].tolist(),
                ex.hist_weight[ex.hist_ptr[u] : ex.hist_ptr[u + 1]].astype(float).tolist(),
            )
            for u in range(data.num_users)
        ]
        self._seen: list[set[int]] = [set(s.hist_note) for s in self._users]
        eng = inter.weight > 0
        for u, n in zip(inter.user[eng].tolist(), inter.note[eng].tolist(), strict=True):
            self._seen[u].add(n)
        user_vecs = self._embed_users(np.arange(data.num_users))
        for u, v in enumerate(user_vecs):
            self._users[u].embedding = v
        self.items = model.item_embeddings()
        self.index = NoteIndex.build(self.items, list(c.note_ids), kind=index_kind)
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "recommender ready: %d notes, %d users, index %s, ranker %s, %.1fs",
            c.num_notes,
            data.num_users,
            index_kind,
            "on" if ranker is not None else "off",
            self.load_seconds,
        )

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        index_kind: str = "exact",
        use_ranker: bool = True,
        cold_candidates: int = 0,
        cold_slot_every: int = 0,
    ) -> Recommender:
        """Load the run's retrieval model (RUN/retrieval/model.pt) and ranker (RUN/ranker/model.txt)."""
        run = RunDir(run_dir).require()
        model = load_retrieval(run.path)
        ranker = load_ranker(run.path) if use_ranker else None
        version = _file_version(run.path / "retrieval" / "model.pt", run.path / "ranker" / "model.txt")
        return cls(
            model,
            ranker,
            index_kind=index_kind,
            version=version,
            cold_candidates=cold_candidates,
            cold_slot_every=cold_slot_every,
        )

    # ---- lookups -------------------------------------------------------------------------------

    @property
    def catalog(self) -> NoteCatalog:
        return self.data.catalog

    @property
    def num_notes(self) -> int:
        return self.catalog.num_notes

    def has_user(self, user_id: str) -> bool:
        return user_id in self._user_index

    def has_note(self, note_id: str) -> bool:
        return note_id in self.catalog.index

    def user_ids(self) -> list[str]:
        return [str(u) for u in self.data.user_ids]

    def _user(self, user_id: str) -> int:
        try:
            return self._user_index[user_id]
        except (KeyError, TypeError):
            raise NotFoundError(f"user_id: unknown user {user_id!r}") from None

    def _notes(self, note_ids: Sequence[str]) -> np.ndarray:
        idx = self.catalog.index
        missing = [n for n in note_ids if n not in idx]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            raise NotFoundError(
                f"note_ids: {len(missing)} unknown note id(s): {shown}{' ...' if len(missing) > 5 else ''}"
            )
        return np.fromiter((idx[n] for n in note_ids), dtype=np.int64, count=len(note_ids))

    def note_tags(self, note_id: str) -> list[TagTriple]:
        """(text, dimension, confidence) of a note's tags, in stored order."""
        i = int(self._notes([note_id])[0])
        if i in self._extra_tags:
            return list(self._extra_tags[i])
        c = self.catalog
        lo, hi = int(c.tag_ptr[i]), int(c.tag_ptr[i + 1])
        return [
            (
                str(self._tag_text[c.tag_vals[j]]),
                c.dimensions[c.tag_dims[j] - 1] if c.tag_dims[j] > 0 else "",
                float(c.tag_conf[j]),
            )
            for j in range(lo, hi)
        ]

    def note_category(self, note_id: str) -> str:
        i = int(self._notes([note_id])[0])
        return self.catalog.categories[self.catalog.category[i] - 1]

    def user_interests(self, user_id: str, top_k: int = 20) -> tuple[list[TagTriple], int]:
        """The user's strongest tag interests as (text, dimension, weight) and the history length."""
        u = self._user(user_id)
        prof = self._profile(u)
        c = self.catalog
        dims = self._tag_dims()
        best = sorted(prof.items(), key=lambda kv: (-kv[1], kv[0]))[: max(top_k, 0)]
        out = [
            (str(self._tag_text[t]), c.dimensions[dims[t] - 1] if dims[t] > 0 else "", float(w))
            for t, w in best
        ]
        return out, len(self._users[u].hist_note)

    def _tag_dims(self) -> np.ndarray:
        """(num_tags,) dimension id of each tag id (the last one seen wins; tags rarely change dimension)."""
        if self._tag_dim_cache is None:
            dims = np.zeros(self.catalog.num_tags, np.int64)
            dims[self.catalog.tag_vals] = self.catalog.tag_dims
            self._tag_dim_cache = dims
        return self._tag_dim_cache

    # ---- user state ----------------------------------------------------------------------------

    def _examples(self, users: Sequence[int], history_len: int) -> Examples:
        notes: list[int] = []
        weights: list[float] = []
        lens = []
        for u in users:
            s = self._users[u]
            h = s.hist_note[-history_len:]
            notes.extend(h)
            weights.extend(s.hist_weight[-history_len:])
            lens.append(len(h))
        n = len(users)
        return Examples(
            user=np.asarray(users, np.int64),
            note=np.full(n, -1, np.int64),
            ts=np.full(n, self.now_s),
            label=np.ones(n, np.float32),
            hist_ptr=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
            hist_note=np.asarray(notes, np.int64),
            hist_weight=np.asarray(weights, np.float32),
        )

    def _embed_users(self, users: np.ndarray, batch: int = 4096) -> np.ndarray:
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(users), batch):
                ex = self._examples(users[i : i + batch].tolist(), self.tower_history)
                out.append(self.model.model.user_embedding(self.model.encoder.encode(ex)).numpy())
        return (
            np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.items.shape[1]), np.float32)
        )

    def _user_vec(self, u: int) -> np.ndarray:
        s = self._users[u]
        if s.embedding is None:
            s.embedding = self._embed_users(np.array([u]))[0]
        return s.embedding

    def _profile(self, u: int) -> dict[int, float]:
        """Tag id -> normalized engagement x confidence weight over the user's history."""
        s = self._users[u]
        if s.profile is None:
            c = self.catalog
            prof: dict[int, float] = {}
            for n, w in zip(s.hist_note, s.hist_weight, strict=True):
                lo, hi = int(c.tag_ptr[n]), int(c.tag_ptr[n + 1])
                for t, conf in zip(c.tag_vals[lo:hi].tolist(), c.tag_conf[lo:hi].tolist(), strict=True):
                    prof[t] = prof.get(t, 0.0) + w * conf
            total = sum(prof.values()) or 1.0
            s.profile = {t: v / total for t, v in prof.items()}
        return s.profile

    def observe(self, user_id: str, note_id: str, event: str, ts: float | None = None) -> None:
        """Feed one live event: engagements extend the user's history (their embedding and profile are
        recomputed on the next request); impressions and clicks update the note's counts."""
        u = self._user(user_id)
        n = int(self._notes([note_id])[0])
        if event == "impression":
            self._impressions[n] += 1
        elif event == "click":
            self._clicks[n] += 1
        w = ENGAGEMENT_WEIGHTS.get(event, 0.0)
        if w > 0:
            s = self._users[u]
            s.hist_note.append(n)
            s.hist_weight.append(float(w))
            if len(s.hist_note) > self.history_len:
                del s.hist_note[: -self.history_len], s.hist_weight[: -self.history_len]
            s.embedding = None
            s.profile = None
            self._seen[u].add(n)
        if ts is not None:
            self.now_s = max(self.now_s, float(ts))

    # ---- retrieval + ranking -------------------------------------------------------------------

    def _mask(self, u: int, filters: Filters) -> np.ndarray | None:
        """(N,) bool of allowed notes, or None when everything is allowed."""
        c = self.catalog
        mask: np.ndarray | None = None

        def both(m: np.ndarray) -> np.ndarray:
            return m if mask is None else mask & m

        if filters.categories:
            unknown = [x for x in filters.categories if x not in self._cat_index]
            if unknown:
                raise NotFoundError(
                    f"filters.categories: unknown {unknown}; expected some of {list(c.categories)}"
                )
            mask = both(np.isin(c.category, [self._cat_index[x] for x in filters.categories]))
        if filters.created_after_s is not None:
            mask = both(c.created_s > filters.created_after_s)
        if filters.cold_start_only:
            mask = both(self._cold)
        drop = [c.index[n] for n in filters.exclude_note_ids if n in c.index]
        if not filters.include_seen:
            drop.extend(self._seen[u])
        if drop:
            mask = np.ones(c.num_notes, bool) if mask is None else mask.copy()
            mask[np.asarray(drop, np.int64)] = False
        return mask

    def retrieve(self, user_id: str, n: int, filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` (note indices, retrieval scores) for a user under ``filters``, plus up to
        ``cold_candidates`` cold-start notes not among them (the cold-start channel)."""
        if n < 1:
            raise ConfigError(f"candidates: got {n!r}; expected an integer >= 1")
        filters = filters or Filters()
        u = self._user(user_id)
        q = self._user_vec(u)
        mask = self._mask(u, filters)
        notes, scores = self._search(q, mask, filters, n)
        if self.cold_candidates and not filters.cold_start_only:
            cold = self._cold.copy() if mask is None else mask & self._cold
            cold[notes] = False
            extra, extra_scores = _top_exact(self.items, q, np.flatnonzero(cold), self.cold_candidates)
            notes = np.concatenate([notes, extra])
            scores = np.concatenate([scores, extra_scores])
        return notes, scores

    def _search(
        self, q: np.ndarray, mask: np.ndarray | None, filters: Filters, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        total = self.num_notes
        if mask is not None and filters.restrictive:
            # A selective filter: score the allowed notes exactly (one mat-vec) rather than over-fetch.
            return _top_exact(self.items, q, np.flatnonzero(mask), n)
        excluded = 0 if mask is None else total - int(mask.sum())
        fetch = min(total, n + excluded)
        scores, rows = self.index.index.search(np.ascontiguousarray(q[None, :], dtype=np.float32), fetch)
        rows, scores = rows[0], scores[0]
        keep = rows >= 0
        if mask is not None:
            keep &= mask[np.maximum(rows, 0)]
        return rows[keep][:n].astype(np.int64), scores[keep][:n].astype(np.float32)

    def _score(self, u: int, notes: np.ndarray, retrieval_scores: np.ndarray) -> np.ndarray:
        return self._score_many([u], np.array([len(notes)], np.int64), notes, retrieval_scores)

    def _score_many(
        self, users: list[int], lens: np.ndarray, notes: np.ndarray, retrieval_scores: np.ndarray
    ) -> np.ndarray:
        """Ranker scores of ``notes`` (``lens[i]`` consecutive candidates for ``users[i]``)."""
        if self.ranker is None or not len(notes):
            return retrieval_scores.astype(np.float64)
        from ranking.ranker import feature_columns

        hist = self._examples(users, self.history_len)
        shared = len(users) == 1  # one user: their profile is built once, not per candidate
        rows = np.repeat(np.arange(len(users)), lens)
        ex = hist if shared else hist.take(rows)
        n = len(notes)
        ex = Examples(
            user=np.asarray(users, np.int64)[rows],
            note=notes.astype(np.int64),
            ts=np.full(n, self.now_s),
            label=np.ones(n, np.float32),
            hist_ptr=ex.hist_ptr,
            hist_note=ex.hist_note,
            hist_weight=ex.hist_weight,
        )
        columns = feature_columns(
            self.data,
            ex,
            note_stats=(self._impressions, self._clicks),
            retrieval_scores=retrieval_scores,
            shared_history=shared,
        )
        return self.ranker.predict_columns(columns)

    def _reasons(self, u: int, n: int, limit: int = 3) -> tuple[str, ...]:
        if not self.explain:
            return ()
        prof = self._profile(u)
        c = self.catalog
        tags = c.tag_vals[c.tag_ptr[n] : c.tag_ptr[n + 1]].tolist()
        hits = sorted((t for t in set(tags) if t in prof), key=lambda t: (-prof[t], t))[:limit]
        return tuple(str(self._tag_text[t]) for t in hits)

    def _results(
        self, u: int, notes: np.ndarray, rscores: np.ndarray, scores: np.ndarray, k: int
    ) -> list[Recommendation]:
        order = np.argsort(-scores, kind="stable")
        if self.cold_slot_every and len(order):
            cold_order = order[self._cold[notes[order]]]
            kk = min(k, len(order))
            order = with_cold_slots(order[None, :kk], cold_order[None, :kk], self.cold_slot_every)[0]
        order = order[:k]
        c = self.catalog
        return [
            Recommendation(
                note_id=str(c.note_ids[notes[j]]),
                score=float(scores[j]),
                retrieval_score=float(rscores[j]),
                reasons=self._reasons(u, int(notes[j])),
                category=c.categories[c.category[notes[j]] - 1],
                cold_start=bool(self._cold[notes[j]]),
            )
            for j in order
        ]

    def recommend(
        self, user_id: str, k: int = 50, *, candidates: int = 300, filters: Filters | None = None
    ) -> list[Recommendation]:
        """Top ``k`` notes for ``user_id``: retrieve ``candidates`` (at least ``k``), rank, explain.

        Raises:
            NotFoundError: unknown user (or filter category).
            ConfigError: ``k`` < 1.
        """
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k: got {k!r}; expected an integer >= 1")
        u = self._user(user_id)
        notes, rscores = self.retrieve(user_id, max(candidates, k), filters)
        return self._results(u, notes, rscores, self._score(u, notes, rscores), k)

    def recommend_many(
        self,
        user_ids: Sequence[str],
        k: int,
        *,
        candidates: int = 300,
        filters: Sequence[Filters | None] | None = None,
    ) -> list[list[Recommendation]]:
        """:meth:`recommend` for several distinct users at once: one user-tower forward for the users
        whose history changed and one ranker call for all candidates (the same slates as per-user
        calls on the same state).

        Args:
            user_ids: the users.
            k: notes per user.
            candidates: retrieval candidates per user.
            filters: one per user (None = default filters).

        Raises:
            ConfigError: ``k`` < 1, or ``filters`` of another length. NotFoundError: an unknown user.
        """
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"k: got {k!r}; expected an integer >= 1")
        if not user_ids:
            return []
        per_user = list(filters) if filters is not None else [None] * len(user_ids)
        if len(per_user) != len(user_ids):
            raise ConfigError(f"filters: got {len(per_user)}; expected one per user ({len(user_ids)})")
        users = [self._user(u) for u in user_ids]
        stale = [u for u in users if self._users[u].embedding is None]
        if stale:
            for u, v in zip(stale, self._embed_users(np.asarray(stale, np.int64)), strict=True):
                self._users[u].embedding = v
        found = [self.retrieve(uid, max(candidates, k), f) for uid, f in zip(user_ids, per_user, strict=True)]
        lens = np.array([len(n) for n, _ in found], np.int64)
        notes = np.concatenate([n for n, _ in found])
        rscores = np.concatenate([s for _, s in found])
        scores = self._score_many(users, lens, notes, rscores)
        out, lo = [], 0
        for u, n in zip(users, lens.tolist(), strict=True):
            out.append(self._results(u, notes[lo : lo + n], rscores[lo : lo + n], scores[lo : lo + n], k))
            lo += n
        return out

    def rank(self, user_id: str, note_ids: Sequence[str]) -> list[Recommendation]:
        """Score the caller's candidates for ``user_id``, best first.

        Raises:
            NotFoundError: unknown user or note ids (the message lists them).
        """
        u = self._user(user_id)
        notes = self._notes(note_ids)
        rscores = (self.items[notes] @ self._user_vec(u)).astype(np.float32)
        return self._results(u, notes, rscores, self._score(u, notes, rscores), len(notes))

    # ---- cold start ----------------------------------------------------------------------------

    def add_note(
        self,
        note_id: str,
        category: str,
        tags: Sequence[TagTriple],
        *,
        created_s: float | None = None,
    ) -> AddedNote:
        """Add (or re-tag) a note: embed it from category + tags with the item tower and make it
        searchable at once. Tags the model never saw are kept for lookups but not embedded.

        Raises:
            ConfigError: empty ``note_id``; NotFoundError: unknown ``category``.
        """
        if not isinstance(note_id, str) or not note_id:
            raise ConfigError(f"note_id: got {note_id!r}; expected a non-empty string")
        if category not in self._cat_index:
            raise NotFoundError(
                f"category: unknown {category!r}; expected one of {list(self.catalog.categories)}"
            )
        c = self.catalog
        known = [(c.vocab[t], d, float(conf)) for t, d, conf in tags if t in c.vocab]
        unknown = tuple(t for t, _, _ in tags if t not in c.vocab)
        dim_ids = {d: i for i, d in enumerate(c.dimensions, start=1)}
        created = self.now_s if created_s is None else float(created_s)
        replaced = note_id in c.index
        if replaced:
            i = c.index[note_id]
            self._retag(i, known, dim_ids, self._cat_index[category])
        else:
            i = c.num_notes
            self._append(note_id, self._cat_index[category], created, known, dim_ids)
        self._extra_tags[i] = [(t, d, float(conf)) for t, d, conf in tags]
        vec = self.model.item_embeddings(np.array([i]))
        if replaced:
            self.items[i] = vec[0]
            self.index = type(self.index).build(self.items, list(self.catalog.note_ids), kind=self.index.kind)
        else:
            self.items = np.concatenate([self.items, vec])
            self.index.add(vec, [note_id])
        return AddedNote(
            note_id, tuple(self._tag_text[t] for t, _, _ in known), unknown, len(self.index), replaced
        )

    def _append(
        self,
        note_id: str,
        cat: int,
        created: float,
        known: list[tuple[int, str, float]],
        dim_ids: dict[str, int],
    ) -> None:
        c = self.catalog
        index = c.index  # our own dict (made in __init__): grow it in place rather than copy it per note
        index[note_id] = c.num_notes  # type: ignore[index]
        new = replace(
            c,
            note_ids=np.append(c.note_ids, note_id),
            category=np.append(c.category, cat),
            created_s=np.append(c.created_s, created),
            tag_ptr=np.append(c.tag_ptr, c.tag_ptr[-1] + len(known)),
            tag_vals=np.append(c.tag_vals, [t for t, _, _ in known]).astype(np.int64),
            tag_conf=np.append(c.tag_conf, [x for _, _, x in known]).astype(np.float32),
            tag_dims=np.append(c.tag_dims, [dim_ids.get(d, 0) for _, d, _ in known]).astype(np.int64),
            index=index,
        )
        self._set_catalog(new)
        self._cold = np.append(self._cold, True)
        self._impressions = np.append(self._impressions, 0.0)
        self._clicks = np.append(self._clicks, 0.0)
        self.model.encoder.note_map = np.append(self.model.encoder.note_map, 0)

    def _retag(self, i: int, known: list[tuple[int, str, float]], dim_ids: dict[str, int], cat: int) -> None:
        c = self.catalog
        lo, hi = int(c.tag_ptr[i]), int(c.tag_ptr[i + 1])
        delta = len(known) - (hi - lo)
        ptr = c.tag_ptr.copy()
        ptr[i + 1 :] += delta
        category = c.category.copy()
        category[i] = cat
        new = replace(
            c,
            category=category,
            tag_ptr=ptr,
            tag_vals=np.concatenate([c.tag_vals[:lo], [t for t, _, _ in known], c.tag_vals[hi:]]).astype(
                np.int64
            ),
            tag_conf=np.concatenate([c.tag_conf[:lo], [x for _, _, x in known], c.tag_conf[hi:]]).astype(
                np.float32
            ),
            tag_dims=np.concatenate(
                [c.tag_dims[:lo], [dim_ids.get(d, 0) for _, d, _ in known], c.tag_dims[hi:]]
            ).astype(np.int64),
        )
        self._set_catalog(new)
        for s in self._users:  # profiles of users who engaged with the note change
            if i in s.hist_note:
                s.profile = None
                s.embedding = None

    def _set_catalog(self, catalog: NoteCatalog) -> None:
        self._tag_dim_cache = None
        d = self.data
        self.data = RunData(catalog, d.user_ids, d.interactions, d.cutoff_s, d.source)
        self.model.data = self.data
        self.model.encoder.catalog = catalog
