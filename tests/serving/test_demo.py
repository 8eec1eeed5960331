"""The demo's serving stage, in process: each RPC once, then the cold-start path (no subprocess)."""

from __future__ import annotations

import pytest

from serving.client import TagLLMClient
from serving.demo import _fresh_note, _read_calls
from tests.serving.conftest import TitleTagger, start


@pytest.fixture(scope="module")
def demo_server(serving_run):
    served = start(serving_run, tagger=TitleTagger(), features=None)
    yield served
    served.stop()


def test_read_calls_then_fresh_note_give_the_summary_figures(demo_server):
    users = [str(u) for u in demo_server.running.core.rec.user_ids()]
    user = users[3]
    with TagLLMClient(demo_server.target, timeout=10) as client:
        calls = _read_calls(client, user)
        assert list(calls) == ["Health", "Recommend", "GetNoteTags", "GetUserInterests", "Rank"]
        assert all(c["ms"] >= 0 for c in calls.values())
        assert calls["Health"]["answer"][""] == "SERVING"
        assert len(calls["Recommend"]["answer"]) == 5
        assert {"note_id", "score", "reasons"} == set(calls["Recommend"]["answer"][0])
        assert calls["GetUserInterests"]["answer"][0]["user_id"] == user
        interests = client.user_interests([user], top_k=3)[0].tags
        category = client.recommend(user, k=1)[0].category
        template = {
            "category": category,
            "title": "|".join(t["text"] for t in interests),
            "body": "b",
            "image_captions": [],
        }
        fresh = _fresh_note(client, user, template, calls)
    assert list(calls)[-1] == "TagNotes"
    assert list(fresh) == ["note_id", "ms_to_recommend", "rank_among_cold_start", "recommend_calls", "tags"]
    assert fresh["note_id"].startswith("demo-fresh-") and fresh["recommend_calls"] >= 1
    assert fresh["rank_among_cold_start"] is not None and fresh["ms_to_recommend"] is not None
    assert fresh["tags"][:-1] == [t["text"] for t in interests][:-1]  # the last one gains " (new)"
