"""The teacher runner's log and cache are keyed by the tagger run (name + version + fingerprint).

Must-shows: a second tagger on the same run (``tagllm tag teach --teacher reference`` after
``--teacher offline``) resumes nothing from the first one's log and labels the table with its own
name and version; the first one's log is kept (parked) and resumed when that tagger runs again; a
re-run of the same tagger does zero new work; a log written before lines carried a run key is never
resumed; a note whose content changed is tagged again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from features.errors import ConfigError
from tagging.runner import run_teacher
from tagging.types import NoteInput, Tag, TagResult
from tests.tagging._runs import tiny_synthetic_run

OUT = "teacher_tags"


class FakeTagger:
    """Tags each note with ``<name>-<version>-<note_id>``; counts the notes it was asked to tag."""

    def __init__(self, name: str, version: str = "1", fingerprint: str = "") -> None:
        self.name = name
        self.version = version
        self.fingerprint = fingerprint
        self.calls = 0

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        self.calls += len(notes)
        return [
            TagResult(n.note_id, (Tag(f"{self.name}-{self.version}-{n.note_id}", "topic", 0.9),))
            for n in notes
        ]


def _notes(n: int = 5, body: str = "body") -> list[NoteInput]:
    return [NoteInput(f"n{i}", "life", f"title {i}", f"{body} {i}", ()) for i in range(n)]


def _table(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "tables" / f"{OUT}.parquet")


def _run(tagger: FakeTagger, run: Path, notes: Sequence[NoteInput] | None = None, **kw: object):
    return run_teacher(tagger, list(notes or _notes()), run_dir=run, out_name=OUT, **kw)


def test_second_tagger_resumes_nothing_and_labels_its_own_table(tmp_path) -> None:
    from tagging.runner import run_id

    first, second = FakeTagger("offline-handbook"), FakeTagger("reference")
    s1 = _run(first, tmp_path)
    assert (s1.resumed, s1.tagged_now, first.calls) == (0, 5, 5)
    first_log = (tmp_path / "teacher" / f"{OUT}.log.jsonl").read_bytes()

    s2 = _run(second, tmp_path)
    assert (s2.resumed, s2.cached, s2.tagged_now, second.calls) == (0, 0, 5, 5)
    table = _table(tmp_path)
    assert set(table["tagger"]) == {"reference"} and set(table["tagger_version"]) == {"1"}
    assert all(t["text"].startswith("reference-") for ts in table["tags"] for t in ts)
    # the first tagger's log is kept, byte for byte, under its run id; the current log is the second's
    parked = tmp_path / "teacher" / f"{OUT}.{run_id(first)}.log.jsonl"
    assert parked.read_bytes() == first_log
    current = [json.loads(x) for x in (tmp_path / "teacher" / f"{OUT}.log.jsonl").read_text().splitlines()]
    assert {e["run"] for e in current} == {run_id(second)} == {s2.run_id}

    # the same tagger again: everything resumed, zero new work
    again = FakeTagger("reference")
    s3 = _run(again, tmp_path)
    assert (s3.resumed, s3.cached, s3.tagged_now, again.calls) == (5, 0, 0, 0)

    # the first tagger again: its parked log comes back and is resumed; the table is its own again
    back = FakeTagger("offline-handbook")
    s4 = _run(back, tmp_path)
    assert (s4.resumed, s4.tagged_now, back.calls) == (5, 0, 0)
    assert set(_table(tmp_path)["tagger"]) == {"offline-handbook"}
    assert (tmp_path / "teacher" / f"{OUT}.{run_id(second)}.log.jsonl").exists()
    assert not parked.exists()


def test_a_new_version_or_fingerprint_is_a_new_run(tmp_path) -> None:
    _run(FakeTagger("llm", "cot-v1:m"), tmp_path)
    for tagger in (FakeTagger("llm", "cot-v2:m"), FakeTagger("llm", "cot-v2:m", fingerprint="hb-2")):
        s = _run(tagger, tmp_path)
        assert (s.resumed, s.cached, s.tagged_now, tagger.calls) == (0, 0, 5, 5)
        assert set(_table(tmp_path)["tagger_version"]) == {tagger.version}
    # a fresh log (another out_name) for a tagger seen before: every note from the cache, no work
    cached = FakeTagger("llm", "cot-v1:m")
    s = run_teacher(cached, _notes(), run_dir=tmp_path, out_name="other")
    assert (s.resumed, s.cached, s.tagged_now, cached.calls) == (0, 5, 0, 0)


def test_a_note_whose_content_changed_is_tagged_again(tmp_path) -> None:
    _run(FakeTagger("offline-handbook"), tmp_path)
    notes = _notes()
    notes[2] = NoteInput("n2", "life", "title 2", "edited body", ())
    tagger = FakeTagger("offline-handbook")
    s = _run(tagger, tmp_path, notes, use_cache=False)
    assert (s.resumed, s.tagged_now, tagger.calls) == (4, 1, 1)


def test_legacy_log_without_run_keys_is_parked_and_never_resumed(tmp_path) -> None:
    writer = FakeTagger("offline-handbook")
    _run(writer, tmp_path)
    log_path = tmp_path / "teacher" / f"{OUT}.log.jsonl"
    # what the previous version wrote: the same lines without the "run" field
    legacy = "".join(
        json.dumps({k: v for k, v in json.loads(x).items() if k != "run"}, ensure_ascii=False) + "\n"
        for x in log_path.read_text().splitlines()
    )
    log_path.write_text(legacy)

    other = FakeTagger("reference")
    s = _run(other, tmp_path)
    assert (s.resumed, s.tagged_now, other.calls) == (0, 5, 5)
    assert (tmp_path / "teacher" / f"{OUT}.legacy.log.jsonl").read_text() == legacy
    assert set(_table(tmp_path)["tagger"]) == {"reference"}

    # the tagger that wrote the legacy log: not resumed from it, but its results come from the cache
    log_path.write_text(legacy)  # (as if the reference run had not happened)
    same = FakeTagger("offline-handbook")
    s = _run(same, tmp_path)
    assert (s.resumed, s.cached, s.tagged_now, same.calls) == (0, 5, 0, 0)
    assert (tmp_path / "teacher" / f"{OUT}.legacy.1.log.jsonl").read_text() == legacy  # never overwritten


class PerNoteTagger(FakeTagger):
    """Like the reference teacher: the answer depends on the note id, not only on the content."""

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        self.calls += len(notes)
        return [TagResult(n.note_id, (Tag(f"own tag of {n.note_id}", "topic", 0.9),)) for n in notes]


def test_a_cache_hit_stored_for_another_note_is_not_used(tmp_path) -> None:
    twins = [NoteInput(nid, "life", "same title", "same body", ()) for nid in ("a", "b")]
    run_teacher(PerNoteTagger("reference"), twins, run_dir=tmp_path, out_name="first")
    tagger = PerNoteTagger("reference")
    s = run_teacher(tagger, twins, run_dir=tmp_path, out_name="second")
    assert s.failed == 0 and s.cached + s.tagged_now == 2 and tagger.calls >= 1
    table = pd.read_parquet(tmp_path / "tables" / "second.parquet").set_index("note_id")
    assert {nid: [t["text"] for t in table.loc[nid, "tags"]] for nid in ("a", "b")} == {
        "a": ["own tag of a"],
        "b": ["own tag of b"],
    }


def test_bad_out_name_is_still_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="out_name"):
        run_teacher(FakeTagger("x"), _notes(), run_dir=tmp_path, out_name="a.b")


# --------------------------------------------------------------------------- the CLI's path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    return tiny_synthetic_run(tmp_path_factory, "teach")


def test_teach_reference_after_offline_tags_every_note_itself(tiny_run) -> None:
    from tagging.pipeline import teach_run

    n = len(pd.read_parquet(tiny_run / "tables" / "notes.parquet"))
    offline = teach_run(tiny_run, teacher="offline", progress=False)
    assert offline["run"]["tagged_now"] + offline["run"]["cached"] == n

    reference = teach_run(tiny_run, teacher="reference", progress=False)
    assert reference["run"]["resumed"] == 0 and reference["run"]["tagged_now"] == n
    table = pd.read_parquet(tiny_run / "tables" / "teacher_tags.parquet")
    assert set(table["tagger"]) == {"reference"} and set(table["tagger_version"]) == {reference["version"]}

    again = teach_run(tiny_run, teacher="reference", progress=False)
    assert again["run"]["resumed"] == n and again["run"]["tagged_now"] == 0 and again["run"]["cached"] == 0
    offline_again = teach_run(tiny_run, teacher="offline", progress=False)
    assert offline_again["run"]["resumed"] == n and offline_again["run"]["tagged_now"] == 0
    assert set(pd.read_parquet(tiny_run / "tables" / "teacher_tags.parquet")["tagger"]) == {
        "offline-handbook"
    }
