"""Sequence-level distillation: train the student on the teacher's tags, with early stopping and
resumable checkpoints.

Layout (``work_dir`` is RUN_DIR/student by default)::

    work_dir/tokenizer/            the BPE trained on the training notes (kept so a resume reuses it)
    work_dir/checkpoints/last.pt   model + optimizer + schedule + position in the epoch + RNG states
    work_dir/checkpoints/best.pt   the weights with the lowest validation loss so far
    work_dir/split.parquet         note_id -> train / val / test (by hash of note_id)
    out_dir/                       the exported model: model.safetensors, config.json, tokenizer,
                                   student.json (format, constraints, split, teacher), README.md

``last.pt`` is written atomically every ``checkpoint_every`` steps and at each epoch end; a run that
is killed and started again with the same architecture, data and seed continues from it (the epoch's
batch order is a function of seed and epoch, so the remaining batches are the same ones). The time
budget ``max_minutes`` counts the time of every resumed part.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from features.errors import ConfigError, NotFoundError
from features.io import atomic_dir, atomic_path, write_json
from tagging.handbook_model import Handbook
from tagging.normalize import canonical
from tagging.student.config import StudentConfig, resolve_device
from tagging.student.data import Example, note_source, split_of
from tagging.student.distill_loop import TrainLoop, TrainState, lr_factor
from tagging.student.files import FINGERPRINT, TOKENIZER, ModelFiles, WorkFiles
from tagging.student.format import Allowed, clean_dimension, encode_target, is_grounded, source_key
from tagging.types import NoteInput, Tag

__all__ = ["DistillResult", "allowed_values", "distill", "grounded_share", "write_model_card"]

log = logging.getLogger(__name__)

FORMAT_VERSION = "student-format-1"


@dataclass(frozen=True)
class DistillResult:
    """What one :func:`distill` call did (``resumed_from_step`` > 0 when it continued a checkpoint)."""

    model_dir: str
    parameters: int
    device: str
    steps: int
    epochs_done: float
    best_val_loss: float
    best_step: int
    stopped: str
    resumed_from_step: int
    train_seconds: float
    n_train: int
    n_val: int
    n_test: int
    grounded: bool
    grounded_share: float
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def allowed_values(
    notes: Sequence[NoteInput],
    teacher: Mapping[str, Sequence[Tag]],
    handbook: Handbook | None,
) -> dict[str, dict[str, dict[str, list[str]]]]:
    """category -> dimension -> value -> surface forms the decoder may emit: the handbook's values
    (with their synonyms) and the teacher's tags of ``notes``."""
    out: dict[str, dict[str, dict[str, list[str]]]] = {}
    if handbook is not None:
        for cat, section in handbook.categories.items():
            for dim in section.dimensions:
                vals = out.setdefault(cat, {}).setdefault(clean_dimension(dim.name), {})
                for v in dim.values:
                    if canonical(v.value):
                        vals[canonical(v.value)] = sorted({canonical(f) for f in v.synonyms if canonical(f)})
    for note in notes:
        for t in teacher.get(note.note_id, ()):
            if canonical(t.text):
                dims = out.setdefault(note.category, {})
                dims.setdefault(clean_dimension(t.dimension), {}).setdefault(canonical(t.text), [])
    return out


def grounded_share(
    notes: Sequence[NoteInput], teacher: Mapping[str, Sequence[Tag]], allowed: Allowed
) -> float:
    """Share of the teacher's tags (on ``notes``) with a surface form in their note's text."""
    n = hit = 0
    for note in notes:
        key = source_key(note_source(note))
        dims = allowed.get(note.category, {})
        for t in teacher.get(note.note_id, ()):
            forms = dims.get(clean_dimension(t.dimension), {}).get(canonical(t.text), [])
            n += 1
            hit += is_grounded((t.text, *forms), key)
    return hit / n if n else 0.0


def _grounded_tags(note: NoteInput, tags: Sequence[Tag], allowed: Allowed) -> list[Tag]:
    key = source_key(note_source(note))
    dims = allowed.get(note.category, {})
    return [
        t for t in tags
        if is_grounded((t.text, *dims.get(clean_dimension(t.dimension), {}).get(canonical(t.text), [])), key)
    ]  # fmt: skip


def _fingerprint(
    cfg: StudentConfig, teacher_version: str, train_ids: Sequence[str], *, copy_head: bool = False
) -> str:
    arch = cfg.architecture() | {"copy_head": copy_head}  # the resolved choice, not "auto"
    payload = json.dumps([arch, teacher_version, sorted(train_ids)], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _load_or_train_tokenizer(path: Path, texts: list[str], vocab_size: int, fingerprint: str) -> Any:
    """The tokenizer of this configuration: reused when its fingerprint matches, else trained."""
    from transformers import PreTrainedTokenizerFast

    from tagging.student.tokenizer import train_tokenizer

    stamp = path / FINGERPRINT
    if (path / TOKENIZER).exists() and stamp.exists() and stamp.read_text().strip() == fingerprint:
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    tok = train_tokenizer(texts, vocab_size=vocab_size)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(str(tmp))
    (tmp / FINGERPRINT).write_text(fingerprint + "\n")
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return tok


def _encode(
    tok: Any,
    notes: Sequence[NoteInput],
    teacher: Mapping[str, Sequence[Tag]],
    cfg: StudentConfig,
    copy_head: bool,
) -> list[Example]:
    sources = tok([note_source(n, lowercase=copy_head) for n in notes], add_special_tokens=False)["input_ids"]
    out = []
    for note, src in zip(notes, sources, strict=True):
        src = [*list(src)[: cfg.max_source_tokens - 1], tok.eos_token_id]
        tgt = encode_target(tok, teacher.get(note.note_id, ()), cfg.max_target_tokens, word_initial=copy_head)
        out.append(Example(note.note_id, tuple(src), tuple(tgt)))
    return out


@dataclass(frozen=True)
class _Data:
    """The notes and targets of one distillation, after the split and the grounding decision."""

    train_notes: list[NoteInput]
    val_notes: list[NoteInput]
    split: dict[str, str]
    teacher: Mapping[str, Sequence[Tag]]
    allowed: dict[str, dict[str, dict[str, list[str]]]]
    share: float
    grounded: bool
    copy_head: bool

    @property
    def n_test(self) -> int:
        return sum(v == "test" for v in self.split.values())


def _prepare_data(
    notes: Sequence[NoteInput],
    teacher: Mapping[str, Sequence[Tag]],
    cfg: StudentConfig,
    handbook: Handbook | None,
    work: Path,
) -> _Data:
    """Split the notes (written to ``work/split.parquet``), then decide grounding and the copy head."""
    import pandas as pd

    from features.io import write_parquet

    taught = [n for n in notes if n.note_id in teacher]
    if not taught:
        raise NotFoundError("no note has a teacher result; run `tagllm tag teach` first")
    split = {
        n.note_id: split_of(n.note_id, test_share=cfg.test_share, val_share=cfg.val_share) for n in notes
    }
    train_notes = [n for n in taught if split[n.note_id] == "train"]
    val_notes = [n for n in taught if split[n.note_id] == "val"]
    if not train_notes:
        raise ConfigError(f"no training notes: all {len(taught)} taught notes fell in the held-out split")
    write_parquet(
        pd.DataFrame({"note_id": list(split), "split": list(split.values())}), WorkFiles(work).split
    )
    allowed = allowed_values(train_notes, teacher, handbook)
    share = grounded_share(train_notes, teacher, allowed)
    grounded = cfg.grounding == "on" or (cfg.grounding == "auto" and share >= cfg.grounding_min_share)
    log.info("%.1f%% of the teacher's training tags occur in their note's text: grounding %s",
             100 * share, "on" if grounded else "off")  # fmt: skip
    copy_head = cfg.resolve_copy_head(share)
    log.info("copy head %s (copy_head=%s)", "on" if copy_head else "off", cfg.copy_head)
    if grounded:  # a tag the constraint can never emit is not a target
        teacher = {n.note_id: _grounded_tags(n, teacher[n.note_id], allowed) for n in taught}
    return _Data(train_notes, val_notes, split, teacher, allowed, share, grounded, copy_head)


def _make_trainer(
    cfg: StudentConfig, data: _Data, work: Path, teacher_version: str, device: str
) -> TrainLoop:
    """Tokenizer (reused when its fingerprint matches), encoded examples, model, optimizer, schedule."""
    import torch

    from tagging.student.model import build_model

    train_notes, teacher, copy_head = data.train_notes, data.teacher, data.copy_head
    torch.manual_seed(cfg.seed)
    corpus = [note_source(n, lowercase=copy_head) for n in train_notes] + [
        f"{clean_dimension(t.dimension)} {canonical(t.text)}" for n in train_notes for t in teacher[n.note_id]
    ]
    fp = _fingerprint(cfg, teacher_version, [n.note_id for n in train_notes], copy_head=copy_head)
    tok = _load_or_train_tokenizer(WorkFiles(work).tokenizer_dir, corpus, cfg.vocab_size, fp)
    train_ex = _encode(tok, train_notes, teacher, cfg, copy_head)
    val_ex = _encode(tok, data.val_notes, teacher, cfg, copy_head)
    model = build_model(
        cfg, len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, copy_head=copy_head
    ).to(device)
    steps_per_epoch = math.ceil(len(train_ex) / cfg.train_batch_size)
    total_steps = steps_per_epoch * cfg.n_epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, cfg.warmup_steps, total_steps)
    )
    return TrainLoop(
        cfg, device, torch, tok, model, opt, sched, train_ex, val_ex, fp,
        WorkFiles(work).checkpoints, steps_per_epoch, total_steps,
    )  # fmt: skip


def distill(
    notes: Sequence[NoteInput],
    teacher: Mapping[str, Sequence[Tag]],
    *,
    work_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: StudentConfig | None = None,
    handbook: Handbook | None = None,
    teacher_version: str = "",
    progress: bool = False,
) -> DistillResult:
    """Train the student on ``teacher``'s tags of ``notes`` and export the best weights to ``out_dir``.

    Args:
        notes: every note (the split decides which ones train; held-out notes are never trained on).
        teacher: note_id -> the teacher's tags; notes without an entry are not used.
        work_dir: tokenizer, checkpoints and split (see module docstring).
        out_dir: the exported model folder (replaced atomically).
        config: the student config (default :class:`StudentConfig`).
        handbook: adds every handbook value to the decoding constraint.
        teacher_version: recorded in the model card; part of the checkpoint fingerprint.
        progress: show a progress bar.

    Returns:
        A :class:`DistillResult`.

    Raises:
        ConfigError: ``config.device`` is unusable, or there are no training notes.
        NotFoundError: no note has a teacher result.
    """
    cfg = config or StudentConfig()
    device = resolve_device(cfg.device)
    work, out = Path(work_dir), Path(out_dir)
    WorkFiles(work).checkpoints.mkdir(parents=True, exist_ok=True)
    data = _prepare_data(notes, teacher, cfg, handbook, work)
    trainer = _make_trainer(cfg, data, work, teacher_version, device)
    state = trainer.resume()
    resumed_from = state.step
    trainer.train(state, progress=progress)
    return _finish(trainer, state, data, out, handbook, teacher_version, resumed_from)


def _finish(
    trainer: TrainLoop,
    state: TrainState,
    data: _Data,
    out: Path,
    handbook: Handbook | None,
    teacher_version: str,
    resumed_from: int,
) -> DistillResult:
    """Export the best weights with their model card and calibrated end-of-sequence penalty."""
    from tagging.student.model import count_parameters

    cfg, model, torch = trainer.cfg, trainer.model, trainer.torch
    n_params = count_parameters(model)
    model.load_state_dict(torch.load(trainer.best, map_location=trainer.device, weights_only=True))
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "teacher_version": teacher_version,
        "student_config": cfg.model_dump(),
        "parameters": n_params,
        "allowed": data.allowed,
        "grounded": data.grounded,
        "grounded_share": round(data.share, 4),
        "copy_head": data.copy_head,
        "split": {"method": "sha256('tagllm-student-split:' + note_id)", "test_share": cfg.test_share,
                  "val_share": cfg.val_share, "train": len(data.train_notes), "val": len(data.val_notes),
                  "test": data.n_test},
        "training": {"steps": state.step, "best_step": state.best_step, "best_val_loss": state.best_val,
                     "stopped": state.done, "seconds": round(state.elapsed, 1)},
    }  # fmt: skip
    _export(model, trainer.tok, meta, out)
    meta["eos_penalty"] = _calibrate_eos(out, data.val_notes, data.teacher, handbook, trainer.device)
    write_json(meta, ModelFiles(out).meta)
    return DistillResult(
        model_dir=str(out),
        parameters=n_params,
        device=trainer.device,
        steps=int(state.step),
        epochs_done=round(state.epoch + state.batch_in_epoch / max(trainer.steps_per_epoch, 1), 2),
        best_val_loss=round(float(state.best_val), 5),
        best_step=int(state.best_step),
        stopped=str(state.done),
        resumed_from_step=resumed_from,
        train_seconds=round(float(state.elapsed), 1),
        n_train=len(data.train_notes),
        n_val=len(data.val_notes),
        n_test=data.n_test,
        grounded=data.grounded,
        grounded_share=round(data.share, 4),
        history=list(state.history),
    )


EOS_PENALTIES = (0.0, 1.0, 2.0, 4.0)


def _calibrate_eos(
    out: Path,
    val_notes: Sequence[NoteInput],
    teacher: Mapping[str, Sequence[Tag]],
    handbook: Handbook | None,
    device: str,
    max_notes: int = 64,
) -> float:
    """The end-of-sequence penalty (of :data:`EOS_PENALTIES`) with the best F1 vs the teacher on
    (up to ``max_notes``) validation notes."""
    from tagging.evaluate import evaluate_tags, gold_from_reference
    from tagging.student.apply import StudentTagger

    notes = list(val_notes)[:max_notes]
    if not notes:
        return 0.0
    gold = gold_from_reference({n.note_id: [t.text for t in teacher.get(n.note_id, ())] for n in notes})
    cats = {n.note_id: n.category for n in notes}
    best, best_f1 = 0.0, -1.0
    for pen in EOS_PENALTIES:
        tagger = StudentTagger.load(out, handbook=handbook, device=device, eos_penalty=pen, batch_size=64)
        pred = {r.note_id: [t.text for t in r.tags] for r in tagger.tag(notes)}
        f1 = evaluate_tags(pred, gold, cats)["overall"]["f1"]
        log.info("eos penalty %.1f: validation F1 vs teacher %.4f", pen, f1)
        if f1 > best_f1 + 1e-4:
            best, best_f1 = pen, f1
    return best


def _export(model: Any, tok: Any, meta: dict[str, Any], out: Path) -> None:
    """Write the model folder next to ``out`` and swap it in whole."""
    with atomic_dir(out) as tmp:
        model.to("cpu").save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        write_json(meta, ModelFiles(tmp).meta)
        write_model_card(tmp, meta)


def write_model_card(
    model_dir: str | os.PathLike[str], meta: Mapping[str, Any], metrics: Mapping[str, Any] | None = None
) -> Path:
    """Write README.md (data, training, metrics, teacher version) into ``model_dir``."""
    m = dict(meta)
    cfg = m.get("student_config", {})
    lines = [
        "# TagLLM student tagger",
        "",
        "A small T5 encoder-decoder trained from scratch by sequence-level distillation of the TagLLM "
        "teacher's fine-grained tags (`tagllm tag distill`). Input: a note's category, title, body and "
        "image captions (never its hashtags or reference tags). Output: dimension-aware tags, e.g. "
        "`colour: cream white; off white | style: retro running`, decoded under a trie constraint so it "
        "always parses.",
        "",
        "```python",
        "from tagging.student.apply import StudentTagger",
        "tagger = StudentTagger.load(model_dir)",
        *(
            [
                "# the network alone (pointer-generator head; pass copy_source_ids=input_ids to generate):",
                "from tagging.student.model import copy_model_class",
                "model = copy_model_class().from_pretrained(model_dir)",
            ]
            if m.get("copy_head")
            else ["# the network alone: T5ForConditionalGeneration.from_pretrained(model_dir)"]
        ),
        "```",
        "",
        "## Data",
        f"- teacher: `{m.get('teacher_version', '')}`",
        f"- split (by hash of note_id): {json.dumps(m.get('split', {}))}",
        "",
        "## Model",
        f"- parameters: {m.get('parameters', 0):,}",
        f"- copy head (pointer-generator over the note's tokens; lower-cased source): {bool(m.get('copy_head'))}",
        f"- config: {json.dumps(cfg)}",
        f"- format: `{m.get('format_version', '')}`",
        f"- decoding: grounded={m.get('grounded')} (share of teacher tags found in their note: "
        f"{m.get('grounded_share')}), eos_penalty={m.get('eos_penalty', 0.0)}",
        "",
        "## Training",
        f"- {json.dumps(m.get('training', {}))}",
        "",
        "## Metrics (held-out test notes)",
    ]
    metrics = metrics if metrics is not None else m.get("metrics")
    lines += [f"- {k}: {json.dumps(v)}" for k, v in (metrics or {}).items()] or ["- not evaluated yet"]
    path = ModelFiles.of(model_dir).card
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
