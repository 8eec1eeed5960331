"""Build a tiny, randomly initialised causal LM folder from a config (for tests and demos; no download).

The tokenizer is a byte-level BPE trained in memory on a few strings with the ``tokenizers`` package,
so any text round-trips; the model is a 2-layer Llama (or GPT-2) with random weights, so its output is
nonsense — exactly what the local-model teacher must survive.

Example::

    path = build_tiny_model(tmp_path / "tiny")
    teacher = make_local_teacher(handbook, model_dir=path)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

__all__ = ["CHAT_TEMPLATE", "build_tiny_model"]

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)

_CORPUS = [
    '{"understanding": "a note", "dimensions": ["colour"], "tags": [{"text": "cream white", '
    '"dimension": "colour", "evidence": [{"source": "title", "span": "cream"}], "confidence": 0.9}], "merged": []}',
    "Title: Body: Category: Image caption: handbook dimension values synonyms evidence tags merge",
    "the quick brown fox jumps over the lazy dog 0123456789 sneakers coffee travel hiking",
]


def build_tiny_model(
    path: str | os.PathLike[str],
    *,
    arch: Literal["llama", "gpt2"] = "llama",
    chat_template: bool = True,
    vocab_size: int = 400,
    max_positions: int = 4096,
    seed: int = 0,
) -> Path:
    """Write a tiny random model + tokenizer to ``path`` (loadable with ``from_pretrained``).

    Args:
        path: output folder (created).
        arch: ``"llama"`` (rotary positions, so long prompts are cheap) or ``"gpt2"``.
        chat_template: give the tokenizer a chat template (else the teacher uses a plain prompt).
        vocab_size: BPE vocabulary size (bytes + merges + 3 special tokens).
        max_positions: the context length the config declares.
        seed: torch seed for the random weights.

    Returns:
        The folder.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedModel,
        PreTrainedTokenizerFast,
    )

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    model: PreTrainedModel
    if arch == "llama":
        llama = LlamaConfig(
            vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )  # fmt: skip
        model = LlamaForCausalLM(llama)
    elif arch == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=len(fast), n_embd=32, n_layer=2, n_head=4, n_positions=max_positions,
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )  # fmt: skip
        model = GPT2LMHeadModel(gpt2)
    else:
        raise ValueError(f"arch must be 'llama' or 'gpt2'; got {arch!r}")
    model.save_pretrained(out)
    return out
