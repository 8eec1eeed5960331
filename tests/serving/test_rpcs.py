"""Every RPC over loopback: happy paths, the cold-start path, health, reflection, metrics, access log."""

from __future__ import annotations

import json
import logging
import urllib.request

import grpc
import pytest

from serving.api.v1 import tag_features_pb2, tag_features_pb2_grpc
from serving.client import TagLLMClient, TagLLMClientError


@pytest.fixture(scope="module")
def client(server):
    with TagLLMClient(server.target, timeout=10) as c:
        yield c


def _ids(server):
    rec = server.running.core.rec
    return [str(n) for n in rec.catalog.note_ids[:300]], [str(u) for u in rec.user_ids()]


def test_note_tags_in_request_order_from_online_store_then_catalog(server, client):
    notes, _ = _ids(server)
    got = client.note_tags([notes[7], notes[0], notes[7]])
    assert [n.note_id for n in got] == [notes[7], notes[0], notes[7]]
    # the stub online store has the first 5 notes: those come from it, the rest from the catalog
    assert got[1].tags == [{"text": "online:tag", "dimension": "online", "confidence": 0.5}]
    assert got[1].tagger == "student" and got[1].tagger_version == "student-0123456789ab"
    assert got[0].tags and got[0].tagger == "ground_truth" and got[0].category
    assert "feast online store (5; 5 differed from the catalog" in server.running.core.tags_source
    # one source of truth: the recommender (Rank's reasons, the note's embedding) holds the same tags
    assert [t.text for t in server.running.core.rec.note_tags(notes[0])] == ["online:tag"]


def test_note_tags_allow_missing_lists_unknown_ids(client, server):
    notes, _ = _ids(server)
    stub = tag_features_pb2_grpc.TagFeaturesStub(client.channel)
    resp = stub.GetNoteTags(
        tag_features_pb2.GetNoteTagsRequest(note_ids=[notes[9], "nope"], allow_missing=True)
    )
    assert [n.note_id for n in resp.notes] == [notes[9]] and list(resp.missing_note_ids) == ["nope"]
    with pytest.raises(TagLLMClientError) as err:
        client.note_tags([notes[9], "nope"])
    assert err.value.code == "NOT_FOUND" and "'nope'" in err.value.details and err.value.request_id


def test_user_interests_top_k_and_default(client, server):
    _, users = _ids(server)
    one, two = client.user_interests([users[0], users[1]], top_k=3)
    assert (one.user_id, two.user_id) == (users[0], users[1])
    assert len(one.tags) <= 3 and one.history_length > 0
    weights = [t["weight"] for t in one.tags]
    assert weights == sorted(weights, reverse=True)
    assert len(client.user_interests([users[0]])[0].tags) <= server.running.config.limits.default_top_k
    assert client.user_interests(["ghost", users[0]], allow_missing=True)[0].user_id == users[0]


def test_recommend_and_rank(client, server):
    notes, users = _ids(server)
    recs = client.recommend(users[3], k=5)
    assert 1 <= len(recs) <= 5
    assert [r.score for r in recs] == sorted((r.score for r in recs), reverse=True)
    cat = recs[0].category
    assert all(r.category == cat for r in client.recommend(users[3], k=5, categories=[cat]))
    excluded = {r.note_id for r in recs}
    assert not excluded & {r.note_id for r in client.recommend(users[3], k=5, exclude_note_ids=excluded)}
    ranked = client.rank(users[3], notes[:10])
    assert sorted(r.note_id for r in ranked) == sorted(notes[:10])
    with pytest.raises(TagLLMClientError) as err:
        client.rank(users[3], [notes[1], notes[2], notes[1]])
    assert err.value.code == "INVALID_ARGUMENT" and "note_ids[2]" in err.value.details
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)


def test_tag_notes_then_recommend_returns_the_new_note(client, server):
    _, users = _ids(server)
    user = users[5]
    interests = client.user_interests([user], top_k=3)[0].tags
    category = client.recommend(user, k=1)[0].category
    title = "|".join(t["text"] for t in interests)
    out = client.tag_notes([{"note_id": "n-fresh-1", "category": category, "title": title, "body": "new"}])
    assert out.notes[0].note_id == "n-fresh-1" and out.notes[0].tagger == "title-stub"
    assert {t["text"] for t in out.notes[0].tags} == {t["text"] for t in interests}
    assert out.index_size == server.running.core.rec.num_notes
    # retrievable at once, as a cold-start note, explained by the matched tags
    recs = client.recommend(user, k=5, cold_start_only=True)
    fresh = [r for r in recs if r.note_id == "n-fresh-1"]
    assert fresh, [r.note_id for r in recs]
    assert fresh[0].cold_start and fresh[0].reasons
    assert set(fresh[0].reasons) <= {t["text"] for t in interests}
    # GetNoteTags serves the fresh tags from memory; the push to the online store happened after
    assert client.note_tags(["n-fresh-1"])[0].tagger_version == "title-stub-1"
    server.loop.run(server.running.pushes.drain(5))
    assert [r["note_id"] for r in server.sink.pushed][-1] == "n-fresh-1"
    assert server.sink.thread_names[-1].startswith("feast-push")
    assert client.rank(user, ["n-fresh-1"])[0].cold_start


def test_failed_push_is_counted_not_fatal(client, server, caplog):
    category = server.running.core.rec.catalog.categories[0]
    metrics = server.running.metrics
    before = metrics.value("tagllm_feast_pushes_total", {"outcome": "failed"})
    server.sink.fail = True
    try:
        with caplog.at_level(logging.ERROR, logger="serving.servicers"):
            out = client.tag_notes([{"note_id": "n-fresh-2", "category": category, "title": "x:y"}])
            server.loop.run(server.running.pushes.drain(5))
    finally:
        server.sink.fail = False
    assert out.notes[0].note_id == "n-fresh-2"
    assert metrics.value("tagllm_feast_pushes_total", {"outcome": "failed"}) == before + 1
    assert "feast push" in caplog.text
    assert client.note_tags(["n-fresh-2"])[0].tags[0]["text"] == "x:y"


def test_tagger_failure_is_unavailable_and_adds_nothing(client, server):
    category = server.running.core.rec.catalog.categories[0]
    size = server.running.core.rec.num_notes
    with pytest.raises(TagLLMClientError) as err:
        client.tag_notes(
            [
                {"note_id": "n-ok", "category": category, "title": "a:b"},
                {"note_id": "n-bad", "category": category, "title": "FAIL"},
            ]
        )
    assert err.value.code == "UNAVAILABLE" and "notes[1]" in err.value.details
    assert server.running.core.rec.num_notes == size
    assert client.note_tags(["n-ok"], allow_missing=True) == []


def test_health_lists_every_service_serving(client):
    status = client.health()
    assert set(status) == {"", "tagllm.v1.TagFeatures", "tagllm.v1.Recommendation", "tagllm.v1.Tagging"}
    assert set(status.values()) == {"SERVING"}


def test_reflection_lists_the_services(server):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(server.target) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "tagllm.v1.TagFeatures",
        "tagllm.v1.Recommendation",
        "tagllm.v1.Tagging",
        "grpc.health.v1.Health",
    } <= services


def test_unexpected_exception_is_internal_with_request_id(client, server, caplog, monkeypatch):
    def boom(request):
        raise RuntimeError("bug")

    monkeypatch.setattr(server.running.core, "get_note_tags", boom)
    with caplog.at_level(logging.ERROR, logger="serving.server"), pytest.raises(TagLLMClientError) as err:
        client.note_tags(["n000001"])
    assert err.value.code == "INTERNAL" and "bug" not in err.value.details
    assert err.value.request_id in err.value.details and err.value.request_id in caplog.text


def test_request_id_echoed_and_access_log_is_json(server, caplog):
    channel = grpc.insecure_channel(server.target)
    stub = tag_features_pb2_grpc.TagFeaturesStub(channel)
    with channel, caplog.at_level(logging.INFO, logger="serving.server.access"):
        _, call = stub.GetNoteTags.with_call(
            tag_features_pb2.GetNoteTagsRequest(note_ids=[_ids(server)[0][1]]),
            metadata=(("x-request-id", "req-42"),),
            timeout=10,
        )
    assert dict(call.trailing_metadata())["x-request-id"] == "req-42"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "serving.server.access"]
    line = next(x for x in lines if x["request_id"] == "req-42")
    assert line["method"] == "/tagllm.v1.TagFeatures/GetNoteTags" and line["code"] == "OK"
    assert line["ms"] >= 0 and line["peer"].startswith("ipv4:127.0.0.1")


def test_metrics_endpoint_counts_requests_by_method_and_code(client, server):
    with pytest.raises(TagLLMClientError):
        client.note_tags([])
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{server.running.metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    assert (
        'tagllm_grpc_requests_total{code="INVALID_ARGUMENT",method="/tagllm.v1.TagFeatures/GetNoteTags"}'
        in body
    )
    assert "tagllm_grpc_request_seconds_bucket" in body
