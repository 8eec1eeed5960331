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

_COPY_CLASS: Any = None


def copy_model_class() -> Any:
    """``T5CopyForConditionalGeneration``: T5 with a pointer-generator head (built on first use, so
    importing this module does not import torch)."""
    global _COPY_CLASS
    if _COPY_CLASS is not None:
        return _COPY_CLASS
    import torch
    from torch import nn
    from transformers import T5ForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

    class T5CopyForConditionalGeneration(T5ForConditionalGeneration):
        """T5 whose next-token distribution mixes the vocabulary softmax with a copy distribution
        over the source tokens; ``logits`` are the mixture's log-probabilities."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            d = config.d_model
            self.copy_query = nn.Linear(d, d, bias=False)
            self.copy_key = nn.Linear(d, d, bias=False)
            self.copy_gate = nn.Linear(2 * d, 1)
            for lin in (self.copy_query, self.copy_key, self.copy_gate):
                nn.init.normal_(lin.weight, std=d**-0.5)
            nn.init.zeros_(self.copy_gate.bias)

        def forward(
            self,
            input_ids: Any = None,
            attention_mask: Any = None,
            decoder_input_ids: Any = None,
            decoder_attention_mask: Any = None,
            encoder_outputs: Any = None,
            cache: Any = None,
            labels: Any = None,
            use_cache: Any = None,
            copy_source_ids: Any = None,
            **kwargs: Any,
        ) -> Any:
            src = copy_source_ids if copy_source_ids is not None else input_ids
            if src is None:
                raise ValueError("copy_source_ids (the note's token ids) are required after the first step")
            if encoder_outputs is None:
                encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            elif not isinstance(encoder_outputs, BaseModelOutput):
                encoder_outputs = BaseModelOutput(last_hidden_state=encoder_outputs[0])
            enc = encoder_outputs[0]  # (B, S, D)
            if labels is not None and decoder_input_ids is None:
                decoder_input_ids = self._shift_right(labels)
            dec = self.decoder(
                input_ids=decoder_input_ids,
                attention_mask=decoder_attention_mask,
                cache=cache,
                encoder_hidden_states=enc,
                encoder_attention_mask=attention_mask,
                use_cache=use_cache,
                **kwargs,
            )
            h = dec[0]  # (B, T, D), after the decoder's final layer norm
            scaled = h * (self.model_dim**-0.5) if self.config.scale_decoder_outputs else h
            vocab = torch.log_softmax(self.lm_head(scaled).float(), dim=-1)  # (B, T, V)
            att = torch.einsum("btd,bsd->bts", self.copy_query(h), self.copy_key(enc)) * (h.shape[-1] ** -0.5)
            if attention_mask is not None:
                att = att.masked_fill(attention_mask[:, None, :] == 0, float("-inf"))
            att = torch.softmax(att.float(), dim=-1)  # (B, T, S)
            context = torch.einsum("bts,bsd->btd", att.to(enc.dtype), enc)
            gate = torch.sigmoid(self.copy_gate(torch.cat([h, context], dim=-1)).float())  # (B, T, 1)
            copy = torch.zeros_like(vocab).scatter_add_(
                2, src[:, None, :].expand(-1, att.shape[1], -1), att
            )  # (B, T, V): attention mass summed per source token id
            logp = torch.log(gate * vocab.exp() + (1 - gate) * copy + 1e-9)
            loss = None
            if labels is not None:
                loss = nn.functional.nll_loss(
                    logp.view(-1, logp.shape[-1]), labels.to(logp.device).view(-1), ignore_index=-100
                )
            return Seq2SeqLMOutput(
                loss=loss,
                logits=logp,
                cache=dec.cache,
                encoder_last_hidden_state=enc,
            )

    _COPY_CLASS = T5CopyForConditionalGeneration
    return _COPY_CLASS


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
