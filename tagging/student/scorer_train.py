"""Distillation of the scorer student: train on the teacher's tags, calibrate, export.

The student learns the teacher's answer for a note as a set: every known tag is a binary target of
the classifier head, every candidate proposed from the note's words a binary target of the candidate
head (:mod:`tagging.student.scorer_model`). Only notes with a teacher answer take part; the split
(train / val / test) is the hash split of :func:`tagging.student.data.split_of`.

Budget: ``epochs`` (default 40) with early stopping on the validation loss (``patience`` epochs), or
``max_steps``; ``max_minutes`` is only a safety net (a run that hits it says so in ``stopped``).

After training, on the validation notes: one temperature per head (minimum log loss), then the
thresholds that maximize F1 vs the teacher (grounded and ungrounded). Layout::

    work_dir/scorer_ckpt.pt     model + optimizers + train state (atomic, every epoch; a killed run resumes)
    work_dir/split.parquet      note_id -> train / val / test
    out_dir/                    model.safetensors, student.json (known tags, priors, selection), README.md
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from features.io import atomic_dir, atomic_path, write_json
from tagging.handbook_model import Handbook
from tagging.student.config import StudentConfig, resolve_device
from tagging.student.files import ModelFiles, WorkFiles
from tagging.student.scorer_apply import Selection, set_threads
from tagging.student.scorer_calibrate import calibrate
from tagging.student.scorer_data import NoteRow, collate
from tagging.student.scorer_memory import NeighbourMemory
from tagging.student.scorer_model import N_FEATURES, TagScorer
from tagging.student.scorer_prepare import TrainData, prepare_data
from tagging.types import NoteInput, Tag

__all__ = ["ScorerResult", "train_scorer"]

log = logging.getLogger(__name__)

FORMAT_VERSION = "scorer-1"


@dataclass(frozen=True)
class ScorerResult:
    """What one :func:`train_scorer` call did."""

    model_dir: str
    arch: str
    parameters: int
    device: str
    threads: int
    steps: int
    epochs_done: int
    best_epoch: int
    best_val_loss: float
    stopped: str
    resumed_from_step: int
    train_seconds: float
    examples_per_s: float
    n_train: int
    n_val: int
    n_test: int
    n_known: int
    candidate_recall: float
    val: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainState:
    """The loop's state (checkpointed): position, budget used, best so far."""

    step: int = 0
    epoch: int = 0
    elapsed: float = 0.0
    best_val: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: str = ""
    history: list[dict[str, float]] = field(default_factory=list)


def _loss(
    model: TagScorer,
    rows: Sequence[NoteRow],
    labels: Sequence[Mapping[str, float]],
    data: TrainData,
    device: str,
) -> torch.Tensor:
    batch = collate(rows, data.featurizer.known_index, labels).to(device)
    if batch.tag_targets is None or batch.cand_targets is None:  # pragma: no cover - collate sets both
        raise ValueError("a training batch needs targets")
    tag_logits, cand_logits = model(batch)
    loss = F.binary_cross_entropy_with_logits(tag_logits, batch.tag_targets, reduction="sum")
    if cand_logits.numel():
        loss = loss + F.binary_cross_entropy_with_logits(cand_logits, batch.cand_targets, reduction="sum")
    return loss / max(len(rows), 1)


def _val_loss(model: TagScorer, data: TrainData, device: str, batch_size: int) -> float:
    model.eval()
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(data.val), batch_size):
            rows = data.val[s : s + batch_size]
            total += float(_loss(model, rows, data.val_labels[s : s + batch_size], data, device)) * len(rows)
    model.train()
    return total / max(len(data.val), 1)


def _fingerprint(cfg: StudentConfig, teacher_version: str, data: TrainData) -> str:
    payload = {
        "scorer": cfg.scorer.model_dump(),
        "seed": cfg.seed,
        "batch_size": cfg.train_batch_size,
        "split": [cfg.test_share, cfg.val_share],
        "teacher": teacher_version,
        "known": hashlib.sha256("\n".join(data.known).encode()).hexdigest(),
        "train": hashlib.sha256("\n".join(r.note_id for r in data.train).encode()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _should_stop(state: TrainState, cfg: StudentConfig, total_steps: int) -> str:
    if state.step >= total_steps:
        return "max_steps" if cfg.max_steps and total_steps == cfg.max_steps else "epochs"
    if state.bad_epochs >= cfg.train_patience:
        return "early_stopping"
    if state.elapsed > cfg.max_minutes * 60:
        return "max_minutes (safety cap)"
    return ""


def train_scorer(
    notes: Sequence[NoteInput],
    teacher: Mapping[str, Sequence[Tag]],
    *,
    work_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: StudentConfig | None = None,
    handbook: Handbook | None = None,
    teacher_version: str = "",
    progress: bool = False,
) -> ScorerResult:
    """Train the scorer student on ``teacher``'s answers for ``notes``; export to ``out_dir``.

    Args:
        notes: every note (only those with a teacher answer take part; the hash split decides roles).
        teacher: note_id -> the teacher's tags (an empty list is an answer: "no tags").
        work_dir: checkpoint and split (see the module docstring).
        out_dir: the exported model folder (replaced whole, atomically).
        config: the student config (``arch`` must be ``scorer``).
        handbook: candidates (values, synonyms), boilerplate, normalization.
        teacher_version: recorded in the model; part of the checkpoint fingerprint.
        progress: show a progress bar over epochs.

    Returns:
        A :class:`ScorerResult`.

    Raises:
        NotFoundError: no note has a teacher answer. ConfigError: no train/val notes; bad device.
    """
    cfg = config or StudentConfig()
    device = resolve_device(cfg.device)
    threads = set_threads(cfg.scorer.threads)
    work, out = Path(work_dir), Path(out_dir)
    work.mkdir(parents=True, exist_ok=True)
    t_prep = time.perf_counter()
    data = prepare_data(notes, teacher, cfg, handbook, work)
    log.info(
        "scorer: %d train / %d val notes, %d known tags, candidate recall on val %.3f (%.1fs)",
        len(data.train), len(data.val), len(data.known), data.candidate_recall, time.perf_counter() - t_prep,
    )  # fmt: skip
    sc = cfg.scorer
    model = _new_model(cfg, data, device)
    sparse_opt = torch.optim.SparseAdam(model.sparse_parameters(), lr=sc.sparse_lr)
    dense_opt = torch.optim.AdamW(model.dense_parameters(), lr=sc.lr, weight_decay=sc.weight_decay)
    steps_per_epoch = math.ceil(len(data.train) / cfg.train_batch_size)
    total_steps = cfg.max_steps or steps_per_epoch * cfg.n_epochs
    fp = _fingerprint(cfg, teacher_version, data)
    ckpt = WorkFiles(work).scorer_checkpoint
    state, best_weights, resumed = _resume(ckpt, fp, model, sparse_opt, dense_opt, device)
    if state.stopped != "early_stopping":  # a raised budget (epochs, steps, safety cap) continues
        state.stopped = _should_stop(state, cfg, total_steps)
    seen, best_weights, train_s = _train_epochs(
        model,
        data,
        cfg,
        state,
        (sparse_opt, dense_opt),
        device,
        total_steps,
        (ckpt, fp),
        best_weights,
        progress,
    )
    if state.stopped.startswith("max_minutes"):
        log.warning("scorer: stopped by the %.1f-minute safety cap, not by its step budget", cfg.max_minutes)
    if best_weights is not None:
        model.load_state_dict(best_weights)
    selection, val = calibrate(model, data, sc.max_tags, device)
    n_params = sum(p.numel() for p in model.parameters())
    meta = _meta(cfg, data, selection, val, n_params, teacher_version, state)
    _export(model, meta, out, data.featurizer.memory)
    return ScorerResult(
        model_dir=str(out), arch="scorer", parameters=n_params, device=device, threads=threads,
        steps=state.step, epochs_done=state.epoch, best_epoch=state.best_epoch,
        best_val_loss=round(state.best_val, 5), stopped=state.stopped, resumed_from_step=resumed,
        train_seconds=round(state.elapsed, 1),
        examples_per_s=round(seen / train_s, 1) if train_s > 0 and seen else 0.0,
        n_train=len(data.train), n_val=len(data.val), n_test=data.n_test, n_known=len(data.known),
        candidate_recall=round(data.candidate_recall, 4), val=val, history=state.history,
    )  # fmt: skip


def _new_model(cfg: StudentConfig, data: TrainData, device: str) -> TagScorer:
    """A freshly seeded scorer with the featurizer's idf and the training features' mean and spread."""
    torch.manual_seed(cfg.seed)
    sc = cfg.scorer
    model = TagScorer(
        sc.buckets, sc.dim, sc.hidden, len(data.known), N_FEATURES, cfg.dropout, sc.embed_dropout,
        sc.candidate_embeddings,
    )  # fmt: skip
    model.idf.copy_(torch.from_numpy(data.featurizer.idf))
    feats = np.concatenate([r.cand_features for r in data.train])
    model.feat_mean.copy_(torch.from_numpy(feats.mean(axis=0)))
    model.feat_std.copy_(torch.from_numpy(feats.std(axis=0) + 1e-6))
    return model.to(device)


def _validate(model: TagScorer, data: TrainData, state: TrainState, device: str) -> bool:
    """Close an epoch: validation loss, best/bad-epoch bookkeeping, history; True when it improved."""
    vl = _val_loss(model, data, device, 256)
    state.epoch += 1
    improved = vl < state.best_val - 1e-4
    if improved:
        state.best_val, state.best_epoch, state.bad_epochs = vl, state.epoch, 0
    else:
        state.bad_epochs += 1
    state.history.append({"epoch": state.epoch, "step": state.step, "val_loss": round(vl, 5)})
    log.info(
        "scorer epoch %d (step %d): val loss %.4f%s", state.epoch, state.step, vl, " *" if improved else ""
    )
    return improved


def _train_epochs(
    model: TagScorer,
    data: TrainData,
    cfg: StudentConfig,
    state: TrainState,
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    device: str,
    total_steps: int,
    checkpoint: tuple[Path, str],
    best_weights: dict[str, torch.Tensor] | None,
    progress: bool,
) -> tuple[int, dict[str, torch.Tensor] | None, float]:
    """Train until ``state.stopped``, saving the checkpoint (path, fingerprint) after every epoch.

    Returns:
        (examples seen, the best weights so far, seconds of training).
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=state.step, desc="student (scorer)", unit="step")
    t_train = time.perf_counter()
    seen = 0
    try:
        while not state.stopped:
            seen += _run_epoch(model, data, cfg, state, opts, device, total_steps, bar)
            if _validate(model, data, state, device):
                best_weights = copy.deepcopy(model.state_dict())
            state.stopped = _should_stop(state, cfg, total_steps)
            _save(*checkpoint, model, *opts, state, best_weights)
    finally:
        if bar is not None:
            bar.close()
    return seen, best_weights, time.perf_counter() - t_train


def _run_epoch(
    model: TagScorer,
    data: TrainData,
    cfg: StudentConfig,
    state: TrainState,
    opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    device: str,
    total_steps: int,
    bar: Any,
) -> int:
    """One pass over the training notes (order from seed + epoch); returns the examples seen."""
    order = list(range(len(data.train)))
    random.Random(cfg.seed * 1_000_003 + state.epoch).shuffle(order)
    model.train()
    seen = 0
    t0 = time.perf_counter()
    for s in range(0, len(order), cfg.train_batch_size):
        if state.step >= total_steps:
            break
        idx = order[s : s + cfg.train_batch_size]
        loss = _loss(model, [data.train[i] for i in idx], [data.train_labels[i] for i in idx], data, device)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()
        state.step += 1
        seen += len(idx)
        if bar is not None:
            bar.update(1)
    state.elapsed += time.perf_counter() - t0
    return seen


def _save(
    path: Path,
    fp: str,
    model: TagScorer,
    sparse_opt: torch.optim.Optimizer,
    dense_opt: torch.optim.Optimizer,
    state: TrainState,
    best: dict[str, torch.Tensor] | None,
) -> None:
    payload = {
        "fingerprint": fp,
        "model": model.state_dict(),
        "sparse_opt": sparse_opt.state_dict(),
        "dense_opt": dense_opt.state_dict(),
        "state": asdict(state),
        "best": best,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _resume(
    path: Path,
    fp: str,
    model: TagScorer,
    sparse_opt: torch.optim.Optimizer,
    dense_opt: torch.optim.Optimizer,
    device: str,
) -> tuple[TrainState, dict[str, torch.Tensor] | None, int]:
    if not path.exists():
        return TrainState(), None, 0
    ck = torch.load(path, map_location=device, weights_only=False)
    if ck.get("fingerprint") != fp:
        log.warning("%s is from another configuration or teacher table; starting afresh", path)
        return TrainState(), None, 0
    model.load_state_dict(ck["model"])
    sparse_opt.load_state_dict(ck["sparse_opt"])
    dense_opt.load_state_dict(ck["dense_opt"])
    state = TrainState(**ck["state"])
    log.info("resuming the scorer from step %d (epoch %d)", state.step, state.epoch)
    return state, ck["best"], state.step


def _meta(
    cfg: StudentConfig,
    data: TrainData,
    sel: Selection,
    val: Mapping[str, float],
    n_params: int,
    teacher_version: str,
    state: TrainState,
) -> dict[str, Any]:
    return {
        "arch": "scorer",
        "format_version": FORMAT_VERSION,
        "teacher_version": teacher_version,
        "student_config": cfg.model_dump(mode="json"),
        "scorer": cfg.scorer.model_dump(mode="json"),
        "split": {
            "test_share": cfg.test_share,
            "val_share": cfg.val_share,
            "train": len(data.train),
            "val": len(data.val),
            "test": data.n_test,
        },
        "parameters": n_params,
        "known_tags": data.known,
        "boilerplate": sorted(data.featurizer.extractor.boilerplate),
        "known_dims": data.known_dims,
        "extract_dims": data.extract_dims,
        "priors": data.featurizer.priors.as_dict(),
        "selection": sel.as_dict(),
        "validation": dict(val),
        "training": {
            "steps": state.step,
            "epochs": state.epoch,
            "best_epoch": state.best_epoch,
            "stopped": state.stopped,
            "seconds": round(state.elapsed, 1),
        },
    }


def _export(model: TagScorer, meta: dict[str, Any], out: Path, memory: NeighbourMemory | None) -> None:
    """Write the model folder beside ``out`` and swap it in whole."""
    from safetensors.torch import save_file

    with atomic_dir(out) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            str(ModelFiles(tmp).weights),
        )
        write_json(meta, ModelFiles(tmp).meta)
        if memory is not None:
            memory.save(tmp)
        write_scorer_card(tmp, meta)


def write_scorer_card(
    model_dir: str | os.PathLike[str], meta: Mapping[str, Any], metrics: Mapping[str, Any] | None = None
) -> Path:
    """README.md for a scorer model folder: what it reads, how it decides, its data and metrics."""
    lines = [
        "# TagLLM student tagger (scorer)",
        "",
        "A small tag scorer trained from scratch by distilling the TagLLM teacher's answers "
        "(`tagllm tag distill`). It reads a note's category, cover text/title and body with the creator's "
        "hashtags (boilerplate hashtags removed) as hashed character n-grams, proposes candidate tags from "
        "the note's own words (hashtags, handbook values and synonyms, tags the teacher used in training) "
        "and scores them, together with every known tag (a classifier for the teacher's frequent, "
        "abstractive tags), in one forward pass. Confidence = calibrated probability.",
        "",
        "```python",
        "from tagging.student import load_student",
        "tagger = load_student(model_dir, handbook=handbook)",
        "```",
        "",
        f"- teacher: `{meta.get('teacher_version', '')}`",
        f"- split (hash of note_id): {json.dumps(meta.get('split', {}))}",
        f"- parameters: {int(meta.get('parameters', 0)):,}; known tags: {len(meta.get('known_tags', []))}",
        f"- config: {json.dumps(meta.get('scorer', {}))}",
        f"- selection: {json.dumps(meta.get('selection', {}))}",
        f"- training: {json.dumps(meta.get('training', {}))}",
        f"- validation: {json.dumps(meta.get('validation', {}))}",
        "",
        "## Metrics (held-out test notes)",
    ]
    metrics = metrics if metrics is not None else meta.get("metrics")
    lines += [f"- {k}: {json.dumps(v)}" for k, v in (metrics or {}).items()] or ["- not evaluated yet"]
    path = ModelFiles.of(model_dir).card
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
