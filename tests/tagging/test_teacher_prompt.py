"""The chain-of-thought prompt and the untrusted-output parser."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagging.teachers.prompt import (
    InvalidOutputError,
    build_messages,
    output_to_tags,
    parse_output,
    repair_message,
)
from tagging.types import NoteInput

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _teacher_worker import handbook

NOTE = NoteInput(
    note_id="n1", category="life", title="Alpine trail in vintage sneakers", body="matcha after the hike #fyp",
    image_captions=("a leather boot on a rock",), image_urls=("https://img.example/1.jpg",),
)  # fmt: skip

GOOD = {
    "understanding": "a hike",
    "dimensions": ["topic"],
    "tags": [
        {"text": "Alpine", "dimension": "topic", "evidence": [{"source": "title", "span": "alpine trail"}],
         "confidence": 0.9},
        {"text": "leather boot", "dimension": "gear", "evidence": [{"source": "image", "span": "leather boot"}],
         "confidence": 0.8},
        {"text": "space travel", "dimension": "topic", "evidence": [{"source": "body", "span": "rocket"}],
         "confidence": 0.8},
    ],
    "merged": [{"kept": "alpine", "merged": ["alps"]}],
}  # fmt: skip


def test_messages_carry_note_handbook_steps_and_image_parts():
    system, user = build_messages(NOTE, handbook())
    assert (
        system["role"] == "system"
        and "Merge duplicates" in system["content"]
        and '"evidence"' in system["content"]
    )
    text, image = user["content"]
    assert (
        text["type"] == "text" and "Title: Alpine trail" in text["text"] and "Image 1 caption" in text["text"]
    )
    assert "- topic" in text["text"] and "alpine" in text["text"]  # the handbook section
    assert image == {"type": "image_url", "image_url": {"url": "https://img.example/1.jpg"}}
    no_img = NoteInput(note_id="n2", category="unknown", title="t", body="b")
    assert "no section" in build_messages(no_img, handbook())[1]["content"]


@pytest.mark.parametrize(
    "wrap",
    [
        lambda s: s,
        lambda s: f"```json\n{s}\n```",
        lambda s: f"Sure, here it is:\n{s}\nHope that helps!",
        lambda s: s.replace("]}", "],}", 1),  # a trailing comma
    ],
)
def test_parse_accepts_fenced_prose_wrapped_and_trailing_commas(wrap):
    out = parse_output(wrap(json.dumps(GOOD)))
    assert [t.text for t in out.tags] == ["Alpine", "leather boot", "space travel"]


def test_parse_repairs_obvious_slips():
    raw = json.loads(json.dumps(GOOD))
    raw["tags"][0]["confidence"] = "85%"
    raw["tags"][1]["confidence"] = 7
    raw["tags"][2]["evidence"] = "matcha"
    del raw["merged"]
    out = parse_output(json.dumps(raw))
    assert out.tags[0].confidence == pytest.approx(0.85) and out.tags[1].confidence == 1.0
    assert out.tags[2].evidence[0].span == "matcha" and out.merged == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("I cannot help with that.", "no JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({**GOOD, "extra": 1}), "extra"),
        (
            json.dumps(
                {
                    **GOOD,
                    "tags": [
                        {
                            "text": "x",
                            "dimension": "d",
                            "confidence": 0.5,
                            "evidence": [{"source": "tweet", "span": "x"}],
                        }
                    ],
                }
            ),
            "source",
        ),
    ],
)
def test_parse_rejects_with_a_reason(text, match):
    with pytest.raises(InvalidOutputError, match=match) as info:
        parse_output(text)
    assert repair_message(info.value)["content"].startswith("Your previous answer was not valid")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parse_never_raises_anything_but_invalid_output(text):
    with contextlib.suppress(InvalidOutputError):
        parse_output(text)


def test_output_to_tags_checks_grounding_and_dimensions():
    tags, trace = output_to_tags(parse_output(json.dumps(GOOD)), NOTE, handbook())
    by = {t.text: t for t in tags}
    assert by["Alpine"].evidence and by["Alpine"].confidence == 0.9
    assert by["leather boot"].dimension == "other"  # "gear" is not in the handbook section
    assert not by["space travel"].evidence and by["space travel"].confidence == pytest.approx(0.4)
    assert trace["ungrounded_tags"] == 1 and trace["merged"][0]["kept"] == "alpine"
