"""serving.validation without a server: a bad field names itself, echoes the value, says what was expected."""

from __future__ import annotations

import pytest

from features.errors import ConfigError, NotFoundError
from serving.api.v1 import common_pb2, recommendation_pb2
from serving.config import Limits
from serving.validation import MAX_EPOCH_MS, check_filters, check_ids, check_notes, missing_error
from tagging.types import NoteInput

LIMITS = Limits(max_ids_per_call=3, max_notes_per_call=2, max_id_length=8, max_text_chars=10, max_captions=2)


def _note(**fields):
    return common_pb2.Note(note_id="a", category="food", **fields)


def test_check_notes_gives_tagger_inputs_in_order():
    notes = [
        common_pb2.Note(note_id="a", category="food", title="t", body="b", image_captions=["c"]),
        common_pb2.Note(note_id="b", category="beauty"),
    ]
    assert check_notes(notes, LIMITS, ["food", "beauty"]) == [
        NoteInput("a", "food", "t", "b", ("c",)),
        NoteInput("b", "beauty", "", "", ()),
    ]


@pytest.mark.parametrize(
    ("notes", "match"),
    [
        ([], r"notes: got 0 notes; expected 1..2 \(max_notes_per_call\)"),
        (
            [common_pb2.Note(note_id="a", category="food")] * 2,
            r"notes\[1\].note_id: 'a' repeats notes\[0\].note_id; expected unique note ids",
        ),
        (
            [common_pb2.Note(note_id="a", category="cars")],
            r"notes\[0\].category: got 'cars'; expected one of",
        ),
        (
            [common_pb2.Note(note_id="a", category="food", created_at_ms=-1)],
            r"notes\[0\].created_at_ms: got -1",
        ),
        ([common_pb2.Note(note_id="much-too-long", category="food")], r"notes\[0\].note_id\[0\]: got"),
        (
            [_note(created_at_ms=2**63 - 1)],
            rf"notes\[0\].created_at_ms: got {2**63 - 1}; expected epoch ms in 0..{MAX_EPOCH_MS}",
        ),
        (
            [_note(title="t" * 11)],
            r"notes\[0\].title: got 11 characters .*; expected at most 10 \(max_text_chars\)",
        ),
        (
            [_note(), common_pb2.Note(note_id="b", category="food", body="b" * 11)],
            r"notes\[1\].body: got 11 characters",
        ),
        (
            [_note(image_captions=["ok", "c" * 11])],
            r"notes\[0\].image_captions\[1\]: got 11 characters .*max_text_chars",
        ),
        (
            [_note(image_captions=["a", "b", "c"])],
            r"notes\[0\].image_captions: got 3 captions; expected at most 2 \(max_captions\)",
        ),
    ],
)
def test_check_notes_names_the_bad_field(notes, match):
    with pytest.raises(ConfigError, match=match):
        check_notes(notes, LIMITS, ["food"])


def test_check_notes_accepts_text_and_dates_at_the_limits():
    at_limit = _note(title="t" * 10, body="b" * 10, image_captions=["c" * 10] * 2, created_at_ms=MAX_EPOCH_MS)
    assert check_notes([at_limit], LIMITS, ["food"])[0].image_captions == ("c" * 10,) * 2


def test_check_filters_converts_and_rejects():
    f = check_filters(
        recommendation_pb2.Filters(categories=["food"], exclude_note_ids=["x"], created_after_ms=1500),
        ["food", "beauty"],
        LIMITS,
    )
    assert f.categories == ("food",) and f.exclude_note_ids == ("x",) and f.created_after_s == 1.5
    assert check_filters(recommendation_pb2.Filters(), ["food"], LIMITS).created_after_s is None
    with pytest.raises(
        ConfigError, match=r"filters.categories: unknown \['cars'\]; expected some of \['food'\]"
    ):
        check_filters(recommendation_pb2.Filters(categories=["cars"]), ["food"], LIMITS)
    with pytest.raises(ConfigError, match=r"filters\.created_after_ms: got -5"):
        check_filters(recommendation_pb2.Filters(created_after_ms=-5), ["food"], LIMITS)


def test_check_ids_and_missing_error():
    assert check_ids("ids", ("a", "b"), LIMITS) == ["a", "b"]
    assert check_ids("ids", [], LIMITS, allow_empty=True) == []
    with pytest.raises(ConfigError, match=r"ids: got 4 ids; expected 1..3 \(max_ids_per_call\)"):
        check_ids("ids", ["a"] * 4, LIMITS)
    assert check_ids("ids", ["a", "b", "a"], LIMITS) == ["a", "b", "a"]  # repeats allowed by default
    assert check_ids("ids", ["a", "b"], LIMITS, unique=True) == ["a", "b"]
    with pytest.raises(
        ConfigError, match=r"^note_ids\[2\]: 'n1' repeats note_ids\[0\]; expected unique ids$"
    ):
        check_ids("note_ids", ["n1", "n2", "n1"], LIMITS, unique=True)
    err = missing_error("note_ids", [f"n{i}" for i in range(7)])
    assert isinstance(err, NotFoundError)
    assert str(err) == (
        "note_ids: 7 unknown id(s): 'n0', 'n1', 'n2', 'n3', 'n4' (+2 more); set allow_missing to list them instead"
    )
