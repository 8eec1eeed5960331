"""The distilled student's evaluation report: student, teacher self-agreement and peers on the same notes.

Where things live: this module reads the inputs, picks the notes and scores every row
(:func:`build_report`); :mod:`tagging.report_peers` builds the peers (and tunes the closed-set
threshold); :mod:`tagging.report_calibration` computes the calibration statistics;
:mod:`tagging.report_render` renders the Markdown, the reliability diagram and the summary headline.
Their public names are re-exported here.

**Which notes.** The student model's ``student.json`` records its split (by a hash of the note_id,
:func:`tagging.student.data.split_of`). Only **test** notes that have a teacher answer are scored: a row
in the teacher table is an answer, an empty tag list included; a note the teacher never answered is
left out, never counted as "the teacher gave no tags". Gold is the teacher's tags (canonical texts).
The *train* notes are the split's train part with a teacher answer (the closed-set and known-tags
peers learn from them); the *validation* notes, the split's val part with a teacher answer, only tune
the closed-set peer's threshold.

**Rows** (one table; each says which notes it covers, ``covers``, and how many, ``n_notes``):

- ``student``: the student's tags table on the scored test notes.
- ``teacher (self-agreement)``: a second, independent teacher answer scored against the first, on
  the doubly-answered scored test notes; ``student (doubly-answered test)`` is the student on the
  same notes. Few second answers may fall in the test split, so
  ``teacher (self-agreement, all doubly-answered)`` and ``student (all doubly-answered)`` cover every
  doubly-answered note: the student learned from the first answer of the train notes among them
  (``splits`` counts them), so its figure there is optimistic.
- peers, on the scored test notes: ``closed-set`` (:class:`~tagging.peers.ClosedSetTagger`, k=300,
  trained on the train notes' teacher tags, its threshold tuned for F1 on the validation notes:
  the row's ``threshold`` and ``threshold_tuning``), ``offline`` (the handbook teacher), ``yake``,
  ``keybert``, ``hashtags`` (:class:`HashtagTagger`: the creator's hashtags minus boilerplate) and
  ``known-tags`` (:class:`KnownTagsTagger`: every train-answer tag found verbatim in the note). A peer
  that cannot run is listed with its error.

``best_peer`` is the peer with the highest exact F1; ``student_vs_best_peer`` the student's F1 over it.

**Calibration** (:func:`calibration`): a student tag is *correct* when its canonical text is one of the
teacher's tags for the note; ECE over 15 equal-width confidence bins = sum over bins of
(bin count / all tags) * |bin accuracy - bin mean confidence|; plotted as a reliability diagram.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.errors import ConfigError, NotFoundError
from features.io import RunDir, atomic_path, read_json, write_json
from tagging.evaluate import evaluate_tags, gold_from_reference
from tagging.handbook_model import Handbook, load_handbook
from tagging.normalize import canonical
from tagging.report_calibration import ECE_BINS, Calibration, ReliabilityBin, calibration, is_unit
from tagging.report_peers import PEERS, HashtagTagger, KnownTagsTagger, make_peer, tune_threshold
from tagging.report_render import headline, reliability_png, render_markdown
from tagging.student.data import split_of
from tagging.student.files import ModelFiles
from tagging.student.metrics import held_out_ids
from tagging.types import NoteInput, notes_from_frame

if TYPE_CHECKING:
    from tagging.peers import ClosedSetTagger

__all__ = [
    "ECE_BINS",
    "PEERS",
    "Calibration",
    "HashtagTagger",
    "KnownTagsTagger",
    "ReliabilityBin",
    "build_report",
    "calibration",
    "headline",
    "reliability_png",
    "render_markdown",
]

log = logging.getLogger(__name__)

Answers = dict[str, list[tuple[str, float]]]  # note_id -> [(tag text, confidence)]


# --------------------------------------------------------------------------- inputs


def _present(run: RunDir) -> str:
    return ", ".join(p.stem for p in sorted(run.tables_dir.glob("*.parquet"))) or "none"


def _read_answers(run: RunDir, table: str, make_it: str) -> Answers:
    """A canonical tags table -> note_id -> [(text, confidence)]; one row per note required."""
    path = run.table_path(table)
    if not path.exists():
        raise NotFoundError(
            f"table {table!r}: {path} does not exist (present: {_present(run)}); make it with {make_it}"
        )
    df = pd.read_parquet(path)
    missing = [c for c in ("note_id", "tags") if c not in df.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column(s) {', '.join(missing)} (present: {', '.join(map(str, df.columns))}); "
            "expected a tags table with note_id and tags [{text, dimension, confidence}]"
        )
    ids = df["note_id"].astype(str)
    dup = sorted(set(ids[ids.duplicated()]))
    if dup:
        raise ConfigError(
            f"{path}: note_id {dup[0]!r} has {int((ids == dup[0]).sum())} rows; expected one row per note"
        )
    out: Answers = {}
    for nid, tags in zip(ids, df["tags"], strict=True):
        items = []
        for t in tags if tags is not None else ():
            if not isinstance(t, Mapping) or not isinstance(t.get("text"), str):
                raise ConfigError(
                    f"{path}: note {nid!r} has tag {t!r}; expected {{text: str, dimension: str, confidence: float}}"
                )
            conf = t.get("confidence", 1.0)
            if not is_unit(conf):
                raise ConfigError(
                    f"{path}: note {nid!r} has tag confidence {conf!r}; expected a number in [0, 1]"
                )
            items.append((t["text"], float(conf)))
        out[nid] = items
    return out


def _texts(answers: Answers) -> dict[str, list[str]]:
    return {n: [t for t, _ in ts] for n, ts in answers.items()}


def _student_meta(model_dir: Path, run: RunDir) -> dict[str, Any]:
    path = ModelFiles(model_dir).meta
    if not path.exists():
        raise NotFoundError(
            f"no student model: {path} does not exist; make it with `tagllm tag distill --run {run.path}`"
        )
    meta = read_json(path)
    split = meta.get("split") if isinstance(meta, dict) else None
    ok = (
        isinstance(split, dict) and is_unit(split.get("test_share")) and is_unit(split.get("val_share", 0.05))
    )
    if not ok:
        raise ConfigError(
            f"{path}: 'split' is {split!r}; expected {{test_share, val_share}} numbers in [0, 1], as in the "
            f"student.json that `tagllm tag distill --run {run.path}` writes"
        )
    return dict(meta)


def _handbook(run: RunDir, handbook: Handbook | str | os.PathLike[str] | None) -> Handbook | None:
    if isinstance(handbook, Handbook):
        return handbook
    if handbook is not None:
        return load_handbook(handbook)
    path = run.handbook
    if path.exists():
        return load_handbook(path)
    log.warning("%s: no handbook.yaml; no boilerplate list, and the offline peer cannot run", run.path)
    return None


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class _Split:
    """The notes of a report: every note (in table order), and the held-out / train ids used."""

    notes: dict[str, NoteInput]
    test_all: list[str]
    answered_test: list[str]
    test: list[str]
    train: list[str]
    val: list[str]


def _split(run: RunDir, meta: Mapping[str, Any], teacher: Answers, max_notes: int) -> _Split:
    inputs = notes_from_frame(run.read_table("notes"))
    ids = [n.note_id for n in inputs]
    test_all = held_out_ids(ids, meta, "test")
    answered = [n for n in test_all if n in teacher]
    train = [n for n in held_out_ids(ids, meta, "train") if n in teacher]
    val = [n for n in held_out_ids(ids, meta, "val") if n in teacher]
    return _Split({n.note_id: n for n in inputs}, test_all, answered, answered[:max_notes], train, val)


def _check_options(max_notes: int, peers: Sequence[str]) -> None:
    if max_notes < 1:
        raise ConfigError(f"max_notes={max_notes!r}; expected an integer >= 1")
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ConfigError(f"peer {unknown[0]!r} is not known; expected some of: {', '.join(PEERS)}")


def _require_answered(sp: _Split, teacher_table: str) -> None:
    if not sp.test:
        raise ConfigError(
            f"--teacher-table {teacher_table!r}: none of the {len(sp.test_all)} test notes of the student's "
            "split has an answer in it; expected the teacher table the student was distilled from"
        )


def _split_figures(meta: Mapping[str, Any], sp: _Split, max_notes: int) -> dict[str, Any]:
    """The report's ``split`` section: shares and note counts of the student's split."""
    return {
        "test_share": float(meta["split"]["test_share"]),
        "val_share": float(meta["split"].get("val_share", 0.05)),
        "test_notes": len(sp.test_all),
        "answered_test_notes": len(sp.answered_test),
        "unanswered_test_notes": len(sp.test_all) - len(sp.answered_test),
        "scored_test_notes": len(sp.test),
        "max_notes": max_notes,
        "train_notes": len(sp.train),
        "val_notes": len(sp.val),
    }


Scorer = Callable[[str, str, Mapping[str, Sequence[str]], Sequence[str]], dict[str, Any]]


def build_report(
    run: RunDir,
    *,
    teacher_table: str = "teacher_tags",
    second_table: str | None = "teacher_tags_second",
    student_table: str = "tags",
    peers: Sequence[str] = PEERS,
    handbook: Handbook | str | os.PathLike[str] | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    max_notes: int = 2000,
    out: str | os.PathLike[str] | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Score the student, the teacher's self-agreement and the peers on the same held-out notes.

    Args:
        run: a run directory with notes, the teacher table, the student's tags table and model.
        teacher_table: the teacher's tags table (gold).
        second_table: a second, independent teacher answer (self-agreement); None to skip. A missing
            table is reported in its rows, not fatal.
        student_table: the student's tags table (``tagllm tag apply`` writes ``tags``).
        peers: which of :data:`PEERS` to run (empty: none).
        handbook: a Handbook or its YAML path [default: RUN/handbook.yaml when present].
        model_dir: the student model folder [default: RUN/student/model]; only its student.json is read.
        max_notes: score at most this many test notes (the first in the notes table's order).
        out: output folder [default: RUN/eval/student_report].
        write: write report.json, report.md, reliability.png and summary.json ``student_report``.

    Returns:
        ``{"run", "tables", "handbook_version", "split", "taggers": {name: row}, "best_peer",
        "student_vs_best_peer", "calibration", "files"}`` (``files`` when written). A row is
        ``{"kind", "covers", "n_notes", "overall", "per_category", ...}`` (``overall`` and each category
        as :func:`tagging.evaluate.evaluate_tags`) or ``{"kind", "covers", "n_notes", "error"}``.

    Raises:
        NotFoundError: no run, student model, teacher table or student table (the message names the
            file and the command that makes it). ConfigError: a bad option or table (named).
    """
    run = run.require()
    _check_options(max_notes, peers)
    meta = _student_meta(Path(model_dir) if model_dir is not None else run.student_model, run)
    teacher = _read_answers(run, teacher_table, f"`tagllm tag teach --run {run.path}` or `tagllm tag import`")
    student = _read_answers(run, student_table, f"`tagllm tag apply --run {run.path}`")
    hb = _handbook(run, handbook)
    sp = _split(run, meta, teacher, max_notes)
    _require_answered(sp, teacher_table)
    gold = gold_from_reference(_texts(teacher))
    cats = {n: x.category for n, x in sp.notes.items()}
    boiler = hb.boilerplate if hb is not None else ()

    def scored(
        kind: str, covers: str, pred: Mapping[str, Sequence[str]], ids: Sequence[str]
    ) -> dict[str, Any]:
        rep = evaluate_tags(pred, gold, cats, note_ids=ids, boilerplate=boiler, handbook=hb)
        return {"kind": kind, "covers": covers, "n_notes": len(ids), **rep}

    student_pred = _texts(student)
    missing = sum(n not in student for n in sp.test)
    if missing:
        log.warning(
            "%d of %d test notes have no row in %r: scored as no tags", missing, len(sp.test), student_table
        )
    rows = {"student": {**scored("student", "test notes with a teacher answer", student_pred, sp.test),
                        "missing_rows": missing}}  # fmt: skip
    rows.update(_self_agreement_rows(run, second_table, teacher, student_pred, sp.test, meta, scored))
    rows.update(_peer_rows(peers, hb, sp, teacher, scored))
    cal = _student_calibration(student, teacher, sp.test)
    report: dict[str, Any] = {
        "run": str(run.path),
        "tables": {"teacher": teacher_table, "second": second_table, "student": student_table},
        "handbook_version": hb.version if hb is not None else None,
        "split": _split_figures(meta, sp, max_notes),
        "taggers": rows,
        **_best_peer(rows),
        "calibration": cal.as_dict(),
    }
    if write:
        out_dir = Path(out) if out is not None else run.student_report_dir
        report["files"] = _write(run, report, cal, out_dir)
    return report


def _peer_rows(
    peers: Sequence[str], hb: Handbook | None, sp: _Split, teacher: Answers, scored: Scorer
) -> dict[str, dict[str, Any]]:
    test_notes = [sp.notes[n] for n in sp.test]
    train_notes = [sp.notes[n] for n in sp.train]
    train_tags = {n: [canonical(t) for t, _ in teacher[n]] for n in sp.train}
    rows: dict[str, dict[str, Any]] = {}
    for name in peers:
        log.info("peer %s: %d test notes", name, len(test_notes))
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        try:
            tagger = make_peer(name, hb, train_notes, train_tags)
            if name == "closed-set":
                from tagging.peers import ClosedSetTagger

                if isinstance(tagger, ClosedSetTagger):
                    extra = _tune_closed_set(tagger, sp, scored)
            results = tagger.tag(test_notes)
        except Exception as exc:  # a peer's own failure is reported, not fatal (as peers.evaluation_report)
            log.warning("peer %s could not run: %s", name, exc)
            rows[name] = {"kind": "peer", "covers": "test notes with a teacher answer", "n_notes": len(sp.test),
                          "error": f"{type(exc).__name__}: {exc}"}  # fmt: skip
            continue
        pred = {r.note_id: [t.text for t in r.tags] for r in results if r.status == "ok"}
        rows[name] = {
            **scored("peer", "test notes with a teacher answer", pred, sp.test),
            "version": tagger.version,
            **extra,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return rows


def _tune_closed_set(tagger: ClosedSetTagger, sp: _Split, scored: Scorer) -> dict[str, Any]:
    """Set the closed-set peer's threshold to the one with the best F1 vs the teacher on the validation
    notes (:func:`tagging.report_peers.tune_threshold`); its row's ``threshold`` and ``threshold_tuning``.
    """
    val_notes = [sp.notes[n] for n in sp.val]

    def f1(pred: Mapping[str, Sequence[str]]) -> float:
        return float(scored("peer", "validation notes", pred, sp.val)["overall"]["f1"])

    choice = tune_threshold(tagger, val_notes, f1)
    if not choice.f1_by_threshold:
        log.warning(
            "closed-set peer: no validation notes with a teacher answer; threshold %s", choice.threshold
        )
    tagger.threshold = choice.threshold
    tuning = {
        "on": "validation notes with a teacher answer",
        "n_notes": choice.n_notes,
        "val_f1": {f"{t:g}": f for t, f in choice.f1_by_threshold.items()},
    }
    return {"threshold": choice.threshold, "threshold_tuning": tuning}


def _self_agreement_rows(
    run: RunDir,
    second_table: str | None,
    teacher: Answers,
    student_pred: Mapping[str, Sequence[str]],
    test_ids: Sequence[str],
    meta: Mapping[str, Any],
    scored: Scorer,
) -> dict[str, dict[str, Any]]:
    """The teacher's second answer vs its first, and the student beside it on the same notes."""
    name_test, name_all = "teacher (self-agreement)", "teacher (self-agreement, all doubly-answered)"
    cover_test, cover_all = "doubly-answered test notes", "all doubly-answered notes"
    if second_table is None:
        return {}
    if not run.has_table(second_table):
        err = (
            f"no second-answer table {run.table_path(second_table)} (present: {_present(run)}); import one "
            f"with `tagllm tag import --run {run.path} --out-table {second_table} FILES`"
        )
        return {
            name_test: {"kind": "teacher", "covers": cover_test, "n_notes": 0, "error": err},
            name_all: {"kind": "teacher", "covers": cover_all, "n_notes": 0, "error": err},
        }
    second = _texts(_read_answers(run, second_table, "`tagllm tag import`"))
    doubly = [n for n in teacher if n in second]
    doubly_test = [n for n in test_ids if n in second]
    rows: dict[str, dict[str, Any]] = {}
    if doubly_test:
        rows[name_test] = scored("teacher", cover_test, second, doubly_test)
        rows["student (doubly-answered test)"] = scored("student", cover_test, student_pred, doubly_test)
    else:
        rows[name_test] = {"kind": "teacher", "covers": cover_test, "n_notes": 0, "error":
                           f"none of the {len(doubly)} doubly-answered notes is a scored test note"}  # fmt: skip
    if not doubly:
        rows[name_all] = {"kind": "teacher", "covers": cover_all, "n_notes": 0,
                          "error": f"no note of {second_table!r} has an answer in the teacher table"}  # fmt: skip
        return rows
    ts, vs = float(meta["split"]["test_share"]), float(meta["split"].get("val_share", 0.05))
    splits = Counter(split_of(n, test_share=ts, val_share=vs) for n in doubly)
    extra = {"splits": dict(sorted(splits.items()))}
    rows[name_all] = {**scored("teacher", cover_all, second, doubly), **extra}
    rows["student (all doubly-answered)"] = {
        **scored("student", f"{cover_all} (train notes included: optimistic)", student_pred, doubly),
        **extra,
    }
    return rows


def _best_peer(rows: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    ok = {n: r["overall"] for n, r in rows.items() if r["kind"] == "peer" and "overall" in r}
    if not ok:
        return {"best_peer": None, "student_vs_best_peer": None}
    best = max(ok, key=lambda n: (ok[n]["f1"], ok[n]["fuzzy_f1"]))
    s = rows["student"]["overall"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 4) if b > 0 else None

    return {
        "best_peer": best,
        "student_vs_best_peer": {
            "f1_ratio": ratio(s["f1"], ok[best]["f1"]),
            "fuzzy_f1_ratio": ratio(s["fuzzy_f1"], ok[best]["fuzzy_f1"]),
        },
    }


def _student_calibration(student: Answers, teacher: Answers, ids: Sequence[str]) -> Calibration:
    confs: list[float] = []
    correct: list[bool] = []
    for nid in ids:
        gold = {canonical(t) for t, _ in teacher.get(nid, [])}
        gold |= {g.replace(" ", "") for g in gold}
        seen: set[str] = set()
        for text, conf in student.get(nid, []):
            c = canonical(text)
            if not c or c in seen:
                continue
            seen.add(c)
            confs.append(conf)
            correct.append(c in gold or c.replace(" ", "") in gold)
    return calibration(confs, correct)


def _write(run: RunDir, report: dict[str, Any], cal: Calibration, out: Path) -> dict[str, str]:
    files = {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "reliability": out / "reliability.png",
    }
    report["files"] = {k: str(v) for k, v in files.items()}
    with atomic_path(files["reliability"]) as tmp:
        tmp.write_bytes(reliability_png(cal))
    with atomic_path(files["markdown"]) as tmp:
        tmp.write_text(render_markdown(report), encoding="utf-8")
    write_json(report, files["json"])
    run.update_summary("student_report", {**headline(report), "report": str(files["json"])})
    log.info("student report written to %s", out)
    return report["files"]
