"""The student: a small seq2seq model distilled from the teacher's tags, tagging every note fast.

Files, in pipeline order:

- ``config.py``: :class:`StudentConfig` (model size, sequence lengths, training budget), device choice.
- ``tokenizer.py``: byte-level BPE trained on the run's corpus (any script, Chinese included).
- ``format.py``: the dimension-aware target (``colour: cream white; off white | style: retro``), its
  parser (never raises) and the trie that constrains decoding so every output parses.
- ``model.py``: the T5-style model built from a config (no downloaded weights).
- ``data.py``: the note -> source text, the deterministic hash split, batching.
- ``distill.py``: sequence-level distillation with early stopping and resumable checkpoints.
- ``apply.py``: :class:`StudentTagger` (a :class:`~tagging.types.Tagger`): batched, length-sorted,
  constrained greedy/beam decoding.
- ``bench.py``: ``python -m tagging.student.bench --run RUN_DIR --json``.

Heavy imports (torch, transformers) happen inside the functions that need them.
"""

from __future__ import annotations

__all__: list[str] = []
