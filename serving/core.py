"""The serving core behind the gRPC servicers: each RPC over the recommender (requests checked by
:mod:`serving.validation` against the :class:`~serving.config.Limits`), the in-process tag store and
the TagNotes flow. No grpc here (protobuf messages only); errors are :mod:`features.errors` classes that
know their status code, mapped once by the server's interceptor.

Hot path: ``GetNoteTags`` is dict lookups of prebuilt ``NoteTags`` messages plus one response build;
``GetUserInterests`` caches each user's strongest tags (as messages) on first use. Everything else
delegates to :class:`~ranking.recommend.Recommender`, which is not thread-safe: call this class from
one thread (the server's event loop). Only the tagger and the Feast push run in worker threads, and
they touch no shared state.

Example::

    core = ServingCore(Recommender.from_run("runs/demo"), tagger=my_tagger)
    core.get_note_tags(tag_features_pb2.GetNoteTagsRequest(note_ids=["n000001"]))
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from features.errors import ConfigError, NotFoundError
from ranking.recommend import Recommendation, Recommender
from serving.api.v1 import common_pb2, recommendation_pb2, tag_features_pb2, tagging_pb2
from serving.config import Limits  # re-exported: ServingCore's limits
from serving.errors import DeadlineError, FailedPreconditionError, UnauthenticatedError, UnavailableError
from serving.validation import check_filters, check_ids, check_int, check_notes, missing_error
from tagging.types import NoteInput, TagResult

__all__ = [
    "DeadlineError",
    "FailedPreconditionError",
    "FeatureSink",
    "Limits",
    "ServingCore",
    "UnauthenticatedError",
    "UnavailableError",
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


@dataclass(frozen=True)
class TaggedBatch:
    """TagNotes after the in-memory update: the reply's notes, the records to push, the index size."""

    notes: list[common_pb2.NoteTags]
    records: list[dict[str, Any]]
    index_size: int


class ServingCore:
    """Validation + the in-process stores over one :class:`Recommender`.

    Args:
        recommender: the loaded model (retrieval, ranker, catalog).
        tagger: tags fresh notes for TagNotes; None: TagNotes answers FAILED_PRECONDITION with
            ``tagger_problem``.
        tagger_problem: why there is no tagger (shown to callers).
        features: the Feast online store to load tags from and push fresh tags to (None: the tags come
            from the recommender's catalog and TagNotes does not push).
        limits: per-call limits.
    """

    def __init__(
        self,
        recommender: Recommender,
        *,
        tagger: Tagger | None = None,
        tagger_problem: str = "the server has no tagger",
        features: FeatureSink | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.rec = recommender
        self.tagger = tagger
        self.tagger_problem = tagger_problem
        self.features = features
        self.limits = limits or Limits()
        self._interests: dict[str, tuple[list[common_pb2.WeightedTag], int]] = {}
        t0 = time.perf_counter()
        self.note_tags_by_id, self.tags_source = self._load_note_tags()
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

    def _load_note_tags(self) -> tuple[dict[str, common_pb2.NoteTags], str]:
        """note_id -> prebuilt NoteTags: from the Feast online store when given, else the catalog.
        Notes the store lacks fall back to the catalog (counted in the log line)."""
        c = self.rec.catalog
        ids = [str(n) for n in c.note_ids]
        out: dict[str, common_pb2.NoteTags] = {}
        source = f"catalog ({c.tag_source})"
        if self.features is not None:
            for i, row in enumerate(self.features.note_tags(ids)):
                if row is None:
                    continue
                out[ids[i]] = common_pb2.NoteTags(
                    note_id=ids[i],
                    tags=[
                        common_pb2.Tag(text=t, dimension=d, confidence=float(x))
                        for t, d, x in zip(
                            row.tag_texts, row.tag_dimensions, row.tag_confidences, strict=False
                        )
                    ],
                    tagger=_tagger_name(row.tagger_version, "feast"),
                    tagger_version=row.tagger_version,
                    category=self._category(i),
                )
            source = f"feast online store ({len(out)}), catalog ({len(ids) - len(out)} missing online)"
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
        ids = check_ids("note_ids", req.note_ids, self.limits)
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
        """Run the tagger (thread-safe: reads no shared state; call it in a worker thread).

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

    def add_tagged(self, req: tagging_pb2.TagNotesRequest, results: Sequence[TagResult]) -> TaggedBatch:
        """Add the tagged notes to the recommender (embedded + indexed) and the tag store."""
        tagger = self.tagger
        name = str(getattr(tagger, "name", type(tagger).__name__))
        version = str(getattr(tagger, "version", ""))
        now_ms = int(time.time() * 1000)
        replies, records = [], []
        size = 0
        for note, result in zip(req.notes, results, strict=True):
            created_s = note.created_at_ms / 1000.0 if note.created_at_ms else None
            added = self.rec.add_note(note.note_id, note.category, result.tags, created_s=created_s)
            size = added.index_size
            if added.replaced:
                self._interests.clear()  # profiles of users who engaged with the note changed
            msg = common_pb2.NoteTags(
                note_id=note.note_id,
                tags=[
                    common_pb2.Tag(text=t.text, dimension=t.dimension, confidence=float(t.confidence))
                    for t in result.tags
                ],
                tagger=name,
                tagger_version=version,
                generated_at_ms=now_ms,
                category=note.category,
            )
            self.note_tags_by_id[note.note_id] = msg
            replies.append(msg)
            created = datetime.fromtimestamp(note.created_at_ms / 1000.0, UTC) if note.created_at_ms else None
            records.append(
                {
                    "note_id": note.note_id,
                    "tags": [t.as_record() for t in result.tags],
                    "tagger_version": version or name,
                    "created_at": created,
                }
            )
        return TaggedBatch(replies, records, size)
