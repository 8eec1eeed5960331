"""Benchmark the student: held-out tag quality vs the teacher, ground truth and peers; throughput.

    python -m tagging.student.bench --run RUN_DIR [--model DIR] [--json] [--no-peers]

Quality is measured on the held-out *test* notes of the model's split (never trained on, never used
for early stopping). Peers: YAKE, KeyBERT and the closed-set classifier (trained on the same split's
training notes with the gold tags). Throughput: notes/s on the same note sample for the student (at
``--batch-size``), the offline handbook teacher and KeyBERT, the median of ``--repeats`` runs each,
and the ratios.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

__all__ = ["bench", "main"]

log = logging.getLogger(__name__)


def _rate(fn: Callable[[], Any], n: int, repeats: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(n / (time.perf_counter() - t0))
    return {"notes_per_s": round(statistics.median(runs), 1), "runs": [round(r, 1) for r in runs]}


def bench(
    run_dir: str,
    *,
    model_dir: str | None = None,
    peers: bool = True,
    max_notes: int = 1000,
    sample: int = 256,
    repeats: int = 3,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Quality and throughput figures (see module docstring)."""
    import pandas as pd
    import torch

    from features.io import RunDir
    from tagging.handbook_model import load_handbook
    from tagging.peers import ClosedSetTagger, KeyBertTagger, YakeTagger
    from tagging.pipeline import TEACHER_TABLE, gold_for_run
    from tagging.student.apply import StudentTagger
    from tagging.student.metrics import held_out_ids, score
    from tagging.teachers import make_teacher
    from tagging.types import NoteInput, notes_from_frame

    run = RunDir(run_dir).require()
    hb = load_handbook(run.path / "handbook.yaml")
    notes = run.read_table("notes")
    inputs = notes_from_frame(notes)
    mdir = Path(model_dir) if model_dir else run.path / "student" / "model"
    student = StudentTagger.load(mdir, handbook=hb, batch_size=batch_size, device="auto")
    ids = [n.note_id for n in inputs]
    test_set = set(held_out_ids(ids, student.meta, "test")[:max_notes])
    train_set = set(held_out_ids(ids, student.meta, "train"))
    test = [n for n in inputs if n.note_id in test_set]
    train = [n for n in inputs if n.note_id in train_set]
    test_ids = [n.note_id for n in test]
    gold, gold_name = gold_for_run(run, notes, hb)
    tt = pd.read_parquet(run.table_path(TEACHER_TABLE)) if run.has_table(TEACHER_TABLE) else None

    def preds(results: Sequence[Any]) -> dict[str, list[str]]:
        return {r.note_id: [t.text for t in r.tags] for r in results}

    out: dict[str, Any] = {
        "run": str(run.path),
        "model": str(mdir),
        "model_version": student.version,
        "parameters": sum(p.numel() for p in student.model.parameters()),
        "grounded": bool(student.meta.get("grounded")),
        "eos_penalty": student.eos_penalty,
        "gold": gold_name,
        "split": {"test": len(test), "train": len(train), **student.meta.get("split", {})},
        "device": student.device,
        "torch_threads": torch.get_num_threads(),
    }
    s = score(
        preds(student.tag(test)), note_ids=test_ids, notes=notes, handbook=hb, teacher_table=tt, gold=gold
    )
    quality: dict[str, Any] = {"student": s.get("vs_gold"), "student_vs_teacher": s.get("vs_teacher")}
    if student.constraint.grounded:  # ablation: the same model, decoding over the category's values
        ablation = StudentTagger(
            student.model, student.tokenizer, student.meta, handbook=hb, batch_size=batch_size, grounded=False
        )
        quality["student_ungrounded"] = score(
            preds(ablation.tag(test)), note_ids=test_ids, notes=notes, handbook=hb, gold=gold
        )["vs_gold"]
    if "teacher_vs_gold" in s:
        quality["teacher"] = s["teacher_vs_gold"]
        t_f1 = s["teacher_vs_gold"]["f1"]
        out["student_over_teacher_f1"] = round(s["vs_gold"]["f1"] / t_f1, 4) if t_f1 else None
    if peers:
        train_tags = {
            n.note_id: sorted(next(iter(sorted(g))) for g in gold.get(n.note_id, [])) for n in train
        }
        makers: dict[str, Callable[[], Any]] = {
            "yake": YakeTagger,
            "keybert": KeyBertTagger,
            "closed-set": lambda: ClosedSetTagger(train, train_tags),
        }
        for name, make in makers.items():
            try:
                res = make().tag(test)
            except Exception as exc:  # a peer that cannot run is reported, not fatal
                quality[name] = {"error": f"{type(exc).__name__}: {exc}"}
                continue
            quality[name] = score(preds(res), note_ids=test_ids, notes=notes, handbook=hb, gold=gold)[
                "vs_gold"
            ]
    out["quality"] = quality

    sample_notes: list[NoteInput] = inputs[:sample]
    thr: dict[str, Any] = {"sample": len(sample_notes), "repeats": repeats, "batch_size": batch_size}
    thr["student"] = _rate(lambda: student.tag(sample_notes), len(sample_notes), repeats)
    offline = make_teacher("offline", hb)
    thr["offline_teacher"] = _rate(lambda: offline.tag(sample_notes), len(sample_notes), repeats)
    try:
        kb = KeyBertTagger()
        thr["keybert"] = _rate(lambda: kb.tag(sample_notes), len(sample_notes), repeats)
    except Exception as exc:  # reported, not fatal
        thr["keybert"] = {"error": f"{type(exc).__name__}: {exc}"}
    st = thr["student"]["notes_per_s"]
    for peer in ("offline_teacher", "keybert"):
        rate = thr[peer].get("notes_per_s")
        thr[f"student_over_{peer}"] = round(st / rate, 3) if rate else None
    out["throughput"] = thr
    return out


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None)
@click.option("--peers/--no-peers", default=True, show_default=True)
@click.option("--max-notes", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--sample", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def main(
    run_dir: str, model_dir: str | None, peers: bool, max_notes: int, sample: int, repeats: int,
    batch_size: int, as_json: bool,
) -> None:  # fmt: skip
    """Student benchmark: held-out quality vs teacher, ground truth and peers; throughput."""
    if not as_json:
        logging.basicConfig(level=logging.INFO)
    res = bench(
        run_dir, model_dir=model_dir, peers=peers, max_notes=max_notes, sample=sample, repeats=repeats,
        batch_size=batch_size,
    )  # fmt: skip
    click.echo(json.dumps(res, indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":  # pragma: no cover
    main()
