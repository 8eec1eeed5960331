"""The distilled student's evaluation report: student, teacher self-agreement and peers on the same notes.

**Which notes.** The student model's ``student.json`` records its split (by a hash of the note_id,
:func:`tagging.student.data.split_of`). Only **test** notes that have a teacher answer are scored: a row
in the teacher table is an answer, an empty tag list included; a note the teacher never answered is
left out, never counted as "the teacher gave no tags". Gold is the teacher's tags (canonical texts).
The *train* notes are the split's train part with a teacher answer (the closed-set and known-tags
peers learn from them).

**Rows** (one table; each says which notes it covers, ``covers``, and how many, ``n_notes``):

- ``student``: the student's tags table on the scored test notes.
- ``teacher (self-agreement)``: a second, independent teacher answer scored against the first, on
  the doubly-answered scored test notes; ``student (doubly-answered test)`` is the student on the
  same notes. Few second answers may fall in the test split, so
  ``teacher (self-agreement, all doubly-answered)`` and ``student (all doubly-answered)`` cover every
  doubly-answered note: the student learned from the first answer of the train notes among them
  (``splits`` counts them), so its figure there is optimistic.
- peers, on the scored test notes: ``closed-set`` (:class:`~tagging.peers.ClosedSetTagger`, k=300,
  trained on the train notes' teacher tags), ``offline`` (the handbook teacher), ``yake``,
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
import numbers
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.errors import ConfigError, NotFoundError
from features.io import RunDir, atomic_path, read_json, write_json
from tagging.evaluate import evaluate_tags, gold_from_reference
from tagging.handbook_model import Handbook, load_handbook
from tagging.normalize import canonical, drop_redundant, is_cjk
from tagging.student.data import split_of
from tagging.student.metrics import held_out_ids
from tagging.types import NoteInput, Tag, Tagger, TagResult, notes_from_frame

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

PEERS: tuple[str, ...] = ("closed-set", "offline", "yake", "keybert", "hashtags", "known-tags")
ECE_BINS = 15
HASHTAG_RE = re.compile(r"[#＃]([\w·]+)")
# a letter or digit of a space-separated script: a Latin-script tag must not touch one (CJK may)
_WORD_CHAR = r"[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]"
CLOSED_SET_K = 300

Answers = dict[str, list[tuple[str, float]]]  # note_id -> [(tag text, confidence)]


# --------------------------------------------------------------------------- calibration


def _is_unit(x: object) -> bool:
    """A real number in [0, 1] (numpy scalars included; NaN and bools are not)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and 0.0 <= float(x) <= 1.0


@dataclass(frozen=True)
class ReliabilityBin:
    """One confidence bin [lower, upper): its tag count, mean confidence and accuracy (None if empty)."""

    lower: float
    upper: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Calibration:
    """Expected calibration error and the reliability curve; ``ece`` is None when there are no tags."""

    ece: float | None
    n_tags: int
    accuracy: float | None
    mean_confidence: float | None
    bins: tuple[ReliabilityBin, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration(
    confidences: Sequence[float], correct: Sequence[bool], *, n_bins: int = ECE_BINS
) -> Calibration:
    """ECE and reliability bins of predictions with ``confidences`` that were ``correct`` or not.

    Args:
        confidences: one confidence in [0, 1] per prediction.
        correct: whether each prediction was right.
        n_bins: equal-width bins over [0, 1]; a confidence of exactly 1 falls in the last bin.

    Raises:
        ConfigError: lengths differ, ``n_bins`` < 1, or a confidence is outside [0, 1] (or NaN).
    """
    if len(confidences) != len(correct):
        raise ConfigError(
            f"calibration: {len(confidences)} confidences but {len(correct)} correct flags; "
            "expected one flag per confidence"
        )
    if n_bins < 1:
        raise ConfigError(f"calibration: n_bins={n_bins!r}; expected an integer >= 1")
    bad = [c for c in confidences if not _is_unit(c)]
    if bad:
        raise ConfigError(f"calibration: confidence {bad[0]!r} is not a number in [0, 1]")
    count, conf_sum, hit_sum = [0] * n_bins, [0.0] * n_bins, [0] * n_bins
    for c, ok in zip(confidences, correct, strict=True):
        b = min(int(c * n_bins), n_bins - 1)
        count[b] += 1
        conf_sum[b] += c
        hit_sum[b] += bool(ok)
    n = len(confidences)
    bins = tuple(
        ReliabilityBin(
            lower=round(b / n_bins, 6),
            upper=round((b + 1) / n_bins, 6),
            count=count[b],
            mean_confidence=round(conf_sum[b] / count[b], 6) if count[b] else None,
            accuracy=round(hit_sum[b] / count[b], 6) if count[b] else None,
        )
        for b in range(n_bins)
    )
    if n == 0:
        return Calibration(None, 0, None, None, bins)
    ece = sum(
        abs(hit_sum[b] / count[b] - conf_sum[b] / count[b]) * count[b] / n for b in range(n_bins) if count[b]
    )
    return Calibration(
        ece=round(ece, 6),
        n_tags=n,
        accuracy=round(sum(hit_sum) / n, 6),
        mean_confidence=round(sum(conf_sum) / n, 6),
        bins=bins,
    )


def reliability_png(cal: Calibration, *, title: str = "student confidence vs teacher agreement") -> bytes:
    """Reliability diagram (bin accuracy vs mean confidence, the diagonal, bin counts) as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax, axc) = plt.subplots(
        2, 1, figsize=(5.5, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        full = [b for b in cal.bins if b.count]
        width = (cal.bins[0].upper - cal.bins[0].lower) if cal.bins else 1.0
        ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfect calibration")
        ax.bar(
            [b.lower for b in full], [b.accuracy or 0.0 for b in full], width=width, align="edge",
            alpha=0.35, color="tab:blue", edgecolor="tab:blue", label="bin accuracy",
        )  # fmt: skip
        ax.plot(
            [b.mean_confidence for b in full], [b.accuracy for b in full], "o-", color="tab:blue",
            label="accuracy at mean confidence",
        )  # fmt: skip
        ece = "n/a" if cal.ece is None else f"{cal.ece:.3f}"
        ax.set_title(f"{title}\nECE {ece} over {cal.n_tags} tags")
        ax.set_ylabel("accuracy (tag in the teacher's answer)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="best", fontsize=8)
        axc.bar(
            [b.lower for b in cal.bins],
            [b.count for b in cal.bins],
            width=width,
            align="edge",
            color="tab:gray",
        )
        axc.set_ylim(0, max([b.count for b in cal.bins] + [1]) * 1.25)
        for b in full:
            axc.text(b.lower + width / 2, b.count, str(b.count), ha="center", va="bottom", fontsize=7)
        axc.set_xlabel("student confidence")
        axc.set_ylabel("tags")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90)
        return buf.getvalue()
    finally:
        plt.close(fig)


# --------------------------------------------------------------------------- peers of our own


class HashtagTagger:
    """The creator's hashtags (``#tag`` / full-width ``＃tag`` in title and body), canonical, minus
    the boilerplate; a note without hashtags gets no tags.

    Args:
        boilerplate: phrases to leave out (e.g. ``handbook.boilerplate``).
    """

    name = "hashtags"
    version = "hashtags-v1"

    def __init__(self, boilerplate: Iterable[str] = ()) -> None:
        self._boiler = {canonical(b) for b in boilerplate}

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        out = []
        for n in notes:
            found = HASHTAG_RE.findall(n.title) + HASHTAG_RE.findall(n.body)
            texts = dict.fromkeys(canonical(h) for h in found)
            tags = tuple(Tag(t, "other", 1.0) for t in texts if t and t not in self._boiler)
            out.append(TagResult(n.note_id, tags))
        return out


class KnownTagsTagger:
    """Every known tag (from training answers) whose canonical text occurs verbatim in the note's
    canonical title + body: as whole words for Latin-script tags (CJK characters around them count as
    a word boundary), as a substring for CJK ones.
    Near-duplicates are dropped, the longer (more specific) tag kept.

    Args:
        train_tags: note_id -> tag texts of the training answers.
        boilerplate: phrases never predicted.
    """

    name = "known-tags"

    def __init__(self, train_tags: Mapping[str, Sequence[str]], *, boilerplate: Iterable[str] = ()) -> None:
        counts = Counter(canonical(t) for ts in train_tags.values() for t in ts)
        boiler = {canonical(b) for b in boilerplate}
        self._vocab = sorted(
            (t for t in counts if t and t not in boiler), key=lambda t: (-len(t), -counts[t], t)
        )
        self._word_re: dict[str, re.Pattern[str]] = {}
        self.version = f"known-tags-{len(self._vocab)}"

    def _occurs(self, tag: str, text: str) -> bool:
        if tag not in text:
            return False
        if is_cjk(tag):
            return True
        pat = self._word_re.get(tag)
        if pat is None:
            pat = self._word_re[tag] = re.compile(rf"(?<!{_WORD_CHAR}){re.escape(tag)}(?!{_WORD_CHAR})")
        return pat.search(text) is not None

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        out = []
        for n in notes:
            text = canonical(f"{n.title}\n{n.body}")
            hits = [Tag(t, "other", 1.0) for t in self._vocab if self._occurs(t, text)]
            out.append(TagResult(n.note_id, drop_redundant(hits)))
        return out


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
            if not _is_unit(conf):
                raise ConfigError(
                    f"{path}: note {nid!r} has tag confidence {conf!r}; expected a number in [0, 1]"
                )
            items.append((t["text"], float(conf)))
        out[nid] = items
    return out


def _texts(answers: Answers) -> dict[str, list[str]]:
    return {n: [t for t, _ in ts] for n, ts in answers.items()}


def _student_meta(model_dir: Path, run: RunDir) -> dict[str, Any]:
    path = model_dir / "student.json"
    if not path.exists():
        raise NotFoundError(
            f"no student model: {path} does not exist; make it with `tagllm tag distill --run {run.path}`"
        )
    meta = read_json(path)
    split = meta.get("split") if isinstance(meta, dict) else None
    ok = (
        isinstance(split, dict)
        and _is_unit(split.get("test_share"))
        and _is_unit(split.get("val_share", 0.05))
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
    path = run.path / "handbook.yaml"
    if path.exists():
        return load_handbook(path)
    log.warning("%s: no handbook.yaml; no boilerplate list, and the offline peer cannot run", run.path)
    return None


# --------------------------------------------------------------------------- peers


def _make_peer(
    name: str, hb: Handbook | None, train: Sequence[NoteInput], train_tags: Mapping[str, Sequence[str]]
) -> Tagger:
    boiler = hb.boilerplate if hb is not None else ()
    if name == "closed-set":
        from tagging.peers import ClosedSetTagger

        return ClosedSetTagger(train, train_tags, k=CLOSED_SET_K)
    if name == "offline":
        if hb is None:
            raise NotFoundError(
                "the offline teacher needs a handbook: pass --handbook or build RUN/handbook.yaml"
            )
        from tagging.teachers import make_teacher

        return make_teacher("offline", hb)
    if name == "yake":
        from tagging.peers import YakeTagger

        return YakeTagger()
    if name == "keybert":
        from tagging.peers import KeyBertTagger

        return KeyBertTagger()
    if name == "hashtags":
        return HashtagTagger(boiler)
    if name == "known-tags":
        return KnownTagsTagger(train_tags, boilerplate=boiler)
    raise ConfigError(f"peer {name!r} is not known; expected some of: {', '.join(PEERS)}")


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class _Split:
    """The notes of a report: every note (in table order), and the held-out / train ids used."""

    notes: dict[str, NoteInput]
    test_all: list[str]
    answered_test: list[str]
    test: list[str]
    train: list[str]


def _split(run: RunDir, meta: Mapping[str, Any], teacher: Answers, max_notes: int) -> _Split:
    inputs = notes_from_frame(run.read_table("notes"))
    ids = [n.note_id for n in inputs]
    test_all = held_out_ids(ids, meta, "test")
    answered = [n for n in test_all if n in teacher]
    train = [n for n in held_out_ids(ids, meta, "train") if n in teacher]
    return _Split({n.note_id: n for n in inputs}, test_all, answered, answered[:max_notes], train)


Scorer = Callable[[str, str, Mapping[str, Sequence[str]], Sequence[str]], dict[str, Any]]


def build_report(
    run: RunDir | str | os.PathLike[str],
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
    run = (run if isinstance(run, RunDir) else RunDir(run)).require()
    if max_notes < 1:
        raise ConfigError(f"max_notes={max_notes!r}; expected an integer >= 1")
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise ConfigError(f"peer {unknown[0]!r} is not known; expected some of: {', '.join(PEERS)}")
    meta = _student_meta(Path(model_dir) if model_dir is not None else run.path / "student" / "model", run)
    teacher = _read_answers(run, teacher_table, f"`tagllm tag teach --run {run.path}` or `tagllm tag import`")
    student = _read_answers(run, student_table, f"`tagllm tag apply --run {run.path}`")
    hb = _handbook(run, handbook)
    sp = _split(run, meta, teacher, max_notes)
    if not sp.test:
        raise ConfigError(
            f"--teacher-table {teacher_table!r}: none of the {len(sp.test_all)} test notes of the student's "
            "split has an answer in it; expected the teacher table the student was distilled from"
        )
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
        "split": {
            "test_share": float(meta["split"]["test_share"]),
            "val_share": float(meta["split"].get("val_share", 0.05)),
            "test_notes": len(sp.test_all),
            "answered_test_notes": len(sp.answered_test),
            "unanswered_test_notes": len(sp.test_all) - len(sp.answered_test),
            "scored_test_notes": len(sp.test),
            "max_notes": max_notes,
            "train_notes": len(sp.train),
        },
        "taggers": rows,
        **_best_peer(rows),
        "calibration": cal.as_dict(),
    }
    if write:
        out_dir = Path(out) if out is not None else run.path / "eval" / "student_report"
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
        try:
            tagger = _make_peer(name, hb, train_notes, train_tags)
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
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return rows


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


# --------------------------------------------------------------------------- outputs

HEADLINE_COLUMNS = (
    ("P", "precision"), ("R", "recall"), ("F1", "f1"), ("fuzzy F1", "fuzzy_f1"),
    ("redundancy", "redundancy"), ("boilerplate", "boilerplate_rate"), ("tags/note", "tags_per_note"),
)  # fmt: skip


def headline(report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures for summary.json ``student_report``."""
    rows = report["taggers"]

    def f1(name: str) -> float | None:
        r = rows.get(name, {})
        return r["overall"]["f1"] if "overall" in r else None

    best = report.get("best_peer")
    return {
        "n_notes": rows["student"]["n_notes"],
        "student_f1": f1("student"),
        "student_fuzzy_f1": rows["student"]["overall"]["fuzzy_f1"],
        "teacher_self_f1": f1("teacher (self-agreement)"),
        "teacher_self_f1_all": f1("teacher (self-agreement, all doubly-answered)"),
        "student_f1_all_doubly": f1("student (all doubly-answered)"),
        "best_peer": best,
        "best_peer_f1": f1(best) if best else None,
        "student_vs_best_peer": (report.get("student_vs_best_peer") or {}).get("f1_ratio"),
        "ece": report["calibration"]["ece"],
    }


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: the main table, per-category table (student vs best peer), calibration."""
    sp = report["split"]
    lines = [
        f"# Student report: {report['run']}",
        "",
        f"Gold: the teacher's tags (`{report['tables']['teacher']}`). Scored test notes: "
        f"{sp['scored_test_notes']} of {sp['test_notes']} held-out test notes "
        f"({sp['unanswered_test_notes']} have no teacher answer and are not scored; cap {sp['max_notes']}); "
        f"{sp['train_notes']} teacher-answered train notes.",
        "",
        "| tagger | notes covered | n_notes | " + " | ".join(h for h, _ in HEADLINE_COLUMNS) + " |",
        "|---|---|---:|" + "---:|" * len(HEADLINE_COLUMNS),
    ]
    for name, r in report["taggers"].items():
        if "overall" in r:
            vals = " | ".join(_fmt(r["overall"][k]) for _, k in HEADLINE_COLUMNS)
        else:
            vals = f"unavailable: {_cell(str(r.get('error')))}" + " |" * (len(HEADLINE_COLUMNS) - 1)
        lines.append(f"| {name} | {r['covers']} | {r['n_notes']} | {vals} |")
    best = report.get("best_peer")
    ratio = report.get("student_vs_best_peer") or {}
    lines += ["", f"Best peer: **{best or '–'}**; student / best peer F1 = {_fmt(ratio.get('f1_ratio'))} "
              f"(fuzzy F1: {_fmt(ratio.get('fuzzy_f1_ratio'))})."]  # fmt: skip
    lines += ["", _per_category(report, best), "", _calibration_md(report["calibration"])]
    return "\n".join(lines) + "\n"


def _per_category(report: Mapping[str, Any], best: str | None) -> str:
    student = report["taggers"]["student"]["per_category"]
    peer = report["taggers"][best]["per_category"] if best else {}
    p = best or "best peer"
    out = [
        f"## Per category: student vs {p}",
        "",
        f"| category | n_notes | student F1 | {p} F1 | student fuzzy F1 | {p} fuzzy F1 | student tags/note |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for cat, s in student.items():
        q = peer.get(cat, {})
        out.append(
            f"| {_cell(cat) or '(none)'} | {s['n_notes']} | {_fmt(s['f1'])} | {_fmt(q.get('f1'))} | "
            f"{_fmt(s['fuzzy_f1'])} | {_fmt(q.get('fuzzy_f1'))} | {_fmt(s['tags_per_note'])} |"
        )
    return "\n".join(out)


def _calibration_md(cal: Mapping[str, Any]) -> str:
    out = [
        "## Calibration of the student's confidence",
        "",
        f"ECE ({len(cal['bins'])} equal-width bins) = {_fmt(cal['ece'])} over {cal['n_tags']} tags; "
        f"accuracy {_fmt(cal['accuracy'])} (a tag is correct when it is one of the teacher's tags), "
        f"mean confidence {_fmt(cal['mean_confidence'])}.",
        "",
        "![reliability diagram](reliability.png)",
        "",
        "| confidence bin | tags | mean confidence | accuracy |",
        "|---|---:|---:|---:|",
    ]
    for b in cal["bins"]:
        if b["count"]:
            out.append(
                f"| [{b['lower']:.3f}, {b['upper']:.3f}) | {b['count']} | {_fmt(b['mean_confidence'])} | "
                f"{_fmt(b['accuracy'])} |"
            )
    return "\n".join(out)


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
