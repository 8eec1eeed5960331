"""The recommend pipeline, held in memory: two-tower retrieval over a faiss index, the LightGBM
ranker, reasons (matched tags), and the cold-start path (a new note embedded from its tags and
added to the index at once).

The gRPC server and the A/B simulator both sit on :class:`Recommender`; nothing here touches the
network. Everything a request needs is precomputed or kept live: the notes (:class:`LiveCatalog`:
tags, embeddings, index, impression/click counts) and the users (:class:`UserStates`: histories,
embeddings, tag profiles); :mod:`ranking.recommend.results` cuts the returned lists. A request costs one user-tower forward when the user's history changed
since the last call, one index search, one feature computation over the candidates and one
LightGBM predict.

Example::

    rec = Recommender.from_run("runs/demo")
    for r in rec.recommend("u00042", k=10):
        print(r.note_id, round(r.score, 3), r.reasons)
    rec.add_note("n-new", "outfits", [Tag("cream white", "colour", 0.9), Tag("retro running", "style", 0.8)])
    rec.rank("u00042", ["n-new", "n00017"])

Not thread-safe: call it from one thread (the gRPC server runs it on its event loop).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from features.errors import ConfigError
from features.io import RunDir
from ranking.data import NoteCatalog, RunData
from ranking.recommend.exploration import Exploration, check_click_probabilities, exploration_keys
from ranking.recommend.live_catalog import LiveCatalog
from ranking.recommend.load import file_version, load_ranker, load_retrieval
from ranking.recommend.overlap import ColdOverlap
from ranking.recommend.results import Slate, slates
from ranking.recommend.search import filter_mask, ranker_scores, search
from ranking.recommend.towers import Towers
from ranking.recommend.users import Interest, UserStates
from ranking.recommend.values import AddedNote, Filters, Recommendation
from tagging.types import Tag

if TYPE_CHECKING:
    from ranking.ranker import Ranker
    from ranking.retrieval.index import NoteIndex
    from ranking.retrieval.train import RetrievalModel

__all__ = ["Recommender"]

log = logging.getLogger(__name__)


def _check_count(name: str, value: object, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name}: got {value!r}; expected {expected}")
    return value


def _policy(exploration: Exploration | str | None, cold_slot_every: int) -> Exploration:
    """The policy from the ``exploration`` and ``cold_slot_every`` arguments (the latter: a quota)."""
    policy = Exploration.of(exploration)
    if not cold_slot_every:
        return policy
    if policy.policy == "none" or policy == Exploration("quota", slot_every=cold_slot_every):
        return Exploration("quota", slot_every=cold_slot_every)
    raise ConfigError(
        f"cold_slot_every: got {cold_slot_every!r} with exploration {policy.policy!r}; expected 0 (the "
        "fresh-note quota is its own policy: exploration=Exploration('quota', slot_every=N))"
    )


def _after_last_event(data: RunData) -> float:
    """The default serving clock: one second after the last interaction (0 without any)."""
    inter = data.interactions
    return float(inter.ts.max()) + 1.0 if len(inter) else 0.0


def _per_user_filters(
    user_ids: Sequence[str], k: object, filters: Sequence[Filters | None] | None
) -> list[Filters | None]:
    if not isinstance(k, int) or k < 1:
        raise ConfigError(f"k: got {k!r}; expected an integer >= 1")
    per_user: list[Filters | None] = list(filters) if filters is not None else [None] * len(user_ids)
    if len(per_user) != len(user_ids) and user_ids:
        raise ConfigError(f"filters: got {len(per_user)}; expected one per user ({len(user_ids)})")
    return per_user


class Recommender:
    """In-memory retrieval + ranking for one run (see the module docstring).

    Args:
        model: a trained RetrievalModel (its ``data`` is the catalog and interaction log; the
            recommender copies what it changes and never writes into the model).
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
            :mod:`ranking.retrieval.evaluate` measures this policy offline). Cold notes may take the
            other slots too; a slot falls back to the ranker's order when no cold candidate is left,
            so use it with ``cold_candidates``. The same as ``exploration=Exploration("quota",
            slot_every=N)``.
        explain: False leaves ``reasons`` empty (callers that never show them, e.g. the simulator,
            skip a profile lookup per returned note).
        exploration: how fresh and little-shown notes earn slots in Recommend and Rank lists
            (:class:`~ranking.recommend.exploration.Exploration` or a policy name: ``none``,
            ``quota``, ``ucb``, ``thompson``); ``ucb``/``thompson`` order by the note's Beta posterior
            around the ranker's click probability, narrowing with the impressions :meth:`observe`
            counts, and need a binary-objective ranker. The returned ``score`` stays the ranker's.

    Raises:
        ConfigError: a bad count or policy, ``cold_slot_every`` with a policy other than the quota,
            or ``ucb``/``thompson`` without a binary ranker.
    """

    def __init__(
        self,
        model: RetrievalModel,
        ranker: Ranker | None = None,
        *,
        index_kind: str = "exact",
        now_s: float | None = None,
        history_len: int = 50,
        tower_history: int = 30,
        version: str = "",
        cold_candidates: int = 0,
        cold_slot_every: int = 0,
        explain: bool = True,
        exploration: Exploration | str | None = None,
    ) -> None:
        import torch

        t0 = time.perf_counter()
        torch.set_num_threads(1)
        self.model = model
        self.ranker = ranker
        self.version = version or "in-memory"
        self.history_len = max(history_len, tower_history)
        self.cold_candidates = _check_count("cold_candidates", cold_candidates, "an integer >= 0")
        every = _check_count("cold_slot_every", cold_slot_every, "an integer >= 0 (0 = off)")
        self.exploration = _policy(exploration, every)
        self.explain = explain
        base = model.data
        self.now_s = float(now_s) if now_s is not None else _after_last_event(base)
        # the cold-start overlap columns are not stored (scored sparsely in cold-only searches)
        overlap = ColdOverlap.of(model)
        items = model.item_embeddings()
        self.live = LiveCatalog(
            base, model.encoder.note_map, items if overlap is None else overlap.narrow(items), index_kind
        )
        self.towers = Towers(model, self.live)
        self.users = UserStates(
            base,
            self.now_s,
            history_len=self.history_len,
            tower_history=tower_history,
            encode=self.towers.users,
            out_dim=model.model.config.vector_dim,
            exposure=self.towers.exposure if self.towers.reads_exposure else None,
        )
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "recommender ready: %d notes, %d users, index %s, ranker %s, %.1fs",
            self.num_notes,
            len(self.users),
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
        exploration: Exploration | str | None = None,
    ) -> Recommender:
        """Load the run's retrieval model (RUN/retrieval/model.pt) and ranker (RUN/ranker/model.txt);
        the options are the constructor's."""
        run = RunDir(run_dir).require()
        model = load_retrieval(run.path)
        ranker = load_ranker(run.path) if use_ranker else None
        version = file_version(run.retrieval_model, run.ranker_model)
        return cls(
            model,
            ranker,
            index_kind=index_kind,
            version=version,
            cold_candidates=cold_candidates,
            cold_slot_every=cold_slot_every,
            exploration=exploration,
        )

    # ---- the serving policy --------------------------------------------------------------------

    @property
    def exploration(self) -> Exploration:
        """The exploration policy (settable; setting it restarts ``thompson``'s generator at its seed)."""
        return self._exploration

    @exploration.setter
    def exploration(self, value: Exploration | str | None) -> None:
        policy = Exploration.of(value)
        check_click_probabilities(policy, self.ranker)
        self._exploration = policy
        self._rng = np.random.default_rng(policy.seed)

    @property
    def cold_slot_every(self) -> int:
        """The fresh-note quota's N (0 unless the policy is ``quota``); setting N > 0 makes the policy
        the quota, 0 turns a quota off."""
        return self._exploration.slot_every

    @cold_slot_every.setter
    def cold_slot_every(self, value: int) -> None:
        every = _check_count("cold_slot_every", value, "an integer >= 0 (0 = off)")
        if every:
            self.exploration = Exploration("quota", slot_every=every)
        elif self._exploration.policy == "quota":
            self.exploration = Exploration()

    # ---- lookups -------------------------------------------------------------------------------

    @property
    def catalog(self) -> NoteCatalog:
        return self.live.catalog

    @property
    def data(self) -> RunData:
        """The run with the live catalog (rebuilt, without copies, after a note is added)."""
        return self.live.data

    @property
    def index(self) -> NoteIndex:
        return self.live.index

    @property
    def items(self) -> np.ndarray:
        return self.live.items

    @property
    def num_notes(self) -> int:
        return self.live.num_notes

    def has_user(self, user_id: str) -> bool:
        return self.users.has(user_id)

    def has_note(self, note_id: str) -> bool:
        return self.live.has_note(note_id)

    def user_ids(self) -> list[str]:
        return [str(u) for u in self.users.ids]

    def note_tags(self, note_id: str) -> list[Tag]:
        """A note's tags, in stored order."""
        return self.live.note_tags(int(self.live.rows([note_id])[0]))

    def note_category(self, note_id: str) -> str:
        return self.live.category_name(int(self.live.rows([note_id])[0]))

    def user_interests(self, user_id: str, top_k: int = 20) -> tuple[list[Interest], int]:
        """The user's strongest tag interests as (text, dimension, weight) and the history length."""
        return self.users.interests(self.users.row(user_id), self.live, top_k)

    def observe(self, user_id: str, note_id: str, event: str, ts: float | None = None) -> None:
        """Feed one live event: engagements extend the user's history (their embedding and profile are
        recomputed on the next request); impressions and clicks update the note's counts (the ranker's
        note features, and the impressions that narrow the ``ucb``/``thompson`` posterior); with a
        model whose cold-start overlap term reads what the user was shown (``overlap_exposure``),
        impressions also join the user's last notes shown."""
        u = self.users.row(user_id)
        n = int(self.live.rows([note_id])[0])
        self.live.count(n, event)
        self.users.observe(u, n, event)
        if ts is not None:
            self.now_s = max(self.now_s, float(ts))

    # ---- retrieval + ranking -------------------------------------------------------------------

    def retrieve(self, user_id: str, n: int, filters: Filters | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` (note indices, retrieval scores) for a user under ``filters``, plus up to
        ``cold_candidates`` cold-start notes not among them (the cold-start channel)."""
        if n < 1:
            raise ConfigError(f"candidates: got {n!r}; expected an integer >= 1")
        filters = filters or Filters()
        u = self.users.row(user_id)
        vector = self.users.vector(u, self.now_s)
        overlap = self.towers.overlap
        cold_score = None if overlap is None else (lambda rows: overlap.cold_scores(self.live, rows, vector))
        mask = filter_mask(self.live, filters, self.users.seen[u])
        cold = 0 if filters.cold_start_only else self.cold_candidates
        q = self.towers.query(vector)
        return search(self.live, q, mask, filters, n, cold_candidates=cold, cold_score=cold_score)

    def _slates(
        self, users: list[int], lens: np.ndarray, notes: np.ndarray, rscores: np.ndarray, k: int
    ) -> list[list[Recommendation]]:
        """Rank ``notes`` (``lens[i]`` consecutive candidates for ``users[i]``); each user's top ``k``
        in the exploration policy's order."""
        hist = self.users.examples(users, self.history_len, self.now_s)
        stats = self.live.note_stats
        scores = ranker_scores(
            self.ranker, self.data, hist, lens, notes, rscores, now_s=self.now_s, note_stats=stats
        )
        policy = self._exploration
        keys = exploration_keys(policy, scores, stats[0][notes], self._rng) if policy.bandit else None
        slate = Slate(k, policy.slot_every, self.explain)
        return slates(self.live, self.users, users, lens, notes, rscores, scores, slate, keys)

    def recommend(
        self, user_id: str, k: int = 50, *, candidates: int = 300, filters: Filters | None = None
    ) -> list[Recommendation]:
        """Top ``k`` notes for ``user_id``: retrieve ``candidates`` (at least ``k``), rank, explain.

        Raises:
            NotFoundError: unknown user (or filter category).
            ConfigError: ``k`` < 1.
        """
        return self.recommend_many([user_id], k, candidates=candidates, filters=[filters])[0]

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
        per_user = _per_user_filters(user_ids, k, filters)
        if not user_ids:
            return []
        users = [self.users.row(u) for u in user_ids]
        self.users.refresh(users, self.now_s)
        found = [self.retrieve(uid, max(candidates, k), f) for uid, f in zip(user_ids, per_user, strict=True)]
        lens = np.array([len(n) for n, _ in found], np.int64)
        notes = np.concatenate([n for n, _ in found])
        rscores = np.concatenate([s for _, s in found])
        return self._slates(users, lens, notes, rscores, k)

    def rank(self, user_id: str, note_ids: Sequence[str]) -> list[Recommendation]:
        """Score the caller's candidates for ``user_id``, best first.

        Raises:
            NotFoundError: unknown user or note ids (the message lists them).
        """
        u = self.users.row(user_id)
        notes = self.live.rows(note_ids)
        rscores = (self.items[notes] @ self.towers.query(self.users.vector(u, self.now_s))).astype(np.float32)
        return self._slates([u], np.array([len(notes)], np.int64), notes, rscores, len(notes))[0]

    # ---- cold start ----------------------------------------------------------------------------

    def add_note(
        self,
        note_id: str,
        category: str,
        tags: Sequence[Tag],
        *,
        created_s: float | None = None,
    ) -> AddedNote:
        """Add (or re-tag) a note: embed it from category + tags with the item tower and make it
        searchable at once. Tags the model never saw are kept for lookups but not embedded.

        Cost: amortized O(its tags + one item-tower forward) for a new note (the catalog's buffers
        double when full); a re-tag also shifts the tag arrays after the note, drops the caches of the
        users who engaged with it, and updates the index in place (``exact``, ``ivf``) or rebuilds
        it (``hnsw``, which cannot remove a vector).

        Raises:
            ConfigError: empty ``note_id``; NotFoundError: unknown ``category``.
        """
        if not isinstance(note_id, str) or not note_id:
            raise ConfigError(f"note_id: got {note_id!r}; expected a non-empty string")
        created = self.now_s if created_s is None else float(created_s)
        added = self.live.put(note_id, category, tags, created, self.towers.notes)
        if added.replaced:  # profiles and embeddings of users who engaged with the note change
            self.users.forget_note(int(self.live.rows([note_id])[0]))
        return added

    def add_notes(
        self, notes: Sequence[tuple[str, str, Sequence[Tag]]], *, created_s: float | None = None
    ) -> list[AddedNote]:
        """Add many new notes at once: the same state and results as :meth:`add_note` for each in turn
        (embeddings equal up to float rounding), with one item-tower forward and one index add.

        Args:
            notes: (note_id, category, tags) per note; ids must be new and distinct (re-tag a note
                with :meth:`add_note`).
            created_s: publication time of every note (default: the serving clock).

        Returns:
            One :class:`AddedNote` per note, in order.

        Raises:
            ConfigError: an empty, present or repeated id; NotFoundError: an unknown category. Nothing
            is changed on an error.
        """
        bad = [n for n, _, _ in notes if not isinstance(n, str) or not n]
        if bad:
            raise ConfigError(f"notes: note id {bad[0]!r}; expected non-empty strings")
        created = self.now_s if created_s is None else float(created_s)
        return self.live.put_new(notes, created, self.towers.notes)
