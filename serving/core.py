"""The serving core behind the gRPC servicers: each RPC over the recommender (requests checked by
:mod:`serving.validation` against the :class:`~serving.config.Limits`), the in-process tag store and
the TagNotes steps (tag → journal notes → apply). No grpc here (protobuf messages only); errors are
:mod:`features.errors` classes that know their status code, mapped once by the server's interceptor.

One source of truth for a note's tags: the tag store (``note_tags_by_id``, what GetNoteTags serves) and
the recommender's catalog (what Recommend embeds and Rank's reasons cite) are built from the same rows at
start (the run's tag table, or the Feast online store with ``tags_from="feast"``, where a note whose
online tags differ is re-embedded) and changed together, by :meth:`ServingCore.apply` only.

Threads: ``GetNoteTags`` and cached ``GetUserInterests`` read dicts and run on the event loop;
everything that touches the :class:`~ranking.recommend.Recommender` (not thread-safe) runs on one thread
(the servicers' recommender thread); the tagger runs on its own thread and touches no shared state.

Example::

    core = ServingCore(Recommender.from_run("runs/demo"), tagger=my_tagger)
    core.get_note_tags(tag_features_pb2.GetNoteTagsRequest(note_ids=["n000001"]))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from features.errors import ConfigError, NotFoundError
from ranking.recommend import Recommendation, Recommender
from serving.api.v1 import common_pb2, recommendation_pb2, tag_features_pb2, tagging_pb2
from serving.config import Limits  # re-exported: ServingCore's limits
from serving.errors import DeadlineError, FailedPreconditionError, UnauthenticatedError, UnavailableError
from serving.journal import JournalEntry, JournalNote
from serving.validation import check_filters, check_ids, check_int, check_notes, missing_error
from tagging.types import NoteInput, Tag, TagResult

__all__ = [
    "DeadlineError",
    "FailedPreconditionError",
    "FeatureSink",
    "Limits",
    "ServingCore",
    "UnauthenticatedError",
    "UnavailableError",
    "push_records",
]

log = logging.getLogger(__name__)


class Tagger(Protocol):
    """What TagNotes needs of a tagger (see :class:`tagging.types.Tagger`)."""

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]: ...


class StoredNoteTags(Protocol):
    """A note's tags as the online store keeps them (:class:`features.client.NoteTags`), by position."""

    @property
    def tag_texts(self) -> list[str]: ...

    @property
    def tag_dimensions(self) -> list[str]: ...

    @property
    def tag_confidences(self) -> list[float]: ...

    @property
    def tagger_version(self) -> str: ...


class FeatureSink(Protocol):
    """What the server needs of the Feast online store (:class:`features.client.FeatureClient`)."""

    def note_tags(self, note_ids: Sequence[str]) -> Sequence[StoredNoteTags | None]: ...

    def push_note_tags(self, records: Sequence[Mapping[str, Any]]) -> int: ...


def _tagger_name(version: str, fallback: str) -> str:
    head = version.split("-", 1)[0]
    return head if head else fallback


def _scored(r: Recommendation) -> common_pb2.ScoredNote:
    return common_pb2.ScoredNote(
        note_id=r.note_id,
        score=r.score,
        retrieval_score=r.retrieval_score,
        reasons=list(r.reasons),
        category=r.category,
        cold_start=r.cold_start,
    )


class ServingCore:
    """Validation + the in-process stores over one :class:`Recommender`.

    Args:
        recommender: the loaded model (retrieval, ranker, catalog).
        tagger: tags fresh notes for TagNotes; None: TagNotes answers FAILED_PRECONDITION with
            ``tagger_problem``.
        tagger_problem: why there is no tagger (shown to callers).
        features: the Feast online store fresh tags are pushed to (by the servicers; None: no push).
        tags_from: ``catalog`` (the recommender's catalog) or ``feast`` (read ``features`` now; a note whose
            online tag texts differ from the catalog's is re-embedded with the online tags).
        limits: per-call limits.
    """

    def __init__(
        self,
        recommender: Recommender,
        *,
        tagger: Tagger | None = None,
        tagger_problem: str = "the server has no tagger",
        features: FeatureSink | None = None,
        tags_from: str = "catalog",
        limits: Limits | None = None,
    ) -> None:
        if tags_from not in ("catalog", "feast"):
            raise ConfigError(f"tags_from: got {tags_from!r}; expected catalog or feast")
        if tags_from == "feast" and features is None:
            raise ConfigError("tags_from: 'feast' needs a Feast store; the run has none (use catalog)")
        self.rec = recommender
        self.tagger = tagger
        self.tagger_problem = tagger_problem
        self.features = features
        self.limits = limits or Limits()
        self._interests: dict[str, tuple[list[common_pb2.WeightedTag], int]] = {}
        t0 = time.perf_counter()
        self.note_tags_by_id, self.tags_source = self._load_note_tags(tags_from == "feast")
        log.info(
            "note tags ready: %d notes from %s in %.2fs",
            len(self.note_tags_by_id),
            self.tags_source,
            time.perf_counter() - t0,
        )

    # ---- startup ---------------------------------------------------------------------------------

    def _category(self, i: int) -> str:
        c = self.rec.catalog
        return str(c.categories[int(c.category[i]) - 1])

    def _load_note_tags(self, from_feast: bool) -> tuple[dict[str, common_pb2.NoteTags], str]:
        """note_id -> prebuilt NoteTags from the catalog, or from the Feast online store (``from_feast``):
        then a note whose online tag texts differ from the catalog's is re-embedded with the online tags,
        and notes the store lacks keep the catalog's (both counted in the log line)."""
        c = self.rec.catalog
        ids = [str(n) for n in c.note_ids]
        out: dict[str, common_pb2.NoteTags] = {}
        source = f"catalog ({c.tag_source})"
        if from_feast and self.features is not None:
            changed = 0
            for i, row in enumerate(self.features.note_tags(ids)):
                if row is None:
                    continue
                tags = [
                    Tag(t, d, float(x))
                    for t, d, x in zip(row.tag_texts, row.tag_dimensions, row.tag_confidences, strict=False)
                ]
                if sorted(t.text for t in tags) != sorted(t.text for t in self.rec.note_tags(ids[i])):
                    self.rec.add_note(ids[i], self._category(i), tags)
                    changed += 1
                out[ids[i]] = common_pb2.NoteTags(
                    note_id=ids[i],
                    tags=[
                        common_pb2.Tag(text=t.text, dimension=t.dimension, confidence=t.confidence)
                        for t in tags
                    ],
                    tagger=_tagger_name(row.tagger_version, "feast"),
                    tagger_version=row.tagger_version,
                    category=self._category(i),
                )
            source = (
                f"feast online store ({len(out)}; {changed} differed from the catalog and were re-embedded), "
                f"catalog ({len(ids) - len(out)} missing online)"
            )
        for i, nid in enumerate(ids):
            if nid not in out:
                out[nid] = self._catalog_tags(nid, i)
        return out, source

    def _catalog_tags(self, note_id: str, i: int) -> common_pb2.NoteTags:
        return common_pb2.NoteTags(
            note_id=note_id,
            tags=[
                common_pb2.Tag(text=t.text, dimension=t.dimension, confidence=t.confidence)
                for t in self.rec.note_tags(note_id)
            ],
            tagger=self.rec.catalog.tag_source,
            tagger_version=self.rec.version,
            category=self._category(i),
        )

    # ---- TagFeatures -----------------------------------------------------------------------------

    def get_note_tags(self, req: tag_features_pb2.GetNoteTagsRequest) -> tag_features_pb2.GetNoteTagsResponse:
        ids = check_ids("note_ids", req.note_ids, self.limits)
        table = self.note_tags_by_id
        found = [table.get(n) for n in ids]
        missing = [n for n, m in zip(ids, found, strict=True) if m is None]
        if missing and not req.allow_missing:
            raise missing_error("note_ids", missing)
        return tag_features_pb2.GetNoteTagsResponse(
            notes=[m for m in found if m is not None], missing_note_ids=missing
        )

    def _user_tags(self, user_id: str) -> tuple[list[common_pb2.WeightedTag], int]:
        hit = self._interests.get(user_id)
        if hit is None:
            tags, n = self.rec.user_interests(user_id, self.limits.max_top_k)
            hit = ([common_pb2.WeightedTag(text=t, dimension=d, weight=w) for t, d, w in tags], n)
            self._interests[user_id] = hit
        return hit

    def interests_cached(self, user_ids: Sequence[str]) -> bool:
        """Whether every user's interests are cached (then GetUserInterests is dict reads only)."""
        return all(u in self._interests for u in user_ids)

    def get_user_interests(
        self, req: tag_features_pb2.GetUserInterestsRequest
    ) -> tag_features_pb2.GetUserInterestsResponse:
        ids = check_ids("user_ids", req.user_ids, self.limits)
        top_k = check_int("top_k", req.top_k, 0, self.limits.max_top_k, "0 = default; max_top_k")
        top_k = top_k or self.limits.default_top_k
        missing = [u for u in ids if not self.rec.has_user(u)]
        if missing and not req.allow_missing:
            raise missing_error("user_ids", missing)
        resp = tag_features_pb2.GetUserInterestsResponse(missing_user_ids=missing)
        for u in ids:
            if u in missing:
                continue
            tags, n = self._user_tags(u)
            resp.users.append(tag_features_pb2.UserInterests(user_id=u, tags=tags[:top_k], history_length=n))
        return resp

    # ---- Recommendation --------------------------------------------------------------------------

    def _user(self, user_id: str) -> str:
        if not user_id or len(user_id) > self.limits.max_id_length:
            raise ConfigError(
                f"user_id: got {user_id[:40]!r}; expected a non-empty id of at most "
                f"{self.limits.max_id_length} characters"
            )
        if not self.rec.has_user(user_id):
            raise NotFoundError(f"user_id: unknown user {user_id!r}")
        return user_id

    def recommend(self, req: recommendation_pb2.RecommendRequest) -> recommendation_pb2.RecommendResponse:
        k = check_int("k", req.k, 1, self.limits.max_k, "max_k")
        cands = check_int(
            "candidates", req.candidates, 0, self.limits.max_candidates, "0 = default; max_candidates"
        )
        filters = check_filters(req.filters, self.rec.catalog.categories, self.limits)
        user = self._user(req.user_id)
        recs = self.rec.recommend(
            user, k, candidates=cands or self.limits.default_candidates, filters=filters
        )
        return recommendation_pb2.RecommendResponse(
            notes=[_scored(r) for r in recs], model_version=self.rec.version
        )

    def rank(self, req: recommendation_pb2.RankRequest) -> recommendation_pb2.RankResponse:
        ids = check_ids("note_ids", req.note_ids, self.limits, unique=True)
        user = self._user(req.user_id)
        missing = [n for n in ids if not self.rec.has_note(n)]
        if missing:
            raise missing_error("note_ids", missing, hint=False)
        recs = self.rec.rank(user, ids)
        return recommendation_pb2.RankResponse(
            notes=[_scored(r) for r in recs], model_version=self.rec.version
        )

    # ---- Tagging ---------------------------------------------------------------------------------

    def tag_inputs(self, req: tagging_pb2.TagNotesRequest) -> list[NoteInput]:
        """Validate a TagNotes request into tagger inputs (no state changes).

        Raises:
            FailedPreconditionError: no tagger; ConfigError: a bad note (naming ``notes[i].field``).
        """
        out = check_notes(req.notes, self.limits, self.rec.catalog.categories)
        if self.tagger is None:  # after validation: bad input is reported as such first
            raise FailedPreconditionError(f"TagNotes: {self.tagger_problem}")
        return out

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        """Run the tagger (reads no shared state; the servicer runs it on its one tagger thread).

        Raises:
            UnavailableError: the tagger failed on a note (nothing was changed).
        """
        if self.tagger is None:  # tag_inputs checked it; kept for direct callers
            raise FailedPreconditionError(f"TagNotes: {self.tagger_problem}")
        results = self.tagger.tag(list(notes))
        if len(results) != len(notes):
            raise UnavailableError(f"tagger returned {len(results)} results for {len(notes)} notes")
        for i, r in enumerate(results):
            if r.status != "ok":
                raise UnavailableError(
                    f"notes[{i}] ({notes[i].note_id!r}): tagger failed: {r.error}; nothing was added"
                )
        return results

    def journal_notes(
        self, req: tagging_pb2.TagNotesRequest, results: Sequence[TagResult]
    ) -> tuple[list[JournalNote], list[str]]:
        """The notes to journal, and the ids of re-tags that found no tags (unchanged: not journaled).
        No state changes."""
        tagger = self.tagger
        name = str(getattr(tagger, "name", type(tagger).__name__))
        version = str(getattr(tagger, "version", "")) or name
        now_ms = int(time.time() * 1000)
        notes, unchanged = [], []
        for note, result in zip(req.notes, results, strict=True):
            if not result.tags and note.note_id in self.note_tags_by_id:
                unchanged.append(note.note_id)
                continue
            notes.append(
                JournalNote(
                    note_id=note.note_id,
                    category=note.category,
                    tags=tuple(Tag(t.text, t.dimension, float(t.confidence)) for t in result.tags),
                    created_at_ms=int(note.created_at_ms),
                    tagger=name,
                    tagger_version=version,
                    generated_at_ms=now_ms,
                )
            )
        return notes, unchanged

    def apply(self, entries: Sequence[JournalEntry]) -> int:
        """Apply journaled TagNotes calls in order: each note is added (or re-tagged: tags and embedding
        replaced, creation time kept) in the recommender and the tag store. Returns the index size.

        Call it on the recommender's thread. A note whose category this run does not know (written by a
        server on another run) is skipped with an ERROR log line: validation refuses such notes, so it
        only happens when journals are mixed up.
        """
        size = self.rec.num_notes
        categories = set(self.rec.catalog.categories)
        for entry in entries:
            for n in entry.notes:
                if n.category not in categories:
                    log.error("journal note %r: unknown category %r; skipped", n.note_id, n.category)
                    continue
                created_s = n.created_at_ms / 1000.0 if n.created_at_ms else None
                added = self.rec.add_note(n.note_id, n.category, n.tags, created_s=created_s)
                size = added.index_size
                if added.replaced:
                    self._interests.clear()  # profiles of users who engaged with the note changed
                self.note_tags_by_id[n.note_id] = _note_tags(n)
        return size

    def reply(self, req: tagging_pb2.TagNotesRequest) -> list[common_pb2.NoteTags]:
        """The TagNotes reply's notes, in request order, as now served (after :meth:`apply`)."""
        return [self.note_tags_by_id[n.note_id] for n in req.notes]


def _note_tags(n: JournalNote) -> common_pb2.NoteTags:
    return common_pb2.NoteTags(
        note_id=n.note_id,
        tags=[
            common_pb2.Tag(text=t.text, dimension=t.dimension, confidence=float(t.confidence)) for t in n.tags
        ],
        tagger=n.tagger,
        tagger_version=n.tagger_version,
        generated_at_ms=n.generated_at_ms,
        category=n.category,
    )


def push_records(notes: Sequence[JournalNote]) -> list[dict[str, Any]]:
    """Feast ``note_tags`` push records of journaled notes."""
    return [
        {
            "note_id": n.note_id,
            "tags": [t.as_record() for t in n.tags],
            "tagger_version": n.tagger_version,
            "created_at": datetime.fromtimestamp(n.created_at_ms / 1000.0, UTC) if n.created_at_ms else None,
        }
        for n in notes
    ]
