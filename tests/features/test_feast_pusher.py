"""The server's Feast pusher (``serving.pusher.ProcessSink``): pushes run in a helper process against a
real SQLite online store and are readable at once; a dead helper is a clear error, not a hang."""

from __future__ import annotations

import pytest


def test_process_sink_pushes_through_a_helper_process(applied_run):
    from features.client import FeatureClient
    from serving.pusher import ProcessSink

    sink = ProcessSink(applied_run)
    try:
        sink.warm()
        rec = {
            "note_id": "pushed-by-helper",
            "tags": [{"text": "ramen", "dimension": "dish", "confidence": 0.9}],
            "tagger_version": "student-9",
            "created_at": None,
        }
        assert sink.push_note_tags([rec]) == 1
        with FeatureClient(applied_run) as client:
            got = client.note_tags(["pushed-by-helper"])[0]
        assert got is not None and got.tag_texts == ["ramen"] and got.tagger_version == "student-9"
        with pytest.raises(RuntimeError, match=r"note_id|tags|KeyError|ConfigError"):
            sink.push_note_tags([{"tags": []}])  # the child's error comes back; the child lives on
        assert sink.push_note_tags([{**rec, "note_id": "pushed-again"}]) == 1
        sink._proc.kill()
        sink._proc.join(10)
        with pytest.raises(RuntimeError, match="died"):
            sink.push_note_tags([rec])
    finally:
        sink.close()
