"""The student report: which notes are scored, self-agreement, peers, calibration, files, CLI, errors."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from features.errors import ConfigError, NotFoundError
from features.io import RunDir, write_json, write_parquet
from tagging.distill_report import (
    PEERS,
    HashtagTagger,
    KnownTagsTagger,
    build_report,
    calibration,
    render_markdown,
)
from tagging.handbook_model import Handbook, save_handbook
from tagging.report_cli import PEER_CHOICES, report
from tagging.student.data import split_of
from tagging.types import NoteInput

SPLIT = {"test_share": 0.5, "val_share": 0.0}
TOPICS = {
    "food": [("beef noodles", "spicy broth"), ("hot pot", "late night"), ("dumplings", "family dinner")],
    "beauty": [("red lipstick", "matte finish"), ("sunscreen", "oily skin"), ("face mask", "sheet mask")],
}


def _tags(texts: list[str], conf: float = 1.0) -> list[dict]:
    return [{"text": t, "dimension": "other", "confidence": conf} for t in texts]


def _table(rows: dict[str, list[dict]], tagger: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "note_id": list(rows),
            "tagger": tagger,
            "tagger_version": f"{tagger}-v1",
            "tags": list(rows.values()),
            "generated_at": pd.Timestamp("2026-01-01", tz="UTC"),
        }
    )


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    """A hand-made run: 40 notes, half test; the teacher answers every train note and 2/3 of the test
    notes (one with an empty list); the student copies the teacher on half the answered test notes."""
    run = RunDir(tmp_path / "run")
    run.write_manifest({"source": "hand-made"})
    notes, truth = [], {}
    for i in range(40):
        cat = "food" if i % 2 else "beauty"
        topic, extra = TOPICS[cat][i % 3]
        nid = f"n{i:03d}"
        truth[nid] = [topic, extra]
        notes.append(
            {
                "note_id": nid, "author_id": f"a{i % 5}", "category": cat,
                "title": f"My {topic} day #{topic.replace(' ', '_')} #fyp",
                "body": f"Trying {topic} with {extra} today. ＃Viral",
                "image_captions": [], "created_at": pd.Timestamp("2026-01-01", tz="UTC"),
            }
        )  # fmt: skip
    write_parquet(pd.DataFrame(notes), run.table_path("notes"))
    hb = Handbook(
        boilerplate=("fyp", "viral"),
        categories={
            "food": {"dimensions": [{"name": "dish", "values": [{"value": t} for t, _ in TOPICS["food"]]}]},
            "beauty": {
                "dimensions": [{"name": "product", "values": [{"value": t} for t, _ in TOPICS["beauty"]]}]
            },
        },
    )
    save_handbook(hb, run.path / "handbook.yaml")

    split = {n: split_of(n, **SPLIT) for n in truth}
    test = [n for n in truth if split[n] == "test"]
    train = [n for n in truth if split[n] == "train"]
    unanswered = test[::3]
    answered = [n for n in test if n not in unanswered]
    empty = answered[0]  # the teacher answered "nothing to tag"
    teacher = {n: _tags([] if n == empty else truth[n], 0.8) for n in train + answered}
    write_parquet(_table(teacher, "llm"), run.table_path("teacher_tags"))
    doubly_test, doubly_train = answered[1:3], train[:2]
    second = {n: teacher[n] for n in doubly_test[:1] + doubly_train}
    second[doubly_test[1]] = _tags([truth[doubly_test[1]][0], "something else"])
    write_parquet(_table(second, "llm"), run.table_path("teacher_tags_second"))

    right = set(answered[::2])
    student = {n: _tags(truth[n], 1.0) if n in right else _tags(["wrong guess"], 0.9) for n in truth}
    write_parquet(_table(student, "student"), run.table_path("tags"))
    perfect = {
        n: [{**t, "confidence": 1.0} for t in teacher[n]] if n in teacher else _tags(["x"]) for n in truth
    }
    write_parquet(_table(perfect, "student"), run.table_path("tags_perfect"))

    model = run.path / "student" / "model"
    write_json({"split": {**SPLIT, "test": len(test)}}, model / "student.json")
    return {
        "run": run, "test": test, "train": train, "answered": answered, "unanswered": unanswered,
        "right": right, "doubly_test": doubly_test, "doubly": doubly_test + doubly_train,
    }  # fmt: skip


def test_only_teacher_answered_test_notes_are_scored(tiny) -> None:
    rep = build_report(tiny["run"], peers=(), student_table="tags_perfect")
    sp = rep["split"]
    assert sp["test_notes"] == len(tiny["test"])
    assert sp["scored_test_notes"] == sp["answered_test_notes"] == len(tiny["answered"])
    assert sp["unanswered_test_notes"] == len(tiny["unanswered"]) > 0
    assert sp["train_notes"] == len(tiny["train"])
    s = rep["taggers"]["student"]
    assert s["n_notes"] == s["overall"]["n_notes"] == len(tiny["answered"])
    # the student tags the unanswered notes too; had they counted as "teacher gave no tags", P < 1
    assert s["overall"]["f1"] == s["overall"]["precision"] == s["overall"]["recall"] == 1.0
    assert s["overall"]["fuzzy_f1"] == 1.0 and s["missing_rows"] == 0
    assert rep["calibration"]["ece"] == 0.0  # every tag right at confidence 1


def test_half_right_student_self_agreement_and_files(tiny) -> None:
    rep = build_report(tiny["run"], peers=())
    s = rep["taggers"]["student"]["overall"]
    assert 0.2 < s["f1"] < 0.9
    rows = rep["taggers"]
    t = rows["teacher (self-agreement)"]
    assert t["n_notes"] == len(tiny["doubly_test"]) == rows["student (doubly-answered test)"]["n_notes"]
    assert t["overall"]["recall"] == 0.75 and t["overall"]["precision"] == 0.75  # 3 of 4 tags agree
    every = rows["teacher (self-agreement, all doubly-answered)"]
    assert every["n_notes"] == len(tiny["doubly"]) == rows["student (all doubly-answered)"]["n_notes"]
    assert every["splits"] == {"test": 2, "train": 2}
    assert "optimistic" in rows["student (all doubly-answered)"]["covers"]
    cal = rep["calibration"]
    assert cal["ece"] > 0.3 and cal["n_tags"] > 0  # "wrong guess" at 0.9, never right: overconfident

    out = tiny["run"].path / "eval" / "student_report"
    for name in ("report.json", "report.md", "reliability.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "report.json").read_text())
    assert saved["taggers"]["student"]["overall"] == s and saved["files"]["markdown"].endswith("report.md")
    md = (out / "report.md").read_text()
    assert "| student | test notes with a teacher answer |" in md and "ECE" in md
    assert "## Per category" in md and "| food |" in md
    head = tiny["run"].summary()["student_report"]
    assert head["student_f1"] == s["f1"] and head["n_notes"] == len(tiny["answered"])
    assert head["teacher_self_f1"] == 0.75 and head["ece"] == cal["ece"]


def test_no_second_table_is_reported_not_fatal(tiny) -> None:
    rep = build_report(tiny["run"], peers=(), second_table="nope", write=False)
    err = rep["taggers"]["teacher (self-agreement)"]["error"]
    assert "nope" in err and "tagllm tag import" in err and "files" not in rep
    assert (
        "teacher (self-agreement)"
        not in build_report(tiny["run"], peers=(), second_table=None, write=False)["taggers"]
    )


def test_peers_on_the_same_notes_and_best_peer(tiny) -> None:
    rep = build_report(
        tiny["run"], peers=("closed-set", "offline", "yake", "hashtags", "known-tags"), write=False
    )
    n = len(tiny["answered"])
    for name in ("closed-set", "offline", "yake", "hashtags", "known-tags"):
        row = rep["taggers"][name]
        assert "error" not in row, row.get("error")
        assert row["n_notes"] == row["overall"]["n_notes"] == n
        assert set(row["per_category"]) == {"food", "beauty"}
    hashtags = rep["taggers"]["hashtags"]["overall"]
    assert hashtags["boilerplate_rate"] == 0.0 and hashtags["tags_per_note"] == 1.0
    assert rep["taggers"]["known-tags"]["overall"]["recall"] > 0.9  # every topic and extra is in the text
    assert rep["best_peer"] in PEERS
    best_f1 = rep["taggers"][rep["best_peer"]]["overall"]["f1"]
    assert best_f1 == max(rep["taggers"][p]["overall"]["f1"] for p in ("closed-set", "offline", "yake"))
    ratio = rep["student_vs_best_peer"]["f1_ratio"]
    assert ratio == pytest.approx(rep["taggers"]["student"]["overall"]["f1"] / best_f1, abs=1e-3)
    md = render_markdown(rep)
    assert f"Best peer: **{rep['best_peer']}**" in md


RARE_SPLIT = {"test_share": 0.25, "val_share": 0.25}


def _rare_labels_run(path: Path, n_topics: int = 40) -> RunDir:
    """Many rare labels: each topic (one telling word) has 2 train, 1 validation and 1 test note, so
    the closed-set peer's probabilities stay below its default threshold of 0.3."""
    run = RunDir(path)
    run.write_manifest({"source": "hand-made"})
    want = {"train": 2, "val": 1, "test": 1}
    ids: dict[str, list[str]] = {p: [] for p in want}
    i = 0
    while any(len(ids[p]) < want[p] * n_topics for p in want):
        nid, i = f"r{i:05d}", i + 1
        part = split_of(nid, **RARE_SPLIT)
        if len(ids[part]) < want[part] * n_topics:
            ids[part].append(nid)
    topic = {n: k % n_topics for p in want for k, n in enumerate(ids[p])}
    common = " ".join(f"c{j}" for j in range(20))
    notes = pd.DataFrame(
        {
            "note_id": list(topic), "author_id": "a", "category": "food",
            "title": [f"w{t}x" for t in topic.values()], "body": common, "image_captions": [[]] * len(topic),
            "created_at": pd.Timestamp("2026-01-01", tz="UTC"),
        }
    )  # fmt: skip
    write_parquet(notes, run.table_path("notes"))
    teacher = {n: _tags([f"topic {t}"]) for n, t in topic.items()}
    write_parquet(_table(teacher, "llm"), run.table_path("teacher_tags"))
    write_parquet(_table(teacher, "student"), run.table_path("tags"))
    write_json({"split": RARE_SPLIT}, run.path / "student" / "model" / "student.json")
    return run


def test_closed_set_threshold_is_tuned_on_validation_notes(tmp_path) -> None:
    from tagging.peers import ClosedSetTagger

    run = _rare_labels_run(tmp_path / "rare")
    rep = build_report(run, peers=("closed-set",), second_table=None, write=False)
    row = rep["taggers"]["closed-set"]
    tuning = row["threshold_tuning"]
    assert tuning["n_notes"] == rep["split"]["val_notes"] == 40
    assert tuning["val_f1"]["0.3"] == 0.0  # the default threshold predicts nothing here
    assert row["threshold"] < 0.3 and tuning["val_f1"][f"{row['threshold']:g}"] == 1.0
    assert row["overall"]["f1"] == 1.0  # the tuned threshold, applied to the test notes
    assert "tuned for F1 vs the teacher on the 40 validation notes" in render_markdown(rep)
    assert inspect.signature(ClosedSetTagger).parameters["threshold"].default == 0.3  # its own default stays


def test_a_peer_that_cannot_run_is_listed_with_its_error(tiny) -> None:
    (tiny["run"].path / "handbook.yaml").unlink()
    rep = build_report(tiny["run"], peers=("offline", "hashtags"), write=False)
    assert "handbook" in rep["taggers"]["offline"]["error"]
    assert rep["best_peer"] == "hashtags"
    assert "unavailable: NotFoundError" in render_markdown(rep)


def test_hashtag_peer_ignores_boilerplate() -> None:
    note = NoteInput("n1", "food", "Dinner #Beef_Noodles #FYP", "so good ＃viral ＃拉面·牛肉 #beef_noodles")
    res = HashtagTagger(["fyp", "Viral"]).tag([note, NoteInput("n2", "food", "no hashtags", "here")])
    assert [t.text for t in res[0].tags] == ["beef noodles", "拉面牛肉"]
    assert res[1].tags == ()


def test_known_tags_whole_words_and_most_specific() -> None:
    tagger = KnownTagsTagger({"a": ["red lipstick", "lipstick", "art"], "b": ["拉面"]}, boilerplate=["fyp"])
    res = tagger.tag(
        [NoteInput("n", "beauty", "A party with Red Lipstick", "吃拉面"), NoteInput("m", "x", "", "画art")]
    )
    assert sorted(t.text for t in res[0].tags) == ["red lipstick", "拉面"]  # "art" is inside "party" only
    assert [t.text for t in res[1].tags] == ["art"]  # next to CJK characters: a word of its own


def test_calibration_perfect_and_overconfident() -> None:
    perfect = calibration([0.5] * 10 + [1.0] * 4, [True, False] * 5 + [True] * 4)
    assert perfect.ece == 0.0 and perfect.n_tags == 14 and len(perfect.bins) == 15
    assert sum(b.count for b in perfect.bins) == 14 and perfect.bins[-1].count == 4
    over = calibration([0.9] * 10, [True] * 3 + [False] * 7)
    assert over.ece == pytest.approx(0.6) and over.accuracy == 0.3
    empty = calibration([], [])
    assert empty.ece is None and empty.n_tags == 0
    with pytest.raises(ConfigError, match=r"confidence 1\.5"):
        calibration([1.5], [True])
    with pytest.raises(ConfigError, match="2 confidences but 1"):
        calibration([0.1, 0.2], [True])


def test_missing_inputs_name_the_file_and_the_command(tiny) -> None:
    run = tiny["run"]
    with pytest.raises(NotFoundError, match=r"tags_x.*tagllm tag apply"):
        build_report(run, peers=(), student_table="tags_x")
    with pytest.raises(NotFoundError, match=r"teacher_x.*tagllm tag teach"):
        build_report(run, peers=(), teacher_table="teacher_x")
    with pytest.raises(ConfigError, match="peer 'bert' is not known; expected some of: closed-set"):
        build_report(run, peers=("bert",))
    meta = run.path / "student" / "model" / "student.json"
    write_json({"split": {"test_share": "half"}}, meta)
    with pytest.raises(ConfigError, match=r"student\.json: 'split' is \{'test_share': 'half'\}; expected"):
        build_report(run, peers=())
    meta.unlink()
    with pytest.raises(NotFoundError, match=r"student\.json does not exist.*tagllm tag distill"):
        build_report(run, peers=())
    bad = _table({"n000": _tags(["x"])}, "s").drop(columns=["tags"])
    write_parquet(bad, run.table_path("tags_bad"))
    write_json({"split": SPLIT}, meta)
    with pytest.raises(ConfigError, match=r"tags_bad\.parquet: missing column\(s\) tags"):
        build_report(run, peers=(), student_table="tags_bad")
    train_only = _table({n: _tags(["x"]) for n in tiny["train"]}, "llm")
    write_parquet(train_only, run.table_path("teacher_train_only"))
    with pytest.raises(
        ConfigError, match=f"none of the {len(tiny['test'])} test notes of the student's split has an answer"
    ):
        build_report(run, peers=(), teacher_table="teacher_train_only")


def test_cli_prints_markdown_or_json(tiny, tmp_path) -> None:
    assert PEER_CHOICES == PEERS
    runner = CliRunner()
    args = ["--run", str(tiny["run"].path), "--no-peers", "--out", str(tmp_path / "out")]
    res = runner.invoke(report, args)
    assert res.exit_code == 0, res.output
    assert "| student | test notes with a teacher answer |" in res.output
    assert (tmp_path / "out" / "reliability.png").exists()
    res = runner.invoke(report, [*args, "--json", "--second-table", ""])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["taggers"]["student"]["n_notes"] == len(tiny["answered"])
    assert "teacher (self-agreement)" not in data["taggers"]
    res = runner.invoke(report, ["--run", str(tiny["run"].path), "--peers", "yake,bert"])
    assert res.exit_code == 2 and "'bert'; expected a comma-separated list of: closed-set" in res.output
    res = runner.invoke(report, ["--run", str(tiny["run"].path), "--student-table", "nope"])
    assert isinstance(res.exception, NotFoundError) and "tagllm tag apply" in str(res.exception)
