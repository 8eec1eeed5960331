"""A byte-level BPE tokenizer trained on the run's own corpus (no download; any script round-trips).

Byte-level BPE starts from the 256 byte symbols, so Chinese, emoji and typos never become unknown;
the merges learned on the corpus make frequent words (and frequent CJK characters) single tokens.
The four structural tokens of the target format (:mod:`tagging.student.format`) are special tokens,
so a tag text can never be confused with a separator.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["SPECIAL_TOKENS", "train_tokenizer"]

# pad (also T5's decoder start), end of sequence, unknown, then the target format's separators:
# <dim> ends a dimension name, <val> separates values, <seg> separates dimensions.
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<dim>", "<val>", "<seg>")


def train_tokenizer(texts: Iterable[str], *, vocab_size: int = 4000) -> Any:
    """Train a byte-level BPE on ``texts``; return a ``PreTrainedTokenizerFast``.

    Args:
        texts: the corpus (source texts and target tag texts).
        vocab_size: the most tokens (bytes + merges + specials); fewer when the corpus is small.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ids 0..5 = :data:`SPECIAL_TOKENS`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=list(SPECIAL_TOKENS[3:]),
    )
