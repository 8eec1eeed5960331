"""A small synchronous Python client of the TagLLM gRPC API; answers are plain dataclasses.

Example::

    with TagLLMClient("127.0.0.1:50051", token="s3cret") as client:
        client.health()                                   # {"": "SERVING", "tagllm.v1.TagFeatures": ...}
        client.note_tags(["n000001"])                     # [NoteTagsResult(...)]
        client.recommend("u00042", k=10, categories=["outfits"])
        client.tag_notes([{"note_id": "n-new", "category": "outfits", "title": "cream white sneakers"}])

Every failed call raises :class:`TagLLMClientError` with the status code name (``code``), the server's
details and the request id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from serving.api.v1 import (
    common_pb2,
    recommendation_pb2,
    recommendation_pb2_grpc,
    tag_features_pb2,
    tag_features_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)

__all__ = [
    "NoteTagsResult",
    "ScoredNoteResult",
    "TagLLMClient",
    "TagLLMClientError",
    "TagNotesResult",
    "UserInterestsResult",
]

SERVICES = ("tagllm.v1.TagFeatures", "tagllm.v1.Recommendation", "tagllm.v1.Tagging")


class TagLLMClientError(Exception):
    """A call failed. Attributes: ``code`` (status code name), ``details``, ``request_id``."""

    def __init__(self, method: str, code: str, details: str, request_id: str = "") -> None:
        self.method, self.code, self.details, self.request_id = method, code, details, request_id
        rid = f" (request_id={request_id})" if request_id else ""
        super().__init__(f"{method}: {code}: {details}{rid}")


@dataclass(frozen=True)
class NoteTagsResult:
    note_id: str
    category: str
    tags: list[dict[str, Any]]  # {text, dimension, confidence}
    tagger: str
    tagger_version: str
    generated_at_ms: int


@dataclass(frozen=True)
class UserInterestsResult:
    user_id: str
    tags: list[dict[str, Any]]  # {text, dimension, weight}, strongest first
    history_length: int


@dataclass(frozen=True)
class ScoredNoteResult:
    note_id: str
    score: float
    retrieval_score: float
    reasons: list[str]
    category: str
    cold_start: bool


@dataclass(frozen=True)
class TagNotesResult:
    notes: list[NoteTagsResult]
    index_size: int
    unchanged_note_ids: tuple[str, ...] = ()  # re-tags that found no tags: the notes kept their tags


def _note_tags(m: common_pb2.NoteTags) -> NoteTagsResult:
    return NoteTagsResult(
        m.note_id,
        m.category,
        [{"text": t.text, "dimension": t.dimension, "confidence": round(t.confidence, 6)} for t in m.tags],
        m.tagger,
        m.tagger_version,
        m.generated_at_ms,
    )


def _scored(m: common_pb2.ScoredNote) -> ScoredNoteResult:
    return ScoredNoteResult(m.note_id, m.score, m.retrieval_score, list(m.reasons), m.category, m.cold_start)


def as_plain(value: Any) -> Any:
    """Dataclasses (and lists of them) -> dicts, for JSON output."""
    if isinstance(value, list):
        return [as_plain(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return value


class TagLLMClient:
    """A channel to one server.

    Args:
        target: ``HOST:PORT``.
        token: bearer token sent as ``authorization: Bearer <token>`` (None: none).
        tls_ca: PEM file (or bytes) of the CA that signed the server's certificate (None: plaintext).
        timeout: default deadline per call, seconds.
        server_name: TLS name override (e.g. ``localhost`` when connecting by IP).
    """

    def __init__(
        self,
        target: str,
        token: str | None = None,
        tls_ca: str | Path | bytes | None = None,
        timeout: float = 5.0,
        *,
        server_name: str | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        if tls_ca is not None:
            ca = tls_ca if isinstance(tls_ca, bytes) else Path(tls_ca).read_bytes()
            options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
            self.channel = grpc.secure_channel(
                target, grpc.ssl_channel_credentials(root_certificates=ca), options
            )
        else:
            self.channel = grpc.insecure_channel(target)
        self._features = tag_features_pb2_grpc.TagFeaturesStub(self.channel)
        self._rec = recommendation_pb2_grpc.RecommendationStub(self.channel)
        self._tagging = tagging_pb2_grpc.TaggingStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> TagLLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, name: str, stub_method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return stub_method(request, timeout=timeout or self.timeout, metadata=self._auth)
        except grpc.RpcError as exc:
            rid = (
                dict(exc.trailing_metadata() or ()).get("x-request-id", "")
                if hasattr(exc, "trailing_metadata")
                else ""
            )
            raise TagLLMClientError(name, exc.code().name, exc.details() or "", str(rid)) from None

    # ---- TagFeatures ---------------------------------------------------------------------------------

    def note_tags(
        self, note_ids: Sequence[str], *, allow_missing: bool = False, timeout: float | None = None
    ) -> list[NoteTagsResult]:
        """Tags of each note in request order (with ``allow_missing``, unknown ids are left out)."""
        req = tag_features_pb2.GetNoteTagsRequest(note_ids=list(note_ids), allow_missing=allow_missing)
        resp = self._call("GetNoteTags", self._features.GetNoteTags, req, timeout)
        return [_note_tags(m) for m in resp.notes]

    def user_interests(
        self,
        user_ids: Sequence[str],
        *,
        top_k: int = 0,
        allow_missing: bool = False,
        timeout: float | None = None,
    ) -> list[UserInterestsResult]:
        """Top tag interests of each user (``top_k`` 0 = server default)."""
        req = tag_features_pb2.GetUserInterestsRequest(
            user_ids=list(user_ids), top_k=top_k, allow_missing=allow_missing
        )
        resp = self._call("GetUserInterests", self._features.GetUserInterests, req, timeout)
        return [
            UserInterestsResult(
                u.user_id,
                [{"text": t.text, "dimension": t.dimension, "weight": round(t.weight, 6)} for t in u.tags],
                u.history_length,
            )
            for u in resp.users
        ]

    # ---- Recommendation ------------------------------------------------------------------------------

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        candidates: int = 0,
        categories: Iterable[str] = (),
        exclude_note_ids: Iterable[str] = (),
        include_seen: bool = False,
        created_after_ms: int = 0,
        cold_start_only: bool = False,
        timeout: float | None = None,
    ) -> list[ScoredNoteResult]:
        filters = recommendation_pb2.Filters(
            categories=list(categories),
            exclude_note_ids=list(exclude_note_ids),
            include_seen=include_seen,
            created_after_ms=created_after_ms,
            cold_start_only=cold_start_only,
        )
        req = recommendation_pb2.RecommendRequest(
            user_id=user_id, k=k, filters=filters, candidates=candidates
        )
        return [_scored(m) for m in self._call("Recommend", self._rec.Recommend, req, timeout).notes]

    def rank(
        self, user_id: str, note_ids: Sequence[str], *, timeout: float | None = None
    ) -> list[ScoredNoteResult]:
        req = recommendation_pb2.RankRequest(user_id=user_id, note_ids=list(note_ids))
        return [_scored(m) for m in self._call("Rank", self._rec.Rank, req, timeout).notes]

    # ---- Tagging -------------------------------------------------------------------------------------

    def tag_notes(
        self, notes: Sequence[Mapping[str, Any]], *, timeout: float | None = None
    ) -> TagNotesResult:
        """Tag and add notes: dicts with note_id, category (required), title, body, image_captions,
        author_id, created_at_ms."""
        req = tagging_pb2.TagNotesRequest(notes=[common_pb2.Note(**dict(n)) for n in notes])
        resp = self._call("TagNotes", self._tagging.TagNotes, req, timeout)
        return TagNotesResult(
            [_note_tags(m) for m in resp.notes], resp.index_size, tuple(resp.unchanged_note_ids)
        )

    # ---- health --------------------------------------------------------------------------------------

    def health(
        self, services: Sequence[str] = ("", *SERVICES), *, timeout: float | None = None
    ) -> dict[str, str]:
        """Serving status by service name (``""`` = the whole server)."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        out = {}
        for name in services:
            resp = self._call(
                "Health.Check", stub.Check, health_pb2.HealthCheckRequest(service=name), timeout
            )
            out[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        return out
