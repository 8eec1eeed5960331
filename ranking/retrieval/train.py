"""Train the two-tower retrieval model: a plain ``train(...)`` function (tests call it at tiny sizes).

Example::

    from features.io import RunDir
    from ranking.data import build_training_examples, load_run_data
    from ranking.retrieval.train import TrainConfig, train

    data = load_run_data(RunDir("runs/demo"), "teacher")
    examples = build_training_examples(data)
    result = train(data, examples, TrainConfig(feature_set="tags", epochs=5))
    items = result.item_embeddings()                 # (N, out_dim): every note, cold-start included
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from features.errors import ConfigError
from ranking.data import Examples, NoteCatalog, RunData, UserTagBags, tag_mass, user_exposure, user_states
from ranking.retrieval.model import FeatureEncoder, TwoTower, in_batch_softmax_loss

__all__ = ["RetrievalModel", "TrainConfig", "id_dropout", "log_popularity", "train"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train the two-tower model.

    Args:
        feature_set: ``ids``, ``category`` or ``tags`` (see ``ranking.retrieval.model.FEATURE_SETS``).
        epochs: passes over the examples.
        batch_size: examples per step (also the number of in-batch negatives + 1).
        lr: Adam learning rate (tables and towers).
        note_dropout: probability of hiding a note's id in training, so the towers learn to embed
            notes from content alone (what every cold-start note gets).
        embedding_dim: table width.
        hidden_dim: tower hidden width.
        out_dim: embedding size.
        temperature: softmax temperature.
        content_skip: shared linear path from the content bags to both towers' outputs (see
            ``TwoTowerConfig``); cold-start notes are scored through it.
        feature_norm: LayerNorm every pooled bag (balances the tag and category scales).
        logq: subtract log popularity from in-batch logits (popularity correction); False trains
            the plain in-batch softmax, which favours popular notes.
        freshness: a learned logit bias per candidate age bucket at the row's time, in-batch
            candidates not yet published at the row's time masked out (see ``TwoTowerConfig``).
        wide_dim: width of the wide tag-overlap table (``TwoTowerConfig.wide_dim``); 0 = off.
        calibrate_days: with ``freshness``, choose the bias scale for an index scored over this
            horizon on the last ``calibrate_days`` of the examples (a second, shorter training;
            :mod:`ranking.retrieval.calibrate`); 0 = scale 1 (the bias as learned per request).
        fresh_days: exposure-dependent id dropout (DropoutNet-style): a training example whose note
            was younger than this many days at the example's time hides the note's id (always), so
            the id-free embedding learns what a note with no id yet is clicked for — the situation
            of every cold-start note in serving, whose id the model never saw. 0 = off (only
            ``note_dropout`` at random).
        cold_overlap: with the calibration (``calibrate_days`` > 0), also choose the weight of the
            cold-start overlap term (``TwoTowerConfig.cold_overlap``: the user's tag/category bag
            dot the note's, for notes without an id) on the notes created in the window, ranked
            among themselves (it does not change the freshness scale's choice: the query over every
            note gives the term weight 0). False = off.
        overlap_exposure: with ``cold_overlap``, also choose on the same window how much of what
            the user was shown to take from its tag bag in that term
            (``TwoTowerConfig.overlap_exposure``). False = none.
        seed: torch and numpy seed.
        max_steps: stop after this many steps (0 = no limit); for tests and benchmarks.
    """

    feature_set: str = "tags"
    epochs: int = 4
    batch_size: int = 512
    lr: float = 5e-3
    note_dropout: float = 0.5
    embedding_dim: int = 32
    hidden_dim: int = 64
    out_dim: int = 32
    temperature: float = 0.05
    content_skip: bool = True
    feature_norm: bool = True
    logq: bool = True
    freshness: bool = True
    wide_dim: int = 64
    calibrate_days: float = 7.0
    fresh_days: float = 0.0
    exact_tags: bool = False
    cold_overlap: bool = True
    overlap_exposure: bool = True
    seed: int = 0
    max_steps: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)!r}; expected an integer >= 1")
        if not 0 <= self.note_dropout < 1:
            raise ConfigError(f"note_dropout: got {self.note_dropout!r}; expected a number in [0, 1)")
        if not 0 <= self.calibrate_days < float("inf"):
            raise ConfigError(
                f"calibrate_days: got {self.calibrate_days!r}; expected a number of days >= 0 (0 = no calibration)"
            )
        if isinstance(self.wide_dim, bool) or not isinstance(self.wide_dim, int) or self.wide_dim < 0:
            raise ConfigError(f"wide_dim: got {self.wide_dim!r}; expected an integer >= 0 (0 = off)")
        if not 0 <= self.fresh_days < float("inf"):
            raise ConfigError(
                f"fresh_days: got {self.fresh_days!r}; expected a number of days >= 0 (0 = off)"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr: got {self.lr!r}; expected a number > 0")


def id_dropout(data: RunData, examples: Examples, config: TrainConfig) -> np.ndarray:
    """(len(examples),) probability of hiding each example's note id: 1 where the note was younger
    than ``config.fresh_days`` at the example's time, ``config.note_dropout`` elsewhere."""
    p = np.full(len(examples), config.note_dropout, np.float64)
    if config.fresh_days > 0:
        age_days = (examples.ts - data.catalog.created_s[examples.note]) / 86400.0
        p[age_days < config.fresh_days] = 1.0
    return p


def log_popularity(notes: np.ndarray, num_notes: int) -> np.ndarray:
    """(num_notes,) log of each note's share of training positives (add-one smoothed)."""
    counts = np.bincount(notes, minlength=num_notes).astype(np.float64) + 1.0
    return np.log(counts / counts.sum()).astype(np.float32)


@dataclass
class RetrievalModel:
    """A trained two-tower model with the encoder that feeds it."""

    model: TwoTower
    encoder: FeatureEncoder
    data: RunData
    config: TrainConfig
    losses: list[float] = field(default_factory=list)
    examples_per_s: float = 0.0
    train_seconds: float = 0.0
    feature_source: str = "parquet"  # where the user tag bag came from in training (saved with the model)
    calibration: dict[str, Any] | None = None  # how the freshness scale was chosen (calibrate.Calibration)

    @torch.no_grad()
    def item_embeddings(
        self, notes: np.ndarray | None = None, batch: int = 4096, at_s: float | np.ndarray | None = None
    ) -> np.ndarray:
        """(len(notes), out_dim) float32 embeddings; default every note in the catalog.

        ``at_s``: when the notes are scored (scalar or one time per note), for a model with the
        ``i_age`` feature; default the run's cutoff (what the index holds).
        """
        self.model.eval()
        notes = np.arange(self.data.catalog.num_notes) if notes is None else np.asarray(notes)
        at = None if at_s is None else np.broadcast_to(np.asarray(at_s, dtype=np.float64), notes.shape)
        out = [
            self.model.item_embedding(
                self.encoder.encode(
                    notes=notes[i : i + batch], at_s=None if at is None else at[i : i + batch]
                ),
                self.tag_mass(notes[i : i + batch]),
            ).numpy()
            for i in range(0, len(notes), batch)
        ]
        return (
            np.concatenate(out).astype(np.float32)
            if out
            else np.zeros((0, self.model.config.vector_dim), np.float32)
        )

    @torch.no_grad()
    def content_center(self, batch: int = 4096) -> torch.Tensor:
        """The mean content bag (tags, then category) of every note in the catalog: the centre of the
        cold-start overlap term (:meth:`TwoTower.set_cold_overlap`)."""
        notes = np.arange(self.data.catalog.num_notes)
        return self.model.content_center(
            (self.encoder.encode(notes=notes[i : i + batch]), self.tag_mass(notes[i : i + batch]))
            for i in range(0, len(notes), batch)
        )

    def tag_mass(self, notes: np.ndarray, catalog: NoteCatalog | None = None) -> torch.Tensor | None:
        """(len(notes),) each note's sum of tag confidences (in ``catalog``, default the run's), the
        model's ``tag_mass`` input; None when the model does not read it (``overlap_confidence``)."""
        cfg = self.model.config
        if not (cfg.supports_cold_overlap and cfg.overlap_confidence):
            return None
        return torch.from_numpy(tag_mass(self.data.catalog if catalog is None else catalog, notes))

    def set_cold_overlap(self, weight: float, exposure: float = 0.0) -> None:
        """Turn the cold-start overlap term on with ``weight`` (0 = off), centred on this catalog, the
        user's tag bag there taken minus ``exposure`` x what it was shown (``overlap_exposure``)."""
        center = self.content_center() if weight > 0 and self.model.config.supports_cold_overlap else None
        self.model.set_cold_overlap(weight, center, exposure)

    def exposure(self, bags: UserTagBags | None) -> torch.Tensor | None:
        """``bags`` (:func:`ranking.data.user_exposure`) as the model's dense ``exposure`` input, or
        None when the model does not read it (no overlap term, or ``overlap_exposure`` 0)."""
        cfg = self.model.config
        if bags is None or not (cfg.has_cold_overlap and cfg.overlap_exposure):
            return None
        return torch.from_numpy(bags.dense(cfg.num_tags))

    @torch.no_grad()
    def user_embeddings(
        self,
        users: np.ndarray,
        ts: np.ndarray | float,
        history_len: int = 30,
        user_tags: UserTagBags | None = None,
        *,
        cold_only: bool = False,
    ) -> np.ndarray:
        """(len(users), out_dim) float32 embeddings from each user's history strictly before ``ts``.

        ``user_tags`` (one bag per user, e.g. Feast's point-in-time interests at ``ts``) replaces the
        history-derived tag bag, as for a model trained with ``feature_source="feast"``.
        ``cold_only``: the query of a search over cold-start notes only (``TwoTowerConfig.cold_overlap``).
        """
        self.model.eval()
        ts_arr = np.broadcast_to(np.asarray(ts, dtype=float), users.shape).copy()
        ex = user_states(self.data, users, ts_arr, history_len=history_len).with_user_tags(user_tags)
        kjt = self.encoder.encode(ex)
        cfg = self.model.config
        # the query over every note gives the term weight shared_overlap (0 by default): no exposure needed
        weight = cfg.cold_overlap if cold_only else cfg.shared_overlap
        reads = cfg.has_cold_overlap and cfg.overlap_exposure and weight
        shown = user_exposure(self.data, users, ts_arr) if reads else None
        vectors = self.model.user_embedding(kjt, cold_only=cold_only, exposure=self.exposure(shown))
        return vectors.numpy().astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """Write weights, config and id maps to ``path`` (a .pt file, atomically)."""
        from features.io import atomic_path

        with atomic_path(path) as tmp:
            torch.save(
                {
                    "state_dict": self.model.state_dict(),
                    "train_config": asdict(self.config),
                    "model_config": asdict(self.model.config),
                    "user_map": self.encoder.user_map,
                    "note_map": self.encoder.note_map,
                    "tag_source": self.data.catalog.tag_source,
                    "feature_source": self.feature_source,
                    "calibration": self.calibration,
                },
                tmp,
            )
        return Path(path)


def train(
    data: RunData,
    examples: Examples,
    config: TrainConfig | None = None,
    *,
    on_step: Any = None,
) -> RetrievalModel:
    """Train a two-tower model on positive ``examples`` with in-batch softmax and logQ correction.

    Args:
        data: the run (its catalog decides the tags).
        examples: positive (user, note, ts) rows with point-in-time history.
        config: training settings.
        on_step: optional callable(step, loss) for progress.

    Returns:
        the trained :class:`RetrievalModel` (``losses`` holds the per-step losses).
    """
    config = config or TrainConfig()
    if len(examples) < 2:
        raise ConfigError(f"examples: got {len(examples)} rows; expected at least 2 to form a batch")
    if (examples.note < 0).any():
        raise ConfigError("examples: every training row needs a note (note index >= 0)")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    encoder = FeatureEncoder(
        data,
        config.feature_set,
        examples.user,
        examples.note,
        freshness=config.freshness,
    )
    model = TwoTower(
        encoder.config(
            embedding_dim=config.embedding_dim,
            hidden_dim=config.hidden_dim,
            out_dim=config.out_dim,
            temperature=config.temperature,
            content_skip=config.content_skip,
            feature_norm=config.feature_norm,
            wide_dim=config.wide_dim,
            exact_tags=config.exact_tags,
            overlap_confidence=True,  # the cold-start overlap term reads tag confidences
        )
    )
    log_q = torch.from_numpy(log_popularity(examples.note, data.catalog.num_notes))
    if not config.logq:
        log_q = torch.zeros_like(log_q)
    drop_p = id_dropout(data, examples, config)
    t0 = float(examples.ts.min())
    # hours since t0 (float32: exact enough for hour buckets); the bias takes ages in hours
    ts_h = torch.from_numpy(((examples.ts - t0) / 3600.0).astype(np.float32))
    created_h = torch.from_numpy(((data.catalog.created_s - t0) / 3600.0).astype(np.float32))
    # fused: one kernel per step for all parameters on CPU (the per-tensor loop cost ~6 ms a step)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, fused=True)
    losses: list[float] = []
    step = 0
    seen = 0
    t0 = time.perf_counter()
    model.train()
    for _epoch in range(config.epochs):
        order = rng.permutation(len(examples))
        for i in range(0, len(order) - 1, config.batch_size):
            rows = order[i : i + config.batch_size]
            if len(rows) < 2:
                continue
            batch = examples.take(rows)
            kjt = encoder.encode(batch, note_dropout=drop_p[rows], rng=rng)
            users, items = model(kjt)
            note = torch.from_numpy(batch.note)
            bias: torch.Tensor | float = 0.0
            if config.freshness:
                # unpublished candidates get -inf in the same gather (no separate validity mask)
                bias = model.pair_bias(
                    ts_h[rows][:, None] - created_h[note][None, :], mask_unpublished=True, unit_s=3600.0
                )
            if config.exact_tags:
                bias = bias + model.tag_overlap(kjt)
            loss = in_batch_softmax_loss(users, items, log_q[note], note, config.temperature, bias)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            seen += len(rows)
            step += 1
            if on_step is not None:
                on_step(step, losses[-1])
            if config.max_steps and step >= config.max_steps:
                break
        if config.max_steps and step >= config.max_steps:
            break
    secs = time.perf_counter() - t0
    model.eval()
    log.info(
        "two-tower %s/%s: %d steps, loss %.3f -> %.3f, %.0f examples/s",
        config.feature_set,
        data.catalog.tag_source,
        step,
        losses[0],
        losses[-1],
        seen / max(secs, 1e-9),
    )
    result = RetrievalModel(model, encoder, data, config, losses, seen / max(secs, 1e-9), secs)
    if config.freshness and config.calibrate_days > 0:
        from ranking.retrieval.calibrate import calibrate_freshness

        cal = calibrate_freshness(data, examples, config)
        model.config = replace(model.config, freshness_scale=cal.scale)
        result.set_cold_overlap(cal.cold_overlap, cal.overlap_exposure)
        result.calibration = cal.as_dict()
    return result
