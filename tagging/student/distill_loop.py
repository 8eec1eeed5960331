"""The student's training loop: its state, one optimizer step, an epoch, validation and checkpoints.

:func:`tagging.student.distill.distill` prepares the data and the model, then hands them to a
:class:`TrainLoop`. ``checkpoints/last.pt`` holds model, optimizer, schedule, RNG state and the
:class:`TrainState` (as a plain dict); ``checkpoints/best.pt`` the weights with the lowest validation loss.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from features.io import atomic_path
from tagging.student.config import StudentConfig
from tagging.student.data import Example, batches
from tagging.student.files import BEST, LAST

__all__ = ["TrainLoop", "TrainState", "lr_factor", "should_stop", "val_loss"]

log = logging.getLogger(__name__)


def _pad(rows: list[list[int]], value: int, torch: Any) -> Any:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def val_loss(model: Any, examples: Sequence[Example], batch_size: int, device: str, torch: Any) -> float:
    """Mean per-target-token loss of ``model`` on ``examples`` (NaN when there are none)."""
    if not examples:
        return float("nan")
    model.eval()
    total, n_tok = 0.0, 0
    with torch.no_grad():
        for src, tgt in batches(examples, batch_size, seed=None):
            ids = _pad(src, 0, torch).to(device)
            labels = _pad(tgt, -100, torch).to(device)
            out = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=labels)
            k = int((labels != -100).sum())
            total += float(out.loss) * k
            n_tok += k
    model.train()
    return total / max(n_tok, 1)


@dataclass
class TrainState:
    """Where the training loop stands; ``last.pt`` stores it as a plain dict (:meth:`as_dict`).

    ``done`` is empty while training goes on, else why it stopped: ``epochs``, ``max_steps``,
    ``max_minutes`` or ``early_stop``.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed: float = 0.0
    best_val: float = float("inf")
    best_step: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    done: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainState:
        return cls(**d)


def should_stop(state: TrainState, cfg: StudentConfig) -> str:
    """Why training must stop before another step (``max_steps`` or ``max_minutes``), or ``""``."""
    if cfg.max_steps and state.step >= cfg.max_steps:
        return "max_steps"
    if state.elapsed > cfg.max_minutes * 60:
        return "max_minutes"
    return ""


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up, then a cosine decay to a tenth of the learning rate."""
    if step < warmup_steps:
        return (step + 1) / max(warmup_steps, 1)
    frac = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


@dataclass
class TrainLoop:
    """The model, optimizer and data of one training run, and the steps of its loop."""

    cfg: StudentConfig
    device: str
    torch: Any
    tok: Any
    model: Any
    opt: Any
    sched: Any
    train_ex: list[Example]
    val_ex: list[Example]
    fingerprint: str
    checkpoints: Path
    steps_per_epoch: int
    total_steps: int
    t_start: float = 0.0
    bar: Any = None

    @property
    def last(self) -> Path:
        return self.checkpoints / LAST

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST

    def resume(self) -> TrainState:
        """The state of ``last.pt`` (with model, optimizer, schedule and RNG restored) when it is of
        this configuration, else a fresh state."""
        torch, state = self.torch, TrainState()
        if not self.last.exists():
            return state
        ck = torch.load(self.last, map_location=self.device, weights_only=False)
        if ck.get("fingerprint") != self.fingerprint:
            log.warning("%s is from another configuration or teacher table; starting afresh", self.last)
            self.best.unlink(missing_ok=True)
            return state
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["rng"])
        state = TrainState.from_dict(ck["state"])
        if state.done in ("max_minutes", "max_steps"):
            state.done = ""  # a new budget may allow more
        log.info("resuming distillation from step %d (epoch %d)", state.step, state.epoch)
        return state

    def save_last(self, state: TrainState) -> None:
        payload = {
            "fingerprint": self.fingerprint, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "rng": self.torch.get_rng_state(), "state": state.as_dict(),
        }  # fmt: skip
        with atomic_path(self.last) as tmp:
            self.torch.save(payload, tmp)

    def evaluate_and_keep_best(self, state: TrainState) -> bool:
        """Record the validation loss; keep the weights in ``best.pt`` when it improved."""
        loss = val_loss(self.model, self.val_ex, self.cfg.train_batch_size * 2, self.device, self.torch)
        state.history.append({"step": state.step, "epoch": state.epoch, "val_loss": round(loss, 5)})
        improved = not math.isnan(loss) and loss < state.best_val - 1e-4
        if improved or not self.best.exists():
            state.best_val = loss if not math.isnan(loss) else state.best_val
            state.best_step = state.step
            with atomic_path(self.best) as tmp:
                self.torch.save(self.model.state_dict(), tmp)
        log.info("step %d epoch %d: val loss %.4f (best %.4f)", state.step, state.epoch, loss, state.best_val)
        return improved

    def train_step(self, src: list[list[int]], tgt: list[list[int]]) -> float:
        """One optimizer step on a batch; returns its loss."""
        torch, pad = self.torch, self.tok.pad_token_id
        ids = _pad(src, pad, torch).to(self.device)
        labels = _pad(tgt, -100, torch).to(self.device)
        loss = self.model(input_ids=ids, attention_mask=(ids != pad).long(), labels=labels).loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.sched.step()
        return float(loss.detach())

    def run_epoch(self, state: TrainState) -> None:
        """Train the rest of ``state.epoch`` (or until a budget runs out), then validate and save."""
        cfg, epoch, running = self.cfg, state.epoch, 0.0
        for b, (src, tgt) in enumerate(
            batches(self.train_ex, cfg.train_batch_size, seed=cfg.seed * 1000 + epoch)
        ):
            if b < state.batch_in_epoch:
                continue
            state.done = should_stop(state, cfg)
            if state.done:
                break
            loss = self.train_step(src, tgt)
            running = 0.9 * running + 0.1 * loss if b else loss
            state.step += 1
            state.batch_in_epoch = b + 1
            state.elapsed = time.perf_counter() - self.t_start
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(loss=f"{running:.3f}", epoch=epoch)
            if state.step % cfg.checkpoint_every == 0:
                self.save_last(state)
            state.done = should_stop(state, cfg)
            if state.done:
                break
        if not state.done or state.batch_in_epoch >= self.steps_per_epoch:
            state.epoch += 1
            state.batch_in_epoch = 0
        improved = self.evaluate_and_keep_best(state)
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        if not state.done and state.bad_epochs >= cfg.train_patience:
            state.done = "early_stop"
        state.elapsed = time.perf_counter() - self.t_start
        self.save_last(state)

    def train(self, state: TrainState, *, progress: bool) -> None:
        """Run epochs until ``state.done``; the best weights are in ``best.pt`` afterwards."""
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total_steps, initial=state.step, desc="distill", unit="step")
        self.model.train()
        self.t_start = time.perf_counter() - state.elapsed
        while not state.done:
            if state.epoch >= self.cfg.n_epochs:
                state.done = "epochs"
                break
            self.run_epoch(state)
        if self.bar is not None:
            self.bar.close()
