"""Bad input gets a deliberate status code with details naming the field — never UNKNOWN or INTERNAL —
and the server keeps answering valid requests afterwards."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.api.v1 import (
    common_pb2,
    recommendation_pb2,
    recommendation_pb2_grpc,
    tag_features_pb2,
    tag_features_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)

ALLOWED = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
MAX_IDS, MAX_K = 100, 50  # the `server` fixture's limits
INT32 = st.integers(-(2**31), 2**31 - 1)


class Stubs:
    def __init__(self, channel: grpc.Channel) -> None:
        self.features = tag_features_pb2_grpc.TagFeaturesStub(channel)
        self.rec = recommendation_pb2_grpc.RecommendationStub(channel)
        self.tagging = tagging_pb2_grpc.TaggingStub(channel)

    def rpc(self, name: str):
        return {
            "GetNoteTags": self.features.GetNoteTags,
            "GetUserInterests": self.features.GetUserInterests,
            "Recommend": self.rec.Recommend,
            "Rank": self.rec.Rank,
            "TagNotes": self.tagging.TagNotes,
        }[name]


@pytest.fixture(scope="module")
def stubs(server):
    channel = grpc.insecure_channel(server.target)
    yield Stubs(channel)
    channel.close()


@pytest.fixture(scope="module")
def known(server):
    rec = server.running.core.rec
    return {
        "note": str(rec.catalog.note_ids[0]),
        "user": str(rec.user_ids()[0]),
        "category": str(rec.catalog.categories[0]),
    }


unknown_id = st.text(min_size=1, max_size=12).map(lambda s: "zz-" + s)
bad_id_list = st.one_of(
    st.just([]),
    st.lists(unknown_id, min_size=1, max_size=5),
    st.lists(st.just("n"), min_size=MAX_IDS + 1, max_size=MAX_IDS + 30),
    st.lists(st.just(""), min_size=1, max_size=3),
    st.just(["x" * 300]),
)
bad_k = st.one_of(st.integers(-(2**31), 0), st.integers(MAX_K + 1, 2**31 - 1))


def _cases(known):
    note, user, cat = known["note"], known["user"], known["category"]
    return st.one_of(
        bad_id_list.map(lambda ids: ("GetNoteTags", tag_features_pb2.GetNoteTagsRequest(note_ids=ids))),
        st.tuples(bad_id_list, INT32).map(
            lambda a: (
                "GetUserInterests",
                tag_features_pb2.GetUserInterestsRequest(user_ids=a[0], top_k=a[1]),
            )
        ),
        st.tuples(st.sampled_from([user]), st.integers(201, 2**31 - 1) | st.integers(-(2**31), -1)).map(
            lambda a: (
                "GetUserInterests",
                tag_features_pb2.GetUserInterestsRequest(user_ids=[a[0]], top_k=a[1]),
            )
        ),
        st.tuples(st.sampled_from([user, "", "ghost"]), bad_k, INT32).map(
            lambda a: (
                "Recommend",
                recommendation_pb2.RecommendRequest(user_id=a[0], k=a[1], candidates=a[2]),
            )
        ),
        st.tuples(unknown_id, st.integers(1, MAX_K)).map(
            lambda a: ("Recommend", recommendation_pb2.RecommendRequest(user_id=a[0], k=a[1]))
        ),
        st.tuples(st.integers(-(2**31), -1) | st.integers(10**6, 2**31 - 1)).map(
            lambda a: ("Recommend", recommendation_pb2.RecommendRequest(user_id=user, k=5, candidates=a[0]))
        ),
        st.lists(unknown_id, min_size=1, max_size=3).map(
            lambda cats: (
                "Recommend",
                recommendation_pb2.RecommendRequest(
                    user_id=user, k=5, filters=recommendation_pb2.Filters(categories=cats)
                ),
            )
        ),
        st.tuples(st.sampled_from([user, "ghost"]), bad_id_list).map(
            lambda a: ("Rank", recommendation_pb2.RankRequest(user_id=a[0], note_ids=a[1] or []))
        ),
        st.sampled_from(["ghost", ""]).map(
            lambda u: ("Rank", recommendation_pb2.RankRequest(user_id=u, note_ids=[note]))
        ),
        st.one_of(
            st.just([]),
            st.lists(
                st.builds(common_pb2.Note, note_id=st.just(""), category=st.just(cat)), min_size=1, max_size=2
            ),
            st.lists(
                st.builds(common_pb2.Note, note_id=unknown_id, category=unknown_id), min_size=1, max_size=2
            ),
            st.just([common_pb2.Note(note_id="dup", category=cat)] * 2),
            st.just([common_pb2.Note(note_id="neg", category=cat, created_at_ms=-5)]),
            st.integers(65, 80).map(
                lambda n: [common_pb2.Note(note_id=f"m{i}", category=cat) for i in range(n)]
            ),
        ).map(lambda notes: ("TagNotes", tagging_pb2.TagNotesRequest(notes=notes))),
    )


@pytest.fixture(scope="module")
def cases(known):
    return _cases(known)


def _check_still_serving(stubs, known):
    resp = stubs.features.GetNoteTags(
        tag_features_pb2.GetNoteTagsRequest(note_ids=[known["note"]]), timeout=10
    )
    assert resp.notes[0].note_id == known["note"]


def test_malformed_requests_get_deliberate_codes(server, stubs, known, cases):
    size = server.running.core.rec.num_notes

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def check(case):
        name, request = case
        with pytest.raises(grpc.RpcError) as err:
            stubs.rpc(name)(request, timeout=10)
        assert err.value.code() in ALLOWED, (name, request, err.value.code(), err.value.details())
        assert err.value.details()
        _check_still_serving(stubs, known)

    check()
    assert server.running.core.rec.num_notes == size  # no bad TagNotes added anything


@pytest.mark.parametrize(
    ("name", "request_", "field"),
    [
        (
            "GetNoteTags",
            tag_features_pb2.GetNoteTagsRequest(note_ids=["n"] * (MAX_IDS + 1)),
            "note_ids: got 101 ids; expected 1..100",
        ),
        (
            "GetUserInterests",
            tag_features_pb2.GetUserInterestsRequest(user_ids=["u"], top_k=-1),
            "top_k: got -1",
        ),
        (
            "Recommend",
            recommendation_pb2.RecommendRequest(user_id="u", k=MAX_K + 1),
            "k: got 51; expected an integer in 1..50",
        ),
        ("Rank", recommendation_pb2.RankRequest(user_id="u", note_ids=[]), "note_ids: got 0 ids"),
        (
            "TagNotes",
            tagging_pb2.TagNotesRequest(notes=[common_pb2.Note(note_id="a", category="nope")]),
            "notes[0].category",
        ),
    ],
)
def test_invalid_argument_details_name_the_field_and_limit(stubs, name, request_, field):
    with pytest.raises(grpc.RpcError) as err:
        stubs.rpc(name)(request_, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in err.value.details()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"created_at_ms": 2**63 - 1},
            "notes[0].created_at_ms: got 9223372036854775807; expected epoch ms in 0..253402300799999",
        ),
        ({"body": "b" * 10_001}, "notes[0].body: got 10001 characters"),
        ({"image_captions": ["c"] * 17}, "notes[0].image_captions: got 17 captions; expected at most 16"),
    ],
)
def test_tag_notes_text_and_date_limits_are_invalid_argument(server, stubs, known, fields, expected):
    size = server.running.core.rec.num_notes
    note = common_pb2.Note(note_id="limits", category=known["category"], **fields)
    with pytest.raises(grpc.RpcError) as err:
        stubs.tagging.TagNotes(tagging_pb2.TagNotesRequest(notes=[note]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(expected), err.value.details()
    assert server.running.core.rec.num_notes == size


def test_oversized_message_is_resource_exhausted(stubs, known):
    huge = tag_features_pb2.GetNoteTagsRequest(note_ids=["n" * (300 * 1024)])  # server limit: 256 KiB
    with pytest.raises(grpc.RpcError) as err:
        stubs.features.GetNoteTags(huge, timeout=10)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _check_still_serving(stubs, known)


def test_expired_deadline_is_deadline_exceeded(stubs, known):
    # gRPC core keeps deadlines at millisecond resolution, so a 1 µs timeout may round up to a
    # deadline a fast loopback call still meets: use deadlines already in the past (0 = "none").
    for timeout in (-1.0, -1e-3):
        with pytest.raises(grpc.RpcError) as err:
            stubs.features.GetNoteTags(
                tag_features_pb2.GetNoteTagsRequest(note_ids=[known["note"]]), timeout=timeout
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _check_still_serving(stubs, known)


def test_server_side_deadline_check():
    from features.errors import TagLLMError
    from serving.servicers import check_deadline

    class Ctx:
        def __init__(self, left):
            self.left = left

        def time_remaining(self):
            return self.left

    check_deadline(Ctx(None), "x")  # no deadline
    check_deadline(Ctx(0.5), "x")
    with pytest.raises(TagLLMError) as err:
        check_deadline(Ctx(0.0), "before the call started")
    assert err.value.grpc_status == "DEADLINE_EXCEEDED"


def test_slow_tagging_past_the_deadline_adds_nothing(server, stubs, known):
    tagger = server.tagger
    size = server.running.core.rec.num_notes
    tagger.delay_s = 0.5
    try:
        with pytest.raises(grpc.RpcError) as err:
            stubs.tagging.TagNotes(
                tagging_pb2.TagNotesRequest(
                    notes=[common_pb2.Note(note_id="late", category=known["category"])]
                ),
                timeout=0.2,
            )
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        server.loop.run(_sleep(0.6))  # let the handler finish its (abandoned) tagging
    finally:
        tagger.delay_s = 0.0
    assert server.running.core.rec.num_notes == size
    assert not server.running.core.rec.has_note("late")


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


@pytest.fixture(scope="module")
def auth_stubs(auth_server):
    channel = grpc.insecure_channel(auth_server.target)
    yield Stubs(channel)
    channel.close()


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    token=st.one_of(
        st.none(), st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20)
    )
)
def test_missing_or_wrong_token_is_unauthenticated(auth_server, auth_stubs, token):
    if token == "s3cret":
        return
    metadata = () if token is None else (("authorization", f"Bearer {token}"),)
    note = str(auth_server.running.core.rec.catalog.note_ids[0])
    with pytest.raises(grpc.RpcError) as err:
        auth_stubs.features.GetNoteTags(
            tag_features_pb2.GetNoteTagsRequest(note_ids=[note]), metadata=metadata, timeout=10
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    ok = auth_stubs.features.GetNoteTags(
        tag_features_pb2.GetNoteTagsRequest(note_ids=[note]),
        metadata=(("authorization", "Bearer s3cret"),),
        timeout=10,
    )
    assert ok.notes[0].note_id == note


def test_auth_keeps_health_open_and_guards_reflection(auth_server):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(auth_server.target) as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=10
        )
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
        tagging = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="tagllm.v1.Tagging"), timeout=10
        )
        assert tagging.status == health_pb2.HealthCheckResponse.NOT_SERVING  # started without a tagger
        with pytest.raises(grpc.RpcError) as err:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tag_notes_without_tagger_is_failed_precondition(auth_server, auth_stubs):
    cat = str(auth_server.running.core.rec.catalog.categories[0])
    with pytest.raises(grpc.RpcError) as err:
        auth_stubs.tagging.TagNotes(
            tagging_pb2.TagNotesRequest(notes=[common_pb2.Note(note_id="x", category=cat)]),
            metadata=(("authorization", "Bearer s3cret"),),
            timeout=10,
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "tagger" in err.value.details()
