"""The copy-head student network: T5 with a pointer-generator head (See et al., 2017).

This module imports torch and transformers at its top; :func:`tagging.student.model.copy_model_class`
imports it on first use, so importing :mod:`tagging.student.model` stays light.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

__all__ = ["T5CopyForConditionalGeneration"]


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
