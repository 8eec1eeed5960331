"""The gRPC servicers: thin async wrappers over :class:`~serving.core.ServingCore`, and the threads they use.

Each method validates (in the core), calls the pipeline and builds the reply; errors are raised as
:mod:`features.errors` classes and mapped to status codes once, by the server's interceptor
(:mod:`serving.interceptor`, which also bounds the calls in flight per method).

Where the work runs (:class:`Backend`):

- the event loop: gRPC I/O, ``GetNoteTags`` and cached ``GetUserInterests`` (dict reads);
- one **recommender thread**: Recommend, Rank, uncached GetUserInterests and applying journaled notes —
  the Recommender is not thread-safe, and faiss, LightGBM and numpy release the GIL, so the loop keeps
  answering cheap calls while it works (``offload=False`` runs these on the loop, the old behaviour).
  Its queue is ordered by priority (:class:`Lane`): applying journaled notes first (a TagNotes is
  already durable and its caller waits), then user interests (~0.1 ms), then Recommend and Rank; a
  queued call whose caller gave up (cancelled, deadline passed) is dropped without running;
- one **tagger thread**: the student, one batch at a time even when a caller gives up (a cancelled call
  cannot start a second, concurrent tagger run);
- one **journal thread**: the fsync'd append;
- one **push thread**: Feast pushes, after the reply.

A call queued behind others whose deadline passes before it starts is answered DEADLINE_EXCEEDED
without running. The servicers answer UNAVAILABLE ("starting") until :meth:`Backend.ready` is called.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from serving.api.v1 import (
    recommendation_pb2,
    recommendation_pb2_grpc,
    tag_features_pb2,
    tag_features_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from serving.core import FeatureSink, ServingCore, push_records
from serving.errors import DeadlineError, UnavailableError
from serving.journal import Journal, JournalEntry, latest_notes
from serving.metrics import ServerMetrics

__all__ = [
    "Backend",
    "Lane",
    "PushQueue",
    "RecommendationServicer",
    "TagFeaturesServicer",
    "TaggingServicer",
    "check_deadline",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


def check_deadline(context: grpc.aio.ServicerContext, stage: str) -> None:
    """Raise DeadlineError when the caller's deadline has passed (``time_remaining`` is None: no deadline)."""
    left = context.time_remaining()
    if left is not None and left <= 0:
        raise DeadlineError(f"deadline exceeded {stage}")


class PushQueue:
    """Pushes fresh note tags to the Feast online store in one background thread, in order.

    ``sink`` may be a factory (called once, on the push thread: loading Feast takes seconds, so it
    happens after the server is SERVING). Failures are logged and counted
    (``tagllm_feast_pushes_total{outcome="failed"}``), never raised: the journal holds the notes, and a
    restart re-pushes them.
    """

    def __init__(
        self,
        sink: FeatureSink | None,
        metrics: ServerMetrics,
        *,
        factory: Callable[[], FeatureSink] | None = None,
    ) -> None:
        self._loaded = sink
        self._factory = factory
        self.metrics = metrics
        has = sink is not None or factory is not None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feast-push") if has else None
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def sink(self) -> FeatureSink | None:
        """The sink (None while a factory has not run yet, or when there is none)."""
        return self._loaded

    def _get(self) -> FeatureSink | None:
        if self._loaded is None and self._factory is not None:
            self._loaded = self._factory()
        return self._loaded

    def warm(self) -> None:
        """Load the sink now, in the background (so the first push does not wait for Feast)."""
        if self._pool is not None:
            self._pool.submit(self._warm)

    def _warm(self) -> None:
        try:
            warm = getattr(self._get(), "warm", None)
            if callable(warm):
                warm()
        except Exception:
            log.exception("loading the Feast online store failed; fresh notes are served, not pushed")

    def submit(self, records: Sequence[Mapping[str, Any]]) -> None:
        if self._pool is None or not records:
            return
        task = asyncio.get_running_loop().create_task(self._push(list(records)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _push_now(self, records: list[Mapping[str, Any]]) -> int:
        sink = self._get()
        return 0 if sink is None else sink.push_note_tags(records)

    async def _push(self, records: list[Mapping[str, Any]]) -> None:
        pool = self._pool
        if pool is None:
            return
        ids = [r["note_id"] for r in records]
        try:
            await asyncio.get_running_loop().run_in_executor(pool, self._push_now, records)
        except Exception:
            self.metrics.pushes.labels("failed").inc()
            log.exception("feast push of %d note(s) failed (journaled and served): %s", len(ids), ids[:5])
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
        close = getattr(self._loaded, "close", None)
        if callable(close):
            close()


class Lane:
    """One thread running submitted jobs by priority (lower first), first-come within a priority.

    A job whose future was cancelled before it started is skipped (an abandoned call costs nothing).
    """

    def __init__(self, name: str) -> None:
        self._q: queue.PriorityQueue[tuple[int, int, Future[Any] | None, Callable[[], Any] | None]] = (
            queue.PriorityQueue()
        )
        self._seq = itertools.count()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, priority: int, fn: Callable[[], T]) -> Future[T]:
        if self._closed:
            raise UnavailableError("the server is stopping")
        f: Future[T] = Future()
        self._q.put((priority, next(self._seq), f, fn))
        return f

    def _run(self) -> None:
        while True:
            _, _, f, fn = self._q.get()
            if f is None or fn is None:
                break
            if not f.set_running_or_notify_cancel():
                continue
            try:
                f.set_result(fn())
            except BaseException as exc:
                f.set_exception(exc)
        while not self._q.empty():  # stopping: what is still queued will not run
            _, _, f, _ = self._q.get_nowait()
            if f is not None:
                f.cancel()

    def shutdown(self) -> None:
        self._closed = True
        self._q.put((-1, next(self._seq), None, None))


#: :class:`Lane` priorities on the recommender thread.
APPLY, INTERESTS, RECOMMEND = 0, 1, 2


class Backend:
    """The core (once loaded), the journal and the threads every servicer shares (module docstring).

    Args:
        metrics: the server's metrics.
        offload: run recommender work on the recommender thread (False: on the event loop).
        journal_poll_s: how often :meth:`follow` reads what other workers journaled.
    """

    def __init__(self, metrics: ServerMetrics, *, offload: bool = True, journal_poll_s: float = 0.1) -> None:
        self.metrics = metrics
        self.offload = offload
        self.journal_poll_s = journal_poll_s
        self.core: ServingCore | None = None
        self.journal: Journal | None = None
        self.pushes = PushQueue(None, metrics)
        self._rec = Lane("recommender")
        self._tagger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tagger")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="journal")
        self._order = asyncio.Lock()  # journal order = apply order within this process
        self._follower: asyncio.Task[None] | None = None

    def ready(self, core: ServingCore, journal: Journal | None, pushes: PushQueue) -> None:
        """Start answering with ``core`` (its journal already replayed) and follow the journal."""
        self.core, self.journal, self.pushes = core, journal, pushes
        if journal is not None:
            self._follower = asyncio.get_running_loop().create_task(self.follow())

    def get(self) -> ServingCore:
        core = self.core
        if core is None:
            raise UnavailableError("the server is starting (loading models and stores); retry shortly")
        return core

    async def on_recommender(
        self, context: grpc.aio.ServicerContext, priority: int, fn: Callable[..., T], *args: Any
    ) -> T:
        """``fn(*args)`` on the recommender thread at ``priority`` (or inline without offload); a call
        whose deadline passes while it waits is answered DEADLINE_EXCEEDED without running."""
        if not self.offload:
            return fn(*args)
        left = context.time_remaining()
        until = None if left is None else time.monotonic() + left
        return await asyncio.wrap_future(
            self._rec.submit(priority, functools.partial(_before, until, fn, *args))
        )

    async def run_tagger(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._tagger, functools.partial(fn, *args))

    async def _apply(self, core: ServingCore, entries: list[JournalEntry]) -> int:
        if not self.offload:
            return core.apply(entries)
        return await asyncio.wrap_future(self._rec.submit(APPLY, functools.partial(core.apply, entries)))

    async def commit(self, core: ServingCore, entry: JournalEntry) -> int:
        """Journal ``entry`` (fsync), then apply it and anything other workers journaled before it.

        Runs to the end even when the caller is cancelled (``asyncio.shield``): a journaled entry is
        always applied here, so this process never misses its own notes."""
        return await asyncio.shield(asyncio.get_running_loop().create_task(self._commit(core, entry)))

    async def _commit(self, core: ServingCore, entry: JournalEntry) -> int:
        journal = self.journal
        async with self._order:
            if journal is None:
                entries = [entry]
            else:
                entries = await asyncio.get_running_loop().run_in_executor(
                    self._writer, journal.append, entry
                )
            return await self._apply(core, entries)

    async def follow(self) -> None:
        """Apply what other workers journal, every ``journal_poll_s`` (cheap when nothing changed)."""
        while True:
            await asyncio.sleep(self.journal_poll_s)
            core, journal = self.core, self.journal
            if core is None or journal is None:
                continue
            try:
                async with self._order:
                    entries = journal.poll()
                    if entries:
                        await self._apply(core, entries)
                        log.info("applied %d TagNotes call(s) journaled by other workers", len(entries))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("following the journal failed; retrying")

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        self._rec.shutdown()
        for pool in (self._tagger, self._writer):
            pool.shutdown(wait=False, cancel_futures=True)
        if self.journal is not None:
            self.journal.close()


def _before(until: float | None, fn: Callable[..., T], *args: Any) -> T:
    if until is not None and time.monotonic() >= until:
        raise DeadlineError("deadline exceeded while queued behind other calls; nothing was computed")
    return fn(*args)


def replay(core: ServingCore, journal: Journal) -> list[dict[str, Any]]:
    """Apply the whole journal to ``core`` (at start, before serving); returns the Feast push records of
    the journaled notes (their latest versions: pushing them again repairs a push lost to a crash)."""
    t0 = time.perf_counter()
    entries = journal.replay()
    if not entries:
        return []
    core.apply(entries)
    notes = list(latest_notes(entries).values())
    log.info(
        "journal %s: replayed %d TagNotes call(s), %d note(s) in %.2fs",
        journal.path,
        len(entries),
        len(notes),
        time.perf_counter() - t0,
    )
    return push_records(notes)


class TagFeaturesServicer(tag_features_pb2_grpc.TagFeaturesServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def GetNoteTags(
        self, request: tag_features_pb2.GetNoteTagsRequest, context: grpc.aio.ServicerContext
    ) -> tag_features_pb2.GetNoteTagsResponse:
        return self.backend.get().get_note_tags(request)

    async def GetUserInterests(
        self, request: tag_features_pb2.GetUserInterestsRequest, context: grpc.aio.ServicerContext
    ) -> tag_features_pb2.GetUserInterestsResponse:
        core = self.backend.get()
        if core.interests_cached(request.user_ids):
            return core.get_user_interests(request)
        return await self.backend.on_recommender(context, INTERESTS, core.get_user_interests, request)


class RecommendationServicer(recommendation_pb2_grpc.RecommendationServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def Recommend(
        self, request: recommendation_pb2.RecommendRequest, context: grpc.aio.ServicerContext
    ) -> recommendation_pb2.RecommendResponse:
        core = self.backend.get()
        return await self.backend.on_recommender(context, RECOMMEND, core.recommend, request)

    async def Rank(
        self, request: recommendation_pb2.RankRequest, context: grpc.aio.ServicerContext
    ) -> recommendation_pb2.RankResponse:
        core = self.backend.get()
        return await self.backend.on_recommender(context, RECOMMEND, core.rank, request)


class TaggingServicer(tagging_pb2_grpc.TaggingServicer):
    """TagNotes: validate → tag (tagger thread) → deadline check → journal (fsync) → apply → reply →
    push in the background."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def TagNotes(
        self, request: tagging_pb2.TagNotesRequest, context: grpc.aio.ServicerContext
    ) -> tagging_pb2.TagNotesResponse:
        backend = self.backend
        core = backend.get()
        notes = core.tag_inputs(request)
        check_deadline(context, "before tagging")
        results = await backend.run_tagger(core.tag, notes)
        check_deadline(context, "after tagging; nothing was added")
        journal_notes, unchanged = core.journal_notes(request, results)
        size = core.rec.num_notes
        if journal_notes:
            size = await backend.commit(core, JournalEntry.now(journal_notes))
            backend.metrics.notes_tagged.inc(len(journal_notes))
            backend.pushes.submit(push_records(journal_notes))
        return tagging_pb2.TagNotesResponse(
            notes=core.reply(request), index_size=size, unchanged_note_ids=unchanged
        )
