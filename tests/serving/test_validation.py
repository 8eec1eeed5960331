"""serving.validation without a server: a bad field names itself, echoes the value, says what was expected."""

from __future__ import annotations

import pytest

from features.errors import ConfigError, NotFoundError
from serving.api.v1 import common_pb2, recommendation_pb2
from serving.config import Limits
from serving.validation import check_filters, check_ids, check_notes, missing_error
from tagging.types import NoteInput

LIMITS = Limits(max_ids_per_call=3, max_notes_per_call=2, max_id_length=8)


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
        ([common_pb2.Note(note_id="a", category="food")] * 2, r"notes\[1\].note_id: 'a' repeats"),
        (
            [common_pb2.Note(note_id="a", category="cars")],
            r"notes\[0\].category: got 'cars'; expected one of",
        ),
        (
            [common_pb2.Note(note_id="a", category="food", created_at_ms=-1)],
            r"notes\[0\].created_at_ms: got -1",
        ),
        ([common_pb2.Note(note_id="much-too-long", category="food")], r"notes\[0\].note_id\[0\]: got"),
    ],
)
def test_check_notes_names_the_bad_field(notes, match):
    with pytest.raises(ConfigError, match=match):
        check_notes(notes, LIMITS, ["food"])


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
    err = missing_error("note_ids", [f"n{i}" for i in range(7)])
    assert isinstance(err, NotFoundError)
    assert str(err) == (
        "note_ids: 7 unknown id(s): 'n0', 'n1', 'n2', 'n3', 'n4' (+2 more); set allow_missing to list them instead"
    )
