"""The student network: a small T5 encoder-decoder built from a config (random init, no download).

T5's relative position buckets let a small model copy spans from the note into the target, which is
most of what tag extraction is; ``relu`` feed-forward layers keep CPU training fast.
"""

from __future__ import annotations

from typing import Any

from features.errors import ConfigError
from tagging.student.config import MAX_PARAMS, StudentConfig

__all__ = ["build_model", "count_parameters"]


def build_model(cfg: StudentConfig, vocab_size: int, *, pad_id: int = 0, eos_id: int = 1) -> Any:
    """A randomly initialised ``T5ForConditionalGeneration`` of ``cfg``'s size.

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
    from transformers import T5Config, T5ForConditionalGeneration

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
    with torch.device("meta"):  # count first: an oversized config fails fast, allocating nothing
        n = count_parameters(T5ForConditionalGeneration(config))
    if n > MAX_PARAMS:
        raise ConfigError(
            f"student model has {n:,} parameters; the limit is {MAX_PARAMS:,}: "
            "lower d_model, d_ff, the layer counts or vocab_size"
        )
    torch.manual_seed(cfg.seed)
    return T5ForConditionalGeneration(config)


def count_parameters(model: Any) -> int:
    """Distinct trainable parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
