"""Run-directory stages of tagging: build the handbook, run a teacher, evaluate tags.

The CLI (``tagllm tag ...``) and the demo call these; each returns the figures that become its
section of ``summary.json`` (and writes that section).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from features.errors import ConfigError, NotFoundError
from features.io import RunDir
from tagging.handbook_model import Handbook, load_handbook

__all__ = ["TEACHER_TABLE", "build_run_handbook", "evaluate_run", "gold_for_run", "teach_run"]

log = logging.getLogger(__name__)

TEACHER_TABLE = "teacher_tags"


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
    path = save_handbook(hb, out or run.path / "handbook.yaml")
    hb = load_handbook(path)
    figures: dict[str, Any] = {
        "path": str(path),
        "version": hb.version,
        "categories": len(hb.categories),
        "dimensions": sum(len(s.dimensions) for s in hb.categories.values()),
        "values": sum(len(d.values) for s in hb.categories.values() for d in s.dimensions),
        "boilerplate": len(hb.boilerplate),
    }
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
    hb = load_handbook(handbook_path or run.path / "handbook.yaml")
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
    hb = load_handbook(handbook_path or run.path / "handbook.yaml")
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
