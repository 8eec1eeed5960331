"""Student configuration (model size, sequence lengths, training budget) and device selection.

The defaults fit the demo: on the synthetic "small" community (4,000 notes) distillation finishes in
at most ``max_minutes`` (3.5) on a 2-core CPU with a ~1.6M-parameter model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import ConfigError

__all__ = ["ARCH_CHOICES", "DEVICE_CHOICES", "MAX_PARAMS", "ScorerConfig", "StudentConfig", "resolve_device"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")
ARCH_CHOICES = ("scorer", "seq2seq")
MAX_PARAMS = 30_000_000


class ScorerConfig(BaseModel):
    """The scorer student (:mod:`tagging.student.scorer_model`): sizes, candidates, optimizer, threads.

    ``buckets`` x ``dim`` is the hashed n-gram table (most of the parameters); ``min_tag_count``: a
    teacher tag used at least this often in training gets a classifier output (a *known* tag);
    ``candidate_embeddings``: also feed the candidate head the candidate's and the note's n-gram
    embeddings (off by default: on KuaiRec they memorize the training notes and cost ~0.01-0.02 F1);
    ``embed_dropout``: dropout on those embedding inputs; ``max_chars``: longest span matched in the note; ``max_tags``: most tags per note; ``neighbours``:
    training notes that vote for their teacher tags (:mod:`tagging.student.scorer_memory`; 0 = off)
    and ``neighbour_tags`` the most-voted of their tags that become candidates;
    ``targets``: ``soft`` = the teacher's confidence is the target probability of each of its tags
    (knowledge distillation; thresholds then maximize confidence-weighted F1), ``hard`` = every
    teacher tag is a 1; ``lr`` (AdamW,
    dense layers) and ``sparse_lr`` (SparseAdam, the n-gram table); ``threads``: torch CPU threads
    for training and tagging (0 = half the cores, so a second CPU-bound process does not slow either
    down more than about 2x).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    buckets: int = Field(default=1 << 18, ge=64)
    dim: int = Field(default=64, ge=4)
    hidden: int = Field(default=256, ge=4)
    ngram_max: int = Field(default=3, ge=1, le=5)
    min_tag_count: int = Field(default=2, ge=1)
    max_known_tags: int = Field(default=5000, ge=1)
    max_chars: int = Field(default=16, ge=2)
    max_tags: int = Field(default=8, ge=1)
    candidate_embeddings: bool = False
    embed_dropout: float = Field(default=0.5, ge=0.0, lt=1.0)
    neighbours: int = Field(default=30, ge=0)
    neighbour_tags: int = Field(default=15, ge=0)
    targets: Literal["soft", "hard"] = "hard"
    lr: float = Field(default=1e-3, gt=0.0)
    sparse_lr: float = Field(default=3e-3, gt=0.0)
    weight_decay: float = Field(default=1e-4, ge=0.0)
    threads: int = Field(default=0, ge=0)


class StudentConfig(BaseModel):
    """Everything that shapes the student and its training.

    Model: ``d_model``, ``d_ff``, ``num_heads``, ``encoder_layers``, ``decoder_layers`` (a T5
    encoder-decoder), ``vocab_size`` (byte-level BPE trained on the corpus).
    Data: ``max_source_tokens``, ``max_target_tokens``, ``val_share`` / ``test_share`` (held out by a
    hash of note_id), ``cap_per_dimension``.
    Training: ``epochs``, ``batch_size``, ``lr``, ``warmup_steps``, ``patience`` (epochs without a
    better validation loss), ``max_minutes`` (wall-clock budget, summed over resumed runs),
    ``max_steps`` (0 = no limit), ``checkpoint_every`` (optimizer steps), ``seed``, ``device``.
    ``copy_head``: a pointer-generator head that can copy the note's own tokens (see
    :mod:`tagging.student.model`); it also lower-cases the source and tokenizes values word-initially,
    so a value in the target is spelled with the same tokens as in the note. ``auto``: on when at
    least ``grounding_min_share`` of the teacher's training tags occur in their note's text (copying
    is what helps there; off for abstractive tags such as KuaiRec's hashtags).
    Decoding: ``grounding`` (``auto``: copy-grounded decoding when at least ``grounding_min_share`` of
    the teacher's training tags occur in their note's text; see :class:`~tagging.student.format.TagConstraint`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: Literal["scorer", "seq2seq"] = "scorer"
    scorer: ScorerConfig = ScorerConfig()
    d_model: int = Field(default=128, ge=8)
    d_ff: int = Field(default=512, ge=8)
    num_heads: int = Field(default=4, ge=1)
    encoder_layers: int = Field(default=3, ge=1)
    decoder_layers: int = Field(default=2, ge=1)
    copy_head: Literal["auto", "on", "off"] = "auto"
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    vocab_size: int = Field(default=4000, ge=300)
    max_source_tokens: int = Field(default=96, ge=8)
    max_target_tokens: int = Field(default=48, ge=4)
    val_share: float = Field(default=0.05, gt=0.0, lt=0.5)
    test_share: float = Field(default=0.15, gt=0.0, lt=0.5)
    cap_per_dimension: int = Field(default=3, ge=1)
    epochs: int | None = Field(default=None, ge=1)
    batch_size: int | None = Field(default=None, ge=1)
    lr: float = Field(default=3e-3, gt=0.0)
    warmup_steps: int = Field(default=100, ge=0)
    patience: int | None = Field(default=None, ge=1)
    max_minutes: float = Field(default=30.0, gt=0.0)
    max_steps: int = Field(default=0, ge=0)
    checkpoint_every: int = Field(default=50, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    grounding: Literal["auto", "on", "off"] = "auto"
    grounding_min_share: float = Field(default=0.5, ge=0.0, le=1.0)

    @property
    def train_batch_size(self) -> int:
        """``batch_size``, or the architecture's default (scorer 64, seq2seq 32)."""
        if self.batch_size is not None:
            return self.batch_size
        return 64 if self.arch == "scorer" else 32

    @property
    def train_patience(self) -> int:
        """``patience`` (epochs without a better validation loss), or the default (scorer 4, seq2seq 2)."""
        if self.patience is not None:
            return self.patience
        return 4 if self.arch == "scorer" else 2

    @property
    def n_epochs(self) -> int:
        """``epochs``, or the architecture's default (seq2seq 12, scorer 40; early stopping ends sooner)."""
        if self.epochs is not None:
            return self.epochs
        return 40 if self.arch == "scorer" else 12

    def resolve_copy_head(self, grounded_share: float) -> bool:
        """Whether the student gets the copy head, given the share of teacher tags found in their note."""
        if self.copy_head == "auto":
            return grounded_share >= self.grounding_min_share
        return self.copy_head == "on"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None = None, **overrides: Any) -> StudentConfig:
        """Validate ``values`` (plus non-None ``overrides``); errors name the option.

        Raises:
            ConfigError: an unknown option or a value outside its range.
        """
        merged = {**(values or {}), **{k: v for k, v in overrides.items() if v is not None}}
        try:
            cfg = cls.model_validate(merged)
        except ValidationError as exc:
            parts = [
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()[:5]
            ]
            raise ConfigError("student config is invalid: " + "; ".join(parts)) from exc
        if cfg.d_model % cfg.num_heads:
            raise ConfigError(f"d_model ({cfg.d_model}) must be a multiple of num_heads ({cfg.num_heads})")
        if cfg.val_share + cfg.test_share >= 0.9:
            raise ConfigError(f"val_share + test_share must be < 0.9, got {cfg.val_share} + {cfg.test_share}")
        return cfg

    def architecture(self) -> dict[str, Any]:
        """The fields that change the network (a checkpoint is resumable only when these match)."""
        keys = ("d_model", "d_ff", "num_heads", "encoder_layers", "decoder_layers", "vocab_size")
        return {k: getattr(self, k) for k in keys} | {
            "max_source_tokens": self.max_source_tokens,
            "max_target_tokens": self.max_target_tokens,
            "val_share": self.val_share,
            "test_share": self.test_share,
            "seed": self.seed,
        }


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available else ``cpu``; ``cuda`` without CUDA is an error.

    ``TAGLLM_FORCE_CPU=1`` makes ``auto`` choose the CPU.

    Raises:
        ConfigError: ``device`` is not one of auto/cpu/cuda, or ``cuda`` was asked for and is absent.
    """
    import torch

    if device not in DEVICE_CHOICES:
        raise ConfigError(f"--device must be one of {', '.join(DEVICE_CHOICES)}; got {device!r}")
    has_cuda = bool(torch.cuda.is_available())
    if device == "cuda" and not has_cuda:
        raise ConfigError(
            "--device cuda: CUDA is not available on this machine (torch "
            f"{torch.__version__}); use --device cpu or --device auto"
        )
    if device == "auto":
        return "cuda" if has_cuda and os.environ.get("TAGLLM_FORCE_CPU") != "1" else "cpu"
    return device
