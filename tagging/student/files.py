"""The student's files, each named once: what a model folder holds (the contract between the
trainers that export it and every loader) and what the training work folder holds.

A model folder (``RunDir.student_model`` by default)::

    student.json        format, architecture, constraints, split, teacher       (META)
    model.safetensors   the weights                                            (WEIGHTS)
    README.md           the model card                                         (CARD)
    config.json         transformers' model config (seq2seq)                   (CONFIG)
    tokenizer.json      the tokenizer, with its companions (seq2seq)           (TOKENIZER)
    memory.npz          the neighbour memory's arrays (scorer, optional)       (MEMORY)
    memory.json         the neighbour memory's metadata (scorer, optional)     (MEMORY_META)

The work folder (``RunDir.student_work``)::

    split.parquet       note_id -> train / val / test                          (SPLIT)
    tokenizer/          the seq2seq tokenizer + fingerprint.txt                (TOKENIZER_DIR, FINGERPRINT)
    checkpoints/        last.pt and best.pt (seq2seq)                          (CHECKPOINTS, LAST, BEST)
    scorer_ckpt.pt      the scorer's checkpoint                                (SCORER_CKPT)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BEST",
    "CARD",
    "CHECKPOINTS",
    "CONFIG",
    "FINGERPRINT",
    "LAST",
    "MEMORY",
    "MEMORY_META",
    "META",
    "SCORER_CKPT",
    "SCORER_FILES",
    "SEQ2SEQ_FILES",
    "SPLIT",
    "TOKENIZER",
    "TOKENIZER_DIR",
    "WEIGHTS",
    "ModelFiles",
    "WorkFiles",
]

# ---- a model folder
META = "student.json"
WEIGHTS = "model.safetensors"
CARD = "README.md"
CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
MEMORY = "memory.npz"
MEMORY_META = "memory.json"
SEQ2SEQ_FILES = (CONFIG, WEIGHTS, TOKENIZER, META)
"""The files a seq2seq model folder must have."""
SCORER_FILES = (WEIGHTS, META)
"""The files a scorer model folder must have."""

# ---- the work folder
SPLIT = "split.parquet"
TOKENIZER_DIR = "tokenizer"
FINGERPRINT = "fingerprint.txt"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
SCORER_CKPT = "scorer_ckpt.pt"


@dataclass(frozen=True)
class ModelFiles:
    """The paths of a model folder's files.

    Args:
        folder: the model folder.
    """

    folder: Path

    @classmethod
    def of(cls, folder: str | os.PathLike[str]) -> ModelFiles:
        return cls(Path(folder))

    @property
    def meta(self) -> Path:
        return self.folder / META

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS

    @property
    def card(self) -> Path:
        return self.folder / CARD

    @property
    def memory(self) -> Path:
        return self.folder / MEMORY

    @property
    def memory_meta(self) -> Path:
        return self.folder / MEMORY_META


@dataclass(frozen=True)
class WorkFiles:
    """The paths of the training work folder's files.

    Args:
        folder: the work folder.
    """

    folder: Path

    @property
    def split(self) -> Path:
        return self.folder / SPLIT

    @property
    def tokenizer_dir(self) -> Path:
        return self.folder / TOKENIZER_DIR

    @property
    def checkpoints(self) -> Path:
        return self.folder / CHECKPOINTS

    @property
    def scorer_checkpoint(self) -> Path:
        return self.folder / SCORER_CKPT
