"""Calibration of the scorer student on its validation notes: a temperature per head (minimum log
loss), then the thresholds that maximize F1 vs the teacher on the tagger's final output, grounded and
ungrounded."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from tagging.student.scorer_apply import Selection, finalize, predict_probs, select
from tagging.student.scorer_data import NoteRow
from tagging.student.scorer_model import TagScorer
from tagging.student.scorer_prepare import TrainData

__all__ = ["calibrate", "weighted_f1"]

log = logging.getLogger(__name__)


def weighted_f1(pred: Sequence[Sequence[str]], gold: Sequence[Mapping[str, float]]) -> float:
    """F1 where a teacher tag counts with its target weight (1 for hard targets: plain F1)."""
    hit = sum(sum(g.get(t, 0.0) for t in set(p)) for p, g in zip(pred, gold, strict=True))
    n_p, n_g = sum(len(set(p)) for p in pred), sum(sum(g.values()) for g in gold)
    return 2 * hit / (n_p + n_g) if n_p + n_g else 0.0


def _fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature (of a log grid in [0.25, 4]) with the lowest log loss."""
    if logits.size == 0:
        return 1.0
    best, best_nll = 1.0, float("inf")
    for t in np.exp(np.linspace(math.log(0.25), math.log(4.0), 41)):
        p = np.clip(1 / (1 + np.exp(-np.clip(logits / t, -30, 30))), 1e-7, 1 - 1e-7)
        nll = float(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)).mean())
        if nll < best_nll:
            best, best_nll = float(t), nll
    return best


def _tune(
    rows: Sequence[NoteRow],
    logits: Sequence[tuple[np.ndarray, np.ndarray]],
    data: TrainData,
    base: Selection,
    grounded: bool,
) -> tuple[float, float, float]:
    """The (F1, known threshold, candidate threshold) with the best F1 vs the teacher on ``rows``,
    scored on the tagger's final output (:func:`~tagging.student.scorer_apply.finalize`)."""
    grid = [round(float(x), 2) for x in np.arange(0.1, 0.91, 0.05)]
    best = (-1.0, 0.5, 0.5)
    hb, cap = data.featurizer.extractor.handbook, data.cap_per_dimension
    cats = [n.category for n in data.val_notes]
    for a in grid:
        for b in grid:
            if grounded:
                sel = replace(base, known_threshold=a, cand_threshold=b)
            else:
                sel = replace(base, ungrounded_known_threshold=a, ungrounded_cand_threshold=b)
            pred = [
                [
                    t.text
                    for t in finalize(
                        select(r, lg, data.known, data.known_dims, sel, grounded=grounded), hb, cat, cap
                    )
                ]
                for r, lg, cat in zip(rows, logits, cats, strict=True)
            ]
            f1 = weighted_f1(pred, data.val_labels)
            if f1 > best[0] + 1e-9:
                best = (f1, a, b)
    return best


def calibrate(
    model: TagScorer, data: TrainData, max_tags: int, device: str
) -> tuple[Selection, dict[str, float]]:
    """Temperatures (log loss) then thresholds (F1 vs the teacher) on the validation notes."""
    index = data.featurizer.known_index
    logits = predict_probs(model, data.val, index, device=device)
    kt = np.zeros((len(data.val), len(data.known)), dtype=np.float32)
    for i, g in enumerate(data.val_labels):
        for t in g:
            k = index.get(t)
            if k is not None:
                kt[i, k] = g[t]
    t_known = _fit_temperature(np.stack([lg[0] for lg in logits]).ravel(), kt.ravel())
    cl = np.concatenate([lg[1] for lg in logits])
    ct = np.asarray(
        [g.get(t, 0.0) for r, g in zip(data.val, data.val_labels, strict=True) for t in r.cand_texts]
    )
    t_cand = _fit_temperature(cl, ct)
    base = Selection(known_temperature=t_known, cand_temperature=t_cand, max_tags=max_tags)
    f1, a, b = _tune(data.val, logits, data, base, grounded=True)
    ung_rows = data.featurizer.rows(data.val_notes, cands=[[] for _ in data.val_notes], use_offline=False)
    ung_logits = predict_probs(model, ung_rows, index, device=device)
    f1_u, ua, ub = _tune(ung_rows, ung_logits, data, base, grounded=False)
    sel = Selection(t_known, t_cand, a, b, ua, ub, max_tags)
    log.info("scorer calibration: T=%.2f/%.2f thresholds %.2f/%.2f (ungrounded %.2f/%.2f); val F1 %.4f "
             "(ungrounded %.4f)", t_known, t_cand, a, b, ua, ub, f1, f1_u)  # fmt: skip
    return sel, {"f1_vs_teacher": round(f1, 4), "ungrounded_f1_vs_teacher": round(f1_u, 4)}
