"""Request bytes that do not decode get INVALID_ARGUMENT naming the method — on every method, health and
reflection included — recorded like any call, and never UNKNOWN, INTERNAL or an ERROR traceback."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from serving.api.v1 import common_pb2, recommendation_pb2, tag_features_pb2, tagging_pb2
from tests.serving.conftest import Served, TitleTagger, start

SEED = 20261127
RANDOM_PAYLOADS = 40
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


@pytest.fixture(scope="module")
def bytes_server(serving_run) -> Iterator[Served]:
    """A server of its own: payloads that happen to decode may tag notes, which no other test should see."""
    served = start(serving_run, tagger=TitleTagger(), features=None)
    yield served
    served.stop()


@pytest.fixture(scope="module")
def channel(bytes_server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(bytes_server.target) as ch:
        yield ch


def _methods(served: Served) -> list[tuple[str, type[Message], type[Message], Message]]:
    """(path, request type, response type, a valid request) for every unary TagLLM method and health."""
    rec = served.running.core.rec
    note, user, cat = str(rec.catalog.note_ids[0]), str(rec.user_ids()[0]), str(rec.catalog.categories[0])
    return [
        (
            "/tagllm.v1.TagFeatures/GetNoteTags",
            tag_features_pb2.GetNoteTagsRequest,
            tag_features_pb2.GetNoteTagsResponse,
            tag_features_pb2.GetNoteTagsRequest(note_ids=[note, note], allow_missing=True),
        ),
        (
            "/tagllm.v1.TagFeatures/GetUserInterests",
            tag_features_pb2.GetUserInterestsRequest,
            tag_features_pb2.GetUserInterestsResponse,
            tag_features_pb2.GetUserInterestsRequest(user_ids=[user], top_k=3),
        ),
        (
            "/tagllm.v1.Recommendation/Recommend",
            recommendation_pb2.RecommendRequest,
            recommendation_pb2.RecommendResponse,
            recommendation_pb2.RecommendRequest(
                user_id=user, k=3, candidates=50, filters=recommendation_pb2.Filters(categories=[cat])
            ),
        ),
        (
            "/tagllm.v1.Recommendation/Rank",
            recommendation_pb2.RankRequest,
            recommendation_pb2.RankResponse,
            recommendation_pb2.RankRequest(user_id=user, note_ids=[note]),
        ),
        (
            "/tagllm.v1.Tagging/TagNotes",
            tagging_pb2.TagNotesRequest,
            tagging_pb2.TagNotesResponse,
            tagging_pb2.TagNotesRequest(
                notes=[
                    common_pb2.Note(
                        note_id="bytes-note",
                        category=cat,
                        title="bytes:tag",
                        body="a body",
                        image_captions=["a caption"],
                        created_at_ms=1_700_000_000_000,
                    )
                ]
            ),
        ),
        (
            "/grpc.health.v1.Health/Check",
            health_pb2.HealthCheckRequest,
            health_pb2.HealthCheckResponse,
            health_pb2.HealthCheckRequest(service="tagllm.v1.Tagging"),
        ),
    ]


def _payloads(valid: Message, rng: random.Random) -> list[bytes]:
    """Seeded random byte strings, every truncation of ``valid``'s bytes, and a few classic corruptions."""
    data = valid.SerializeToString()
    out = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 48))) for _ in range(RANDOM_PAYLOADS)]
    out += [data[:i] for i in range(1, len(data))]
    out += [b"\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x0a\x05ab", data + b"\x0a"]
    return out


def _decodes(request_type: type[Message], payload: bytes) -> bool:
    try:
        request_type.FromString(payload)
    except DecodeError:
        return False
    return True


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "serving.server.access"]


def _watch_first(channel: grpc.Channel, payload: bytes) -> grpc.StatusCode:
    """Health Watch with raw ``payload``: the code of the stream's end, or OK once a first status came."""
    watch = channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=None,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    stream = watch(payload, timeout=10)
    try:
        next(stream)
    except grpc.RpcError as err:
        return err.code()
    finally:
        stream.cancel()
    return grpc.StatusCode.OK


def test_undecodable_requests_are_invalid_argument_on_every_method(bytes_server, channel, caplog):
    caplog.set_level(logging.INFO, logger="serving.server.access")
    rng = random.Random(SEED)
    metrics = bytes_server.running.metrics
    bad_total = 0
    invalid: dict[str, int] = {}  # every INVALID_ARGUMENT answer, the decodable-but-bad requests too
    for path, request_type, response_type, valid in _methods(bytes_server):
        call = channel.unary_unary(
            path, request_serializer=None, response_deserializer=response_type.FromString
        )
        name = path.rsplit("/", 1)[-1]
        bad = invalid[path] = 0
        for payload in _payloads(valid, rng):
            if _decodes(request_type, payload):
                try:
                    call(payload, timeout=10)
                except grpc.RpcError as err:
                    assert err.code() not in NEVER, (path, payload, err.code(), err.details())
                    invalid[path] += err.code() == grpc.StatusCode.INVALID_ARGUMENT
                continue
            bad += 1
            with pytest.raises(grpc.RpcError) as err:
                call(payload, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, payload, err.value.details())
            invalid[path] += 1
            details = err.value.details()
            assert details.startswith(f"{name}: the request is not a valid ")
            assert request_type.DESCRIPTOR.full_name in details
            assert f"({len(payload)} bytes could not be decoded)" in details
            assert "DecodeError" not in details and "Traceback" not in details
        assert bad >= 10, (path, "too few undecodable payloads to mean anything")
        bad_total += bad
        counted = metrics.value("tagllm_grpc_requests_total", {"method": path, "code": "INVALID_ARGUMENT"})
        assert counted == invalid[path], path

    ok = channel.unary_unary(
        "/tagllm.v1.TagFeatures/GetNoteTags",
        request_serializer=tag_features_pb2.GetNoteTagsRequest.SerializeToString,
        response_deserializer=tag_features_pb2.GetNoteTagsResponse.FromString,
    )
    note = str(bytes_server.running.core.rec.catalog.note_ids[0])
    assert ok(tag_features_pb2.GetNoteTagsRequest(note_ids=[note]), timeout=10).notes[0].note_id == note

    lines = _access_lines(caplog)
    for path, n in invalid.items():
        assert sum(x["method"] == path and x["code"] == "INVALID_ARGUMENT" for x in lines) == n, path
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "an ERROR was logged"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "serving.server"]
    assert warnings and all(r.exc_info is None for r in warnings)
    assert len(warnings) == bad_total  # one line per undecodable request, no traceback


def test_health_watch_with_undecodable_request_is_invalid_argument(bytes_server, channel, caplog):
    caplog.set_level(logging.INFO, logger="serving.server.access")
    rng = random.Random(SEED + 1)
    valid = health_pb2.HealthCheckRequest(service="tagllm.v1.Tagging")
    bad = 0
    for payload in _payloads(valid, rng):
        code = _watch_first(channel, payload)
        if _decodes(health_pb2.HealthCheckRequest, payload):
            assert code not in NEVER, (payload, code)
        else:
            bad += 1
            assert code == grpc.StatusCode.INVALID_ARGUMENT, payload
    assert bad >= 10
    assert _watch_first(channel, valid.SerializeToString()) == grpc.StatusCode.OK
    lines = [x for x in _access_lines(caplog) if x["method"] == "/grpc.health.v1.Health/Watch"]
    assert sum(x["code"] == "INVALID_ARGUMENT" for x in lines) == bad
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_reflection_stream_with_an_undecodable_message_is_invalid_argument(channel, caplog):
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    bad = b"\x0a\xff\xff\xff\xff\x0f"
    assert not _decodes(reflection_pb2.ServerReflectionRequest, bad)
    responses = list(info(iter([good]), timeout=10))
    assert len(responses) == 1 and responses[0].list_services_response.service
    with pytest.raises(grpc.RpcError) as err:
        list(info(iter([good, bad, good]), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ServerReflectionInfo: the request is not a valid grpc.reflection.v1alpha" in err.value.details()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
