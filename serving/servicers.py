"""The gRPC servicers: thin async wrappers over :class:`~serving.core.ServingCore`.

Each method validates (in the core), calls the pipeline and builds the reply; errors are raised as
:mod:`features.errors` classes and mapped to status codes once, by the server's interceptor
(:mod:`serving.interceptor`). The Recommender runs on the event-loop thread only; the tagger runs in a
worker thread (one call at a time) and the Feast push in a single background thread after the in-memory
update, so a slow or failing push never delays or fails a call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from serving.api.v1 import (
    recommendation_pb2,
    recommendation_pb2_grpc,
    tag_features_pb2,
    tag_features_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from serving.core import FeatureSink, ServingCore
from serving.errors import DeadlineError
from serving.metrics import ServerMetrics

__all__ = ["PushQueue", "RecommendationServicer", "TagFeaturesServicer", "TaggingServicer", "check_deadline"]

log = logging.getLogger(__name__)


def check_deadline(context: grpc.aio.ServicerContext, stage: str) -> None:
    """Raise DeadlineError when the caller's deadline has passed (``time_remaining`` is None: no deadline)."""
    left = context.time_remaining()
    if left is not None and left <= 0:
        raise DeadlineError(f"deadline exceeded {stage}")


class PushQueue:
    """Pushes fresh note tags to the Feast online store in one background thread, in order.

    Failures are logged and counted (``tagllm_feast_pushes_total{outcome="failed"}``), never raised.
    """

    def __init__(self, sink: FeatureSink | None, metrics: ServerMetrics) -> None:
        self.sink = sink
        self.metrics = metrics
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-push") if sink else None
        self._pending: set[asyncio.Task[None]] = set()

    def submit(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self.sink is None or not records:
            return
        task = asyncio.get_running_loop().create_task(self._push(list(records)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _push(self, records: list[Mapping[str, Any]]) -> None:
        sink, pool = self.sink, self._pool
        if sink is None or pool is None:
            return
        ids = [r["note_id"] for r in records]
        try:
            await asyncio.get_running_loop().run_in_executor(pool, sink.push_note_tags, records)
        except Exception:
            self.metrics.pushes.labels("failed").inc()
            log.exception("feast push of %d note(s) failed (served from memory only): %s", len(ids), ids[:5])
        else:
            self.metrics.pushes.labels("ok").inc()
            log.debug("pushed %d note(s) to the online store", len(ids))

    async def drain(self, timeout: float | None = None) -> None:
        """Wait for the pushes in flight (up to ``timeout`` seconds)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class TagFeaturesServicer(tag_features_pb2_grpc.TagFeaturesServicer):
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def GetNoteTags(
        self, request: tag_features_pb2.GetNoteTagsRequest, context: grpc.aio.ServicerContext
    ) -> tag_features_pb2.GetNoteTagsResponse:
        return self.core.get_note_tags(request)

    async def GetUserInterests(
        self, request: tag_features_pb2.GetUserInterestsRequest, context: grpc.aio.ServicerContext
    ) -> tag_features_pb2.GetUserInterestsResponse:
        return self.core.get_user_interests(request)


class RecommendationServicer(recommendation_pb2_grpc.RecommendationServicer):
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    async def Recommend(
        self, request: recommendation_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommendation_pb2.RecommendResponse:
        return self.core.recommend(request)

    async def Rank(
        self, request: recommendation_pb2.RankRequest, context: grpc.aio.ServicerContext
    ) -> recommendation_pb2.RankResponse:
        return self.core.rank(request)


class TaggingServicer(tagging_pb2_grpc.TaggingServicer):
    """TagNotes: validate → tag (worker thread) → deadline check → add in memory → push in background."""

    def __init__(self, core: ServingCore, pushes: PushQueue, metrics: ServerMetrics) -> None:
        self.core = core
        self.pushes = pushes
        self.metrics = metrics
        self._lock = asyncio.Lock()  # the tagger is not thread-safe: one batch at a time

    async def TagNotes(
        self, request: tagging_pb2.TagNotesRequest, context: grpc.aio.ServicerContext
    ) -> tagging_pb2.TagNotesResponse:
        notes = self.core.tag_inputs(request)
        async with self._lock:
            check_deadline(context, "before tagging")
            results = await asyncio.to_thread(self.core.tag, notes)
        check_deadline(context, "after tagging; nothing was added")
        batch = self.core.add_tagged(request, results)
        self.metrics.notes_tagged.inc(len(batch.notes))
        self.pushes.submit(batch.records)
        return tagging_pb2.TagNotesResponse(notes=batch.notes, index_size=batch.index_size)
