"""Where the work runs: cheap calls are not stuck behind Recommend, a cancelled TagNotes never lets a
second tagger run start beside it (the INTERNAL seen under load), calls whose deadline passes while
queued are answered without running."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from serving.api.v1 import (
    common_pb2,
    recommendation_pb2,
    recommendation_pb2_grpc,
    tag_features_pb2,
    tag_features_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from tagging.types import NoteInput, TagResult
from tests.serving.conftest import TitleTagger, start


class OneAtATimeTagger(TitleTagger):
    """Fails loudly when a second call enters while one runs (a real tokenizer raises 'Already
    borrowed' there; before the tagger thread, a caller's cancellation let exactly that happen)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self._busy = threading.Lock()
        self.overlaps = 0

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        if not self._busy.acquire(blocking=False):
            self.overlaps += 1
            raise RuntimeError("Already borrowed")
        try:
            return super().tag(notes)
        finally:
            self._busy.release()


@pytest.fixture(scope="module")
def slow(serving_run):
    tagger = OneAtATimeTagger(delay_s=1.0)
    served = start(serving_run, tagger=tagger, features=None)
    rec = served.running.core.rec
    original = rec.recommend
    calls = {"n": 0}

    def slow_recommend(*args, **kwargs):  # sleeps like faiss/LightGBM work: the GIL is free meanwhile
        calls["n"] += 1
        time.sleep(2.0)
        return original(*args, **kwargs)

    rec.recommend = slow_recommend
    yield served, tagger, calls
    rec.recommend = original
    served.stop()


def test_note_tags_answer_while_recommend_works(slow):
    served, _, _ = slow
    rec = served.running.core.rec
    user, note = str(rec.user_ids()[0]), str(rec.catalog.note_ids[0])
    with grpc.insecure_channel(served.target) as ch:
        recommend = recommendation_pb2_grpc.RecommendationStub(ch).Recommend
        tags = tag_features_pb2_grpc.TagFeaturesStub(ch).GetNoteTags
        pending = recommend.future(recommendation_pb2.RecommendRequest(user_id=user, k=5), timeout=30)
        time.sleep(0.3)  # the Recommend is running on the recommender thread now
        t0 = time.perf_counter()
        tags(tag_features_pb2.GetNoteTagsRequest(note_ids=[note]), timeout=10)
        waited = time.perf_counter() - t0
        assert not pending.done()
        assert waited < 1.0, f"GetNoteTags waited {waited:.2f}s behind Recommend"
        assert pending.result().notes


def test_queued_calls_past_their_deadline_do_not_run(slow):
    served, _, calls = slow
    user = str(served.running.core.rec.user_ids()[1])
    before = calls["n"]
    with grpc.insecure_channel(served.target) as ch:
        recommend = recommendation_pb2_grpc.RecommendationStub(ch).Recommend
        first = recommend.future(recommendation_pb2.RecommendRequest(user_id=user, k=5), timeout=30)
        time.sleep(0.3)
        late = [
            recommend.future(recommendation_pb2.RecommendRequest(user_id=user, k=5), timeout=0.5)
            for _ in range(3)
        ]
        for f in late:
            with pytest.raises(grpc.RpcError) as err:
                f.result()
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        first.result()
        time.sleep(0.5)  # the queued jobs have reached the thread and been dropped by now
    assert calls["n"] - before == 1, "a call whose deadline had passed was computed"


def test_cancelled_tag_notes_never_overlaps_the_next(slow):
    served, tagger, _ = slow
    category = served.running.core.rec.catalog.categories[0]
    with grpc.insecure_channel(served.target) as ch:
        tag = tagging_pb2_grpc.TaggingStub(ch).TagNotes

        def req(nid: str) -> tagging_pb2.TagNotesRequest:
            return tagging_pb2.TagNotesRequest(
                notes=[common_pb2.Note(note_id=nid, category=category, title="a:b")]
            )

        with pytest.raises(grpc.RpcError) as err:
            tag(req("n-gives-up"), timeout=0.3)  # gives up while the tagger works
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda n: tag(req(n), timeout=30), ["n-next-1", "n-next-2"]))
    assert [a.notes[0].note_id for a in answers] == ["n-next-1", "n-next-2"]
    assert tagger.overlaps == 0
    # the abandoned call was tagged but never journaled: its deadline had passed ("nothing was added")
    assert "n-gives-up" not in served.running.core.note_tags_by_id


def test_health_is_not_serving_while_the_run_loads(serving_run, monkeypatch):
    """The port answers from the start: health NOT_SERVING and calls UNAVAILABLE ("starting") while the
    run loads, SERVING once it is loaded."""
    import socket

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from ranking.recommend import Recommender
    from serving.server import start_server
    from tests.serving.conftest import LoopThread

    original = Recommender.from_run.__func__

    def slow_from_run(cls, *args, **kwargs):
        time.sleep(3.0)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Recommender, "from_run", classmethod(slow_from_run))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loop = LoopThread()
    import asyncio

    future = asyncio.run_coroutine_threadsafe(
        start_server(serving_run, port=port, tagger=None, features=None, journal=serving_run / "j-health"),
        loop.loop,
    )
    seen: list[str] = []
    refused = 0
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            check = health_pb2_grpc.HealthStub(ch).Check
            tags = tag_features_pb2_grpc.TagFeaturesStub(ch).GetNoteTags
            deadline = time.monotonic() + 120
            while not future.done() and time.monotonic() < deadline:
                try:
                    status = check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.05)  # not bound yet
                    continue
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
                seen.append(name)
                if name == "NOT_SERVING":
                    try:
                        tags(tag_features_pb2.GetNoteTagsRequest(note_ids=["n000000"]), timeout=5)
                    except grpc.RpcError as err:
                        assert err.code() == grpc.StatusCode.UNAVAILABLE and "starting" in err.details()
                        refused += 1
                    else:  # the load finished between the two calls: only then may a call succeed
                        now = check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                        assert health_pb2.HealthCheckResponse.ServingStatus.Name(now) == "SERVING"
                time.sleep(0.1)
            running = future.result(timeout=120)
            final = check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            assert health_pb2.HealthCheckResponse.ServingStatus.Name(final) == "SERVING"
        assert "NOT_SERVING" in seen, seen
        assert refused >= 1, seen  # calls while loading were refused as "starting"
        loop.run(running.stop(0.5))
    finally:
        loop.close()
