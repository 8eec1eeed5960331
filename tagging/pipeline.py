"""Run-directory stages of tagging: build the handbook, run a teacher, evaluate tags.

The CLI (``tagllm tag ...``) and the demo call these; each returns the figures that become its
section of ``summary.json`` (and writes that section).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from features.errors import ConfigError, NotFoundError
from features.io import RunDir
from tagging.handbook_model import Handbook, load_handbook
from tagging.student.files import ModelFiles

if TYPE_CHECKING:
    from tagging.ray_apply import RayApplyConfig
    from tagging.student.config import StudentConfig
    from tagging.types import NoteInput

__all__ = [
    "STUDENT_TABLE",
    "TEACHER_TABLE",
    "apply_run",
    "build_run_handbook",
    "distill_run",
    "evaluate_run",
    "gold_for_run",
    "teach_run",
]

log = logging.getLogger(__name__)

TEACHER_TABLE = "teacher_tags"
STUDENT_TABLE = "tags"


def _ground_truth(run: RunDir, name: str) -> pd.DataFrame | None:
    try:
        return run.read_ground_truth(name)
    except NotFoundError:
        return None


def gold_for_run(run: RunDir, notes: pd.DataFrame, handbook: Handbook) -> tuple[dict[str, Any], str]:
    """Reference tags to score against: the synthetic ground truth when present, else the notes'
    ``reference_tags`` cleaned through the handbook.

    Raises:
        NotFoundError: the run has neither.
    """
    from tagging.evaluate import gold_from_reference, gold_from_synthetic
    from tagging.teachers.reference import clean_reference_tags

    attrs, tax = _ground_truth(run, "note_attributes"), _ground_truth(run, "taxonomy")
    if attrs is not None and tax is not None:
        return gold_from_synthetic(attrs, tax), "note_attributes"
    if "reference_tags" in notes.columns:
        ref = {
            str(n): [t.text for t in clean_reference_tags(list(r) if r is not None else [], handbook, str(c))]
            for n, r, c in zip(notes["note_id"], notes["reference_tags"], notes["category"], strict=True)
        }
        return gold_from_reference(ref), "cleaned reference_tags"
    raise NotFoundError(
        f"{run.path}: no ground truth (note_attributes) and no reference_tags to evaluate against"
    )


def _read_yaml_mapping(path: str | os.PathLike[str] | None, what: str) -> dict[str, Any]:
    if path is None:
        return {}
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{what} {path}: expected a YAML mapping of option: value, got {type(raw).__name__}"
        )
    return raw


def build_run_handbook(
    run_dir: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Build the handbook from a run's notes (and interactions); write YAML and the ``handbook`` section.

    Args:
        run_dir: prepared run directory.
        config: HandbookConfig fields (override those read from ``config_path``).
        config_path: YAML of HandbookConfig fields.
        out: where to write (default RUN_DIR/handbook.yaml).

    Returns:
        The summary figures (path, version, counts, dimension recovery when ground truth exists).
    """
    from tagging.evaluate import dimension_recovery
    from tagging.handbook import HandbookConfig, build_handbook
    from tagging.handbook_model import save_handbook

    run = RunDir(run_dir).require()
    cfg = HandbookConfig.from_mapping(
        {**_read_yaml_mapping(config_path, "handbook config"), **(config or {})}
    )
    notes = run.read_table("notes")
    inter = run.read_table("interactions") if run.has_table("interactions") else None
    hb = build_handbook(notes, inter, config=cfg, built_from=str(run.path))
    path = save_handbook(hb, out or run.handbook)
    hb = load_handbook(path)
    figures: dict[str, Any] = {"path": str(path), **hb.figures()}
    tax = _ground_truth(run, "taxonomy")
    if tax is not None:
        figures["dimension_recovery"] = dimension_recovery(hb, tax).summary()
    run.update_summary("handbook", figures)
    log.info("handbook %s written to %s (%d dimensions)", hb.version, path, figures["dimensions"])
    return figures


def teach_run(
    run_dir: str | os.PathLike[str],
    *,
    teacher: str = "offline",
    sample: int | None = None,
    handbook_path: str | os.PathLike[str] | None = None,
    teacher_options: Mapping[str, Any] | None = None,
    teacher_config_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run a teacher over a run's notes through the cached, resumable runner; score it; write the
    ``teacher`` section.

    The tags land in RUN_DIR/tables/teacher_tags.parquet (failures in teacher_tags_failures.parquet).

    Raises:
        ConfigError: unknown teacher, bad option or ``sample`` < 1. NotFoundError: no handbook yet.
    """
    from tagging.evaluate import evaluate_tags, tag_texts
    from tagging.runner import run_teacher
    from tagging.teachers import make_teacher
    from tagging.types import notes_from_frame

    run = RunDir(run_dir).require()
    hb = load_handbook(handbook_path or run.handbook)
    notes = run.read_table("notes")
    if sample is not None:
        if sample < 1:
            raise ConfigError(f"sample must be >= 1, got {sample!r}")
        notes = notes.head(sample)
    options = {**_read_yaml_mapping(teacher_config_path, "teacher config"), **(teacher_options or {})}
    if teacher == "reference":
        options.setdefault("notes", notes)
    tagger = make_teacher(teacher, hb, **options)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(notes), desc=f"teacher {tagger.name}", unit="note")
    try:
        summary = run_teacher(
            tagger,
            notes_from_frame(notes),
            run_dir=run.path,
            out_name=TEACHER_TABLE,
            progress=(lambda done, total: bar.update(done - bar.n)) if bar is not None else None,
        )
    finally:
        if bar is not None:
            bar.close()
    pred = tag_texts(pd.read_parquet(run.table_path(TEACHER_TABLE)))
    fail_path = run.table_path(f"{TEACHER_TABLE}_failures")
    failed = len(pd.read_parquet(fail_path)) if fail_path.exists() else 0
    figures: dict[str, Any] = {
        "teacher": tagger.name,
        "version": tagger.version,
        "path": str(run.table_path(TEACHER_TABLE)),
        "notes": len(pred),
        "failed": failed,
        "run": summary.as_dict(),
    }
    try:
        gold, gold_name = gold_for_run(run, notes, hb)
    except NotFoundError:
        gold = None
    if gold is not None:
        cats = dict(zip(notes["note_id"].astype(str), notes["category"].astype(str), strict=True))
        q = evaluate_tags(pred, gold, cats, note_ids=list(pred), boilerplate=hb.boilerplate, handbook=hb)[
            "overall"
        ]
        figures.update(
            gold=gold_name,
            f1=q["f1"],
            precision=q["precision"],
            recall=q["recall"],
            redundancy=q["redundancy"],
        )
        log.info("teacher %s: %d notes, F1 %.3f vs %s", tagger.name, len(pred), q["f1"], gold_name)
    run.update_summary("teacher", figures)
    return figures


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    taggers: Sequence[str] = ("offline",),
    peers: bool = True,
    test_share: float = 0.3,
    max_notes: int = 2000,
    handbook_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Score teachers and peers (YAKE, KeyBERT, closed-set) on one held-out split; write ``tag_eval``."""
    from tagging.peers import evaluation_report

    run = RunDir(run_dir).require()
    hb = load_handbook(handbook_path or run.handbook)
    notes = run.read_table("notes")
    gold, gold_name = gold_for_run(run, notes, hb)
    report = evaluation_report(
        notes, gold, hb, taggers=taggers, peers=peers, test_share=test_share, max_notes=max_notes
    )
    report["gold"] = gold_name
    run.update_summary(
        "tag_eval",
        {
            k: v["overall"] if isinstance(v, dict) and "overall" in v else v
            for k, v in report["taggers"].items()
        },
    )
    return report


# --------------------------------------------------------------------------- student


def _student_inputs(
    run: RunDir, handbook_path: str | os.PathLike[str] | None
) -> tuple[pd.DataFrame, Handbook | None]:
    notes = run.read_table("notes")
    path = Path(handbook_path) if handbook_path is not None else run.handbook
    if handbook_path is not None or path.exists():
        return notes, load_handbook(path)
    log.warning("%s: no handbook; the student's tags are normalized without synonyms/boilerplate", run.path)
    return notes, None


def _held_out_scores(
    run: RunDir,
    notes: pd.DataFrame,
    hb: Handbook | None,
    pred: Mapping[str, Sequence[str]],
    test_ids: Sequence[str],
    teacher_table: pd.DataFrame | None,
) -> dict[str, Any]:
    from tagging.student.metrics import score

    gold = None
    if hb is not None:
        try:
            gold, _ = gold_for_run(run, notes, hb)
        except NotFoundError:
            gold = None
    return score(pred, note_ids=test_ids, notes=notes, handbook=hb, teacher_table=teacher_table, gold=gold)


def _teacher_tags(tt: pd.DataFrame) -> dict[str, list[Any]]:
    """A teacher tags table -> note_id -> [Tag] (an empty list is an answer: "no tags")."""
    from tagging.types import Tag

    return {
        str(n): [
            Tag(t["text"], t["dimension"], float(t["confidence"])) for t in (ts if ts is not None else [])
        ]
        for n, ts in zip(tt["note_id"], tt["tags"], strict=True)
    }


def _student_section(run: RunDir, figures: Mapping[str, Any]) -> dict[str, Any]:
    section = dict(run.summary().get("student", {})) if run.summary_path.exists() else {}
    section.update(figures)
    for prefix, held in (
        ("", figures.get("held_out", {})),
        ("ungrounded_", figures.get("held_out_ungrounded", {})),
    ):
        for key, part in (
            ("f1_vs_teacher", "vs_teacher"),
            ("f1_vs_gold", "vs_gold"),
            ("teacher_f1_vs_gold", "teacher_vs_gold"),
        ):
            if part in held and not (prefix and key.startswith("teacher")):
                section[prefix + key] = held[part]["f1"]
    run.update_summary("student", section)
    return section


def _read_teacher_table(run: RunDir, teacher_table: str) -> pd.DataFrame:
    if not run.has_table(teacher_table):
        have = [p.stem for p in sorted(run.tables_dir.glob("*.parquet"))]
        raise NotFoundError(
            f"--teacher-table {teacher_table!r}: no table {run.table_path(teacher_table)} "
            f"(present: {', '.join(have) or 'none'}); run `tagllm tag teach --run {run.path}` "
            "or `tagllm tag import` first"
        )
    return pd.read_parquet(run.table_path(teacher_table))


def _train_student(
    cfg: StudentConfig,
    inputs: list[NoteInput],
    teacher: dict[str, list[Any]],
    work: Path,
    out: Path,
    hb: Handbook | None,
    version: str,
    progress: bool,
) -> tuple[Any, Callable[..., Path]]:
    """Train the student of ``cfg.arch``; returns its result and its model-card writer."""
    result: Any
    if cfg.arch == "scorer":
        from tagging.student.scorer_train import train_scorer
        from tagging.student.scorer_train import write_scorer_card as card

        result = train_scorer(
            inputs, teacher, work_dir=work, out_dir=out, config=cfg, handbook=hb, teacher_version=version,
            progress=progress,
        )  # fmt: skip
    else:
        from tagging.student.distill import distill
        from tagging.student.distill import write_model_card as card

        result = distill(
            inputs, teacher, work_dir=work, out_dir=out, config=cfg, handbook=hb, teacher_version=version,
            progress=progress,
        )  # fmt: skip
    return result, card


def _score_held_out(
    run: RunDir,
    notes: pd.DataFrame,
    hb: Handbook | None,
    inputs: list[NoteInput],
    out: Path,
    cfg: StudentConfig,
    tt: pd.DataFrame,
) -> dict[str, Any]:
    """Tag the held-out test notes with the exported student and score them."""
    from tagging.student import load_student
    from tagging.student.metrics import held_out_ids

    figures: dict[str, Any] = {}
    tagger = load_student(out, handbook=hb, device=cfg.device, threads=cfg.scorer.threads)
    test_ids = set(held_out_ids([n.note_id for n in inputs], tagger.meta))
    test = [n for n in inputs if n.note_id in test_ids]
    pred = {r.note_id: [t.text for t in r.tags] for r in tagger.tag(test)}
    figures["held_out"] = _held_out_scores(run, notes, hb, pred, [n.note_id for n in test], tt)
    figures["notes_per_s"] = round(tagger.last_notes_per_s, 1)
    if cfg.arch == "scorer":  # learning, not selection: no candidate from the note's own words
        ung = load_student(out, handbook=hb, device=cfg.device, threads=cfg.scorer.threads, grounded=False)
        pred_u = {r.note_id: [t.text for t in r.tags] for r in ung.tag(test)}
        figures["held_out_ungrounded"] = _held_out_scores(
            run, notes, hb, pred_u, [n.note_id for n in test], tt
        )
    return figures


def distill_run(
    run_dir: str | os.PathLike[str],
    *,
    teacher_table: str = TEACHER_TABLE,
    config: Mapping[str, Any] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    handbook_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    evaluate: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Distill the teacher's tags (RUN_DIR/tables/<teacher_table>.parquet) into the student.

    Checkpoints live in RUN_DIR/student/ (a killed run resumes); the model is exported to
    ``model_dir`` (default RUN_DIR/student/model). The held-out test notes are then tagged and scored
    against the teacher and the ground truth; the figures go to summary.json ``student``.

    Args:
        run_dir: a run with notes and a teacher table.
        teacher_table: the teacher's tags table name.
        config: StudentConfig fields; ``overrides`` (epochs, batch_size, max_minutes, device, seed,
            ...) win over it, and it over ``config_path`` (YAML).
        evaluate: score the held-out notes after training.

    Returns:
        ``{"distill": {...}, "held_out": {"vs_teacher", "vs_gold", "teacher_vs_gold"}, "notes_per_s"}``.

    Raises:
        NotFoundError: no teacher table. ConfigError: a bad option (named in the message).
    """
    from tagging.student.config import StudentConfig
    from tagging.types import notes_from_frame

    run = RunDir(run_dir).require()
    cfg = StudentConfig.from_mapping(
        {**_read_yaml_mapping(config_path, "student config"), **(config or {})}, **overrides
    )
    tt = _read_teacher_table(run, teacher_table)
    notes, hb = _student_inputs(run, handbook_path)
    teacher = _teacher_tags(tt)
    version = f"{tt['tagger'].iloc[0] if len(tt) else ''}:{tt['tagger_version'].iloc[0] if len(tt) else ''}"
    out = Path(model_dir) if model_dir is not None else run.student_model
    inputs = notes_from_frame(notes)
    work = run.student_work
    result, card = _train_student(cfg, inputs, teacher, work, out, hb, version, progress)
    figures: dict[str, Any] = {"distill": {k: v for k, v in result.as_dict().items() if k != "history"}}
    if evaluate:
        figures |= _score_held_out(run, notes, hb, inputs, out, cfg, tt)
        meta = json.loads(ModelFiles(out).meta.read_text(encoding="utf-8"))
        card(out, meta, {**figures["held_out"], "notes_per_s": figures["notes_per_s"]})
    log.info("student distilled: %s", figures)
    _student_section(run, figures)
    return figures


def _tag_all(
    tagger: Any, inputs: list[NoteInput], batch_size: int, progress: bool
) -> tuple[list[Any], float]:
    """Tag ``inputs`` in chunks (with a progress bar when ``progress``); returns results and seconds."""
    import time

    from tagging.student import tag_in_chunks

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(inputs), desc="student", unit="note")
    t0 = time.perf_counter()
    try:
        results = tag_in_chunks(tagger, inputs, batch_size, bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return results, time.perf_counter() - t0


def _apply_local(
    notes: pd.DataFrame,
    hb: Handbook | None,
    path: Path,
    *,
    batch_size: int,
    num_beams: int,
    device: str,
    progress: bool,
    threads: int,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The single-process engine: the tags table and its figures."""
    from tagging.student import load_student
    from tagging.types import notes_from_frame, results_to_tags_table

    tagger = load_student(
        path, handbook=hb, batch_size=batch_size, num_beams=num_beams, device=device, threads=threads
    )
    results, seconds = _tag_all(tagger, notes_from_frame(notes), batch_size, progress)
    table = results_to_tags_table(results, tagger=tagger.name, version=tagger.version)
    figures = {
        "engine": "local",
        "tagger_version": tagger.version,
        "device": tagger.device,
        "threads": getattr(tagger, "threads", None),
        "seconds": seconds,
    }
    return table, figures


def _apply_ray(
    run: RunDir,
    notes: pd.DataFrame,
    path: Path,
    handbook_path: str | os.PathLike[str] | None,
    ray_config: RayApplyConfig,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The Ray Data engine (tagging.ray_apply): the tags table and its figures."""
    from tagging.ray_apply import ray_tag_table
    from tagging.student.apply import model_version

    hb_path = Path(handbook_path) if handbook_path is not None else run.handbook
    table, figs = ray_tag_table(run, notes, path, hb_path if hb_path.exists() else None, ray_config)
    figures = {
        "engine": "ray",
        "tagger_version": model_version(path),
        "device": figs.device,
        "threads": max(1, int(ray_config.cpus_per_actor)),
        "seconds": figs.seconds,
        "ray": figs.as_dict(),
    }
    return table, figures


def apply_run(
    run_dir: str | os.PathLike[str],
    *,
    model_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    num_beams: int = 1,
    device: str = "auto",
    handbook_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    threads: int = 0,
    engine: str = "local",
    ray_config: RayApplyConfig | None = None,
) -> dict[str, Any]:
    """Tag every note of a run with the student; write RUN_DIR/tables/tags.parquet and tag_vocab.json.

    The ``tags`` table (tagger ``student``, tagger_version ``student-<weights hash>``) is written
    atomically; the vocabulary extends an existing RUN_DIR/tag_vocab.json (ids never change).
    Held-out notes are scored against the teacher and the ground truth. ``engine="ray"`` tags on
    Ray Data (:mod:`tagging.ray_apply`; ``ray_config`` sets the cluster, partitions and actors; its
    batch size and beams are this call's) and gives the same table, resumable per partition.

    Returns:
        ``{"apply": {notes, notes_per_s, seconds, tags_path, vocab_path, vocab_size, ...}, "held_out": {...}}``.

    Raises:
        NotFoundError: no model folder. ConfigError: bad batch size, beams, device or engine.
        MissingDependencyError: ``engine="ray"`` without ray installed.
    """
    from features.io import write_parquet
    from tagging.normalize import TagVocabulary
    from tagging.student.files import ModelFiles

    if engine not in ("local", "ray"):
        raise ConfigError(f"--engine must be one of: local, ray; got {engine!r}")
    run = RunDir(run_dir).require()
    notes, hb = _student_inputs(run, handbook_path)
    path = Path(model_dir) if model_dir is not None else run.student_model
    if engine == "ray":
        from tagging.ray_apply import RayApplyConfig

        cfg = dataclasses.replace(ray_config or RayApplyConfig(), batch_size=batch_size, num_beams=num_beams)
        ModelFiles.of(path)  # a missing folder fails here, before a cluster starts
        table, info = _apply_ray(run, notes, path, handbook_path, cfg)
    else:
        table, info = _apply_local(
            notes, hb, path, batch_size=batch_size, num_beams=num_beams, device=device,
            progress=progress, threads=threads,
        )  # fmt: skip
    tags_path = write_parquet(table, run.table_path(STUDENT_TABLE))
    vocab_path = run.tag_vocab
    base = TagVocabulary.load(vocab_path) if vocab_path.exists() else None
    vocab = TagVocabulary.from_tables([table], base=base)
    vocab.save(vocab_path)
    seconds = float(info.pop("seconds"))
    rate = len(notes) / seconds if seconds > 0 else 0.0
    log.info("student tagged %d notes in %.1fs (%.1f notes/s)", len(notes), seconds, rate)
    figures: dict[str, Any] = {
        "apply": {
            "notes": len(notes),
            **info,
            "batch_size": batch_size,
            "num_beams": num_beams,
            "seconds": round(seconds, 2),
            "notes_per_s": round(rate, 1),
            "tags_per_note": round(sum(len(t) for t in table["tags"]) / max(len(table), 1), 3),
            "tags_path": str(tags_path),
            "vocab_path": str(vocab_path),
            "vocab_size": len(vocab),
            "vocab_version": vocab.version,
        },
        "notes_per_s": round(rate, 1),
    }
    figures["held_out"] = _held_out_from_table(run, notes, hb, table, path)
    _student_section(run, figures)
    return figures


def _held_out_from_table(
    run: RunDir, notes: pd.DataFrame, hb: Handbook | None, table: pd.DataFrame, model_dir: Path
) -> dict[str, Any]:
    """Held-out notes' tags (from the written table) scored against the teacher and the ground truth."""
    from tagging.student.metrics import held_out_ids

    meta = json.loads(ModelFiles(model_dir).meta.read_text(encoding="utf-8"))
    test_ids = set(held_out_ids([str(n) for n in notes["note_id"]], meta))
    pred = {
        str(nid): [t["text"] for t in tags]
        for nid, tags in zip(table["note_id"], table["tags"], strict=True)
        if str(nid) in test_ids
    }
    tt = pd.read_parquet(run.table_path(TEACHER_TABLE)) if run.has_table(TEACHER_TABLE) else None
    return _held_out_scores(run, notes, hb, pred, sorted(test_ids), tt)
