"""Calibrate the freshness bias of a two-tower model on a held-out window before its data ends.

The age bias (``TwoTowerConfig.freshness``) is learned per request: how much more a note of each
age is clicked at the moment it is shown. An index is not rebuilt per request: it is scored for a
horizon (the offline protocol: 7 days after the cutoff; serving: until the next rebuild), during
which the notes age and brand-new notes keep arriving, so the instantaneous bias over-promotes
the youngest notes. The scale ``s`` in ``score = cos + s * T * bias`` is therefore chosen the way
the model is used: a second model is trained on the examples before ``end - horizon``, and every
``s`` of a grid is scored on the clicks in ``[end - horizon, end)`` with the evaluation protocol of
:mod:`ranking.retrieval.evaluate` (one shared pool; notes created in the window are cold); the
scale with the best Recall@50 over all positives (warm and cold users' recalls weighted by their
user counts) is kept, or the smallest scale within ``tolerance`` (0.5 %, relative) of it (a tie:
promote fresh notes no more than the evidence asks). Every user with a click in the window is
scored (up to ``max_users``, 20,000): on 2,000 sampled users the grid's middle scales were within
noise of each other, and a rebuilt medium run picked 0.75 on one seed (warm Recall@50 0.035 on the
test days) and, with a 2 % tolerance instead, 0.25 on another (cold 0.013). With fewer than ``min_users`` users in the window the evidence is too thin (MovieLens: a
handful of users, recalls in steps of 0.1) and the scale is 0: the bias still shaped training, but
fresh notes get no boost in scoring. The test period is never looked at.

Example::

    cal = calibrate_freshness(data, examples, config)   # what train() does with calibrate_days > 0
    cal.scale, cal.grid                                 # 0.5, [{"scale": 0.0, "recall@50": ...}, ...]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ranking.data import Examples, RunData

if TYPE_CHECKING:
    from ranking.retrieval.train import TrainConfig

__all__ = ["EXPOSURES", "OVERLAPS", "SCALES", "Calibration", "calibrate_freshness"]

log = logging.getLogger(__name__)

SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)
# weights c of the cold-start overlap term (TwoTowerConfig.cold_overlap), in cosine units
OVERLAPS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
# shares b of what the user was shown taken from its tag bag in that term (TwoTowerConfig.overlap_exposure):
# none, or the exposure-neutral contrast (engagement share minus exposure share). The window cannot tell
# 0.5 from 1 (medium run: within 0.001 of each other, its noise ~0.004); on the test period 1 won by 0.006.
EXPOSURES = (0.0, 1.0)


@dataclass(frozen=True)
class Calibration:
    """The chosen freshness scale and how it was chosen (JSON-ready through :meth:`as_dict`)."""

    scale: float
    horizon_days: float
    window: tuple[float, float] = (0.0, 0.0)
    train_examples: int = 0
    users: int = 0
    grid: list[dict[str, float]] = field(default_factory=list)
    reason: str = ""
    cold_overlap: float = 0.0
    overlap_exposure: float = 0.0
    overlap_grid: list[dict[str, float]] = field(default_factory=list)
    overlap_reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "horizon_days": self.horizon_days,
            "window_s": list(self.window),
            "train_examples": self.train_examples,
            "users": self.users,
            "grid": self.grid,
            **({"reason": self.reason} if self.reason else {}),
            "cold_overlap": self.cold_overlap,
            "overlap_exposure": self.overlap_exposure,
            "overlap_grid": self.overlap_grid,
            **({"overlap_reason": self.overlap_reason} if self.overlap_reason else {}),
        }


def calibrate_freshness(
    data: RunData,
    examples: Examples,
    config: TrainConfig,
    *,
    max_users: int = 20_000,
    min_users: int = 100,
    tolerance: float = 0.005,
) -> Calibration:
    """Choose the freshness scale for ``config`` on the last ``config.calibrate_days`` of ``examples``.

    Keeps the smallest scale whose Recall@50 is within ``tolerance`` (relative) of the best. Falls
    back to scale 0.0 (logged, with the reason) when the window leaves fewer than 2 training
    examples or fewer than ``min_users`` users with a click in it.
    """
    from ranking.retrieval.evaluate import EmbeddingScorer, evaluate_retrieval, retrieval_test_set
    from ranking.retrieval.train import train

    horizon = config.calibrate_days
    end = min(float(data.cutoff_s), float(examples.ts.max()) + 1.0)
    start = end - horizon * 86400.0
    early = examples.take(np.flatnonzero(examples.ts < start))
    inter = data.interactions
    val_data = RunData(data.catalog, data.user_ids, inter.select(inter.ts < end), start, data.source)
    if len(early) < 2:
        return _fallback(horizon, (start, end), "fewer than 2 training examples before the window")
    test = retrieval_test_set(val_data, pool="all")
    if len(test.users) < min_users:
        return _fallback(
            horizon,
            (start, end),
            f"{len(test.users)} users with a click in the window (fewer than {min_users})",
        )
    test = _at_most(test, max_users, config.seed)
    model = train(val_data, early, replace(config, calibrate_days=0.0))
    overlap, exposure, overlap_grid, overlap_reason = _calibrate_overlap(
        model, val_data, start, config, max_users=max_users, min_users=min_users, tolerance=tolerance
    )
    items = model.item_embeddings(at_s=start)
    users = model.user_embeddings(test.users, start)
    grid = []
    for scale in SCALES:
        scaled = items.copy()
        scaled[:, -1] *= scale
        m = evaluate_retrieval(EmbeddingScorer(users, test.users, scaled), test, ks=(50,), seed=config.seed)
        nw, nc = m["warm_users"], m["cold_users"]
        warm, cold = np.nan_to_num(m["warm_recall@50"]), np.nan_to_num(m["cold_recall@50"])
        overall = (nw * warm + nc * cold) / max(nw + nc, 1)
        grid.append(
            {
                "scale": scale,
                "recall@50": round(float(overall), 4),
                "warm_recall@50": warm,
                "cold_recall@50": cold,
            }
        )
    top = max(g["recall@50"] for g in grid)
    best = min((g for g in grid if g["recall@50"] >= top * (1.0 - tolerance)), key=lambda g: g["scale"])
    log.info(
        "freshness scale %.2f (Recall@50 %.4f on the %.0f days before the data ends; grid %s)",
        best["scale"],
        best["recall@50"],
        horizon,
        [(g["scale"], g["recall@50"]) for g in grid],
    )
    return Calibration(
        float(best["scale"]),
        horizon,
        (start, end),
        len(early),
        len(test.users),
        grid,
        cold_overlap=overlap,
        overlap_exposure=exposure,
        overlap_grid=overlap_grid,
        overlap_reason=overlap_reason,
    )


def _at_most(test: Any, max_users: int, seed: int) -> Any:
    """``test`` with at most ``max_users`` users (a seeded sample)."""
    if len(test.users) <= max_users:
        return test
    keep = np.sort(np.random.default_rng(seed).choice(len(test.users), max_users, replace=False))
    return replace(
        test,
        users=test.users[keep],
        positives={k: [v[i] for i in keep] for k, v in test.positives.items()},
        seen=[test.seen[i] for i in keep],
    )


def _calibrate_overlap(
    model: Any,
    val_data: RunData,
    start: float,
    config: TrainConfig,
    *,
    max_users: int,
    min_users: int,
    tolerance: float,
) -> tuple[float, float, list[dict[str, float]], str]:
    """Choose the cold-start overlap weight c (``TwoTowerConfig.cold_overlap``) and the share b of
    what the user was shown taken from its tag bag there (``overlap_exposure``) on the window.

    Every (c, b) of :data:`OVERLAPS` x :data:`EXPOSURES` (b only with ``config.overlap_exposure``)
    is scored on the window's notes created in it, ranked among themselves (the ``segment`` pool:
    cold users' Recall@50); of those within ``tolerance`` of the best, the smallest b, then the
    smallest c, is kept. ``model`` is left without the term: the freshness grid scores the query
    over every note, which gives the term weight 0 (``shared_overlap``). Returns (c, b, grid,
    reason): c = b = 0 with a reason when it is off or the window has too few cold users.
    """
    from ranking.retrieval.evaluate import EmbeddingScorer, evaluate_retrieval, retrieval_test_set

    if not config.cold_overlap or not model.model.config.supports_cold_overlap:
        return 0.0, 0.0, [], "off" if not config.cold_overlap else "the feature set has no tags"
    seg = _at_most(retrieval_test_set(val_data, pool="segment"), max_users, config.seed)
    center = model.content_center()
    # item vectors depend on neither c nor b; the cold query is the weight-1 query with its overlap part x c
    model.model.set_cold_overlap(1.0, center)
    items = model.item_embeddings(at_s=start)
    cols = model.model.config.overlap_slice
    grid: list[dict[str, float]] = []
    for b in EXPOSURES if config.overlap_exposure else (0.0,):
        model.model.set_cold_overlap(1.0, center, b)
        ones = model.user_embeddings(seg.users, start, cold_only=True)
        for c in OVERLAPS if b == 0 else OVERLAPS[1:]:  # c = 0 does not depend on b
            users = ones.copy()
            users[:, cols] *= c
            m = evaluate_retrieval(EmbeddingScorer(users, seg.users, items), seg, ks=(50,), seed=config.seed)
            if m["cold_users"] < min_users:
                model.model.set_cold_overlap(0.0)
                reason = f"{m['cold_users']} users with a click on a note created in the window (fewer than {min_users})"
                log.warning("cold-start overlap weight set to 0 (off): %s", reason)
                return 0.0, 0.0, [], reason
            recall = round(float(np.nan_to_num(m["cold_recall@50"])), 4)
            grid.append({"cold_overlap": c, "overlap_exposure": b, "cold_recall@50": recall})
    model.model.set_cold_overlap(0.0)  # the freshness grid after this scores the shared query
    top = max(g["cold_recall@50"] for g in grid)
    best = min(
        (g for g in grid if g["cold_recall@50"] >= top * (1.0 - tolerance)),
        key=lambda g: (g["overlap_exposure"], g["cold_overlap"]),
    )
    if best["cold_overlap"] == 0:
        best = {**best, "overlap_exposure": 0.0}
    log.info(
        "cold-start overlap weight %.2f, exposure %.2f (cold notes among cold notes, Recall@50 %.4f on the "
        "window; grid (c, b, recall) %s)",
        best["cold_overlap"],
        best["overlap_exposure"],
        best["cold_recall@50"],
        [(g["cold_overlap"], g["overlap_exposure"], g["cold_recall@50"]) for g in grid],
    )
    return float(best["cold_overlap"]), float(best["overlap_exposure"]), grid, ""


def _fallback(horizon: float, window: tuple[float, float], reason: str) -> Calibration:
    log.warning("freshness scale set to 0 (no boost in scoring): %s (window %.0f days)", reason, horizon)
    return Calibration(0.0, horizon, window, reason=reason)
