"""The student network: a small T5 encoder-decoder built from a config (random init, no download).

T5's relative position buckets let a small model copy spans from the note into the target, which is
most of what tag extraction is; ``relu`` feed-forward layers keep CPU training fast.

``copy_head`` (on by default when the teacher's tags are extractive) adds a pointer-generator head (See et al., 2017, "Get To The Point"): a
one-head attention from each decoder state over the encoder states gives a distribution over the
note's own tokens, and a learned gate mixes it with the vocabulary softmax. Values that occur in
the note are then one attention step away instead of having to be recalled from the weights, which
a briefly trained small model does poorly. The model returns log-probabilities of the mixture as
its ``logits``, so ``generate``, logits processors and the decoding constraint work unchanged; the
note's token ids travel to every decoding step as the ``copy_source_ids`` keyword.
"""

from __future__ import annotations

from typing import Any

from features.errors import ConfigError
from tagging.student.config import MAX_PARAMS, StudentConfig

__all__ = ["build_model", "copy_model_class", "count_parameters", "model_class"]


def copy_model_class() -> Any:
    """``T5CopyForConditionalGeneration``: T5 with a pointer-generator head (imported on first use, so
    importing this module does not import torch)."""
    from tagging.student.copy_model import T5CopyForConditionalGeneration

    return T5CopyForConditionalGeneration


def model_class(copy_head: bool) -> Any:
    """The model class of a student: with the copy head or plain ``T5ForConditionalGeneration``."""
    if copy_head:
        return copy_model_class()
    from transformers import T5ForConditionalGeneration

    return T5ForConditionalGeneration


def build_model(
    cfg: StudentConfig, vocab_size: int, *, pad_id: int = 0, eos_id: int = 1, copy_head: bool | None = None
) -> Any:
    """A randomly initialised T5 of ``cfg``'s size, with the copy head when ``copy_head`` (None: unless
    ``cfg.copy_head`` is ``off``; distillation resolves ``auto`` from the data first).

    Args:
        cfg: the student config (d_model, d_ff, heads, layers, dropout).
        vocab_size: the tokenizer's size.
        pad_id: padding id (also the decoder start token).
        eos_id: end-of-sequence id.

    Returns:
        The model; forward takes ``input_ids`` (B, S), ``attention_mask`` (B, S), ``labels`` (B, T)
        and returns logits (B, T, vocab_size) and the loss.

    Raises:
        ConfigError: the model would exceed :data:`MAX_PARAMS` parameters.
    """
    import torch
    from transformers import T5Config

    extra: dict[str, Any] = {"tie_word_embeddings": True, "decoder_start_token_id": pad_id}
    config = T5Config(
        vocab_size=vocab_size,
        d_model=cfg.d_model,
        d_kv=cfg.d_model // cfg.num_heads,
        d_ff=cfg.d_ff,
        num_layers=cfg.encoder_layers,
        num_decoder_layers=cfg.decoder_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=cfg.dropout,
        feed_forward_proj="relu",
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        **extra,
    )
    cls = model_class(cfg.copy_head != "off" if copy_head is None else copy_head)
    with torch.device("meta"):  # count first: an oversized config fails fast, allocating nothing
        n = count_parameters(cls(config))
    if n > MAX_PARAMS:
        raise ConfigError(
            f"student model has {n:,} parameters; the limit is {MAX_PARAMS:,}: "
            "lower d_model, d_ff, the layer counts or vocab_size"
        )
    torch.manual_seed(cfg.seed)
    return cls(config)


def count_parameters(model: Any) -> int:
    """Distinct trainable parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
