"""Held-out evaluation of the student: the teacher's metrics, against the teacher and the ground truth."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from tagging.evaluate import evaluate_tags, gold_from_reference, tag_texts
from tagging.handbook_model import Handbook
from tagging.student.data import split_of

__all__ = ["HEADLINE", "held_out_ids", "score"]

HEADLINE = ("f1", "precision", "recall", "fuzzy_f1", "redundancy", "tags_per_note")


def held_out_ids(note_ids: Sequence[str], meta: Mapping[str, Any], part: str = "test") -> list[str]:
    """The notes of ``part`` under the split recorded in a model's ``student.json``."""
    split = meta.get("split", {})
    ts, vs = float(split.get("test_share", 0.15)), float(split.get("val_share", 0.05))
    return [n for n in note_ids if split_of(n, test_share=ts, val_share=vs) == part]


def score(
    pred: Mapping[str, Sequence[str]],
    *,
    note_ids: Sequence[str],
    notes: pd.DataFrame,
    handbook: Handbook | None,
    teacher_table: pd.DataFrame | None = None,
    gold: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Headline metrics of ``pred`` on ``note_ids`` vs the teacher (as gold) and vs ``gold``.

    Against the teacher, only notes with a teacher answer are scored (an empty answer is an answer;
    a note the teacher never saw is not "the teacher gave no tags").

    Returns:
        ``{"vs_teacher": {...}, "vs_gold": {...}, "teacher_vs_gold": {...}}`` (keys present when
        their inputs are given); each holds :data:`HEADLINE` plus ``n_notes``.
    """
    cats = dict(zip(notes["note_id"].astype(str), notes["category"].astype(str), strict=True))
    boiler = handbook.boilerplate if handbook is not None else ()

    def run(p: Mapping[str, Sequence[str]], g: Mapping[str, Any]) -> dict[str, Any]:
        q = evaluate_tags(p, g, cats, note_ids=note_ids, boilerplate=boiler, handbook=handbook)["overall"]
        return {"n_notes": q["n_notes"], **{k: q[k] for k in HEADLINE}}

    out: dict[str, Any] = {}
    teacher = tag_texts(teacher_table) if teacher_table is not None else None
    if teacher is not None:
        answered = [n for n in note_ids if n in teacher]
        q = evaluate_tags(
            pred, gold_from_reference(teacher), cats, note_ids=answered, boilerplate=boiler, handbook=handbook
        )["overall"]
        out["vs_teacher"] = {"n_notes": q["n_notes"], **{k: q[k] for k in HEADLINE}}
    if gold is not None:
        out["vs_gold"] = run(pred, gold)
        if teacher is not None:
            out["teacher_vs_gold"] = run(teacher, gold)
    return out
