"""What the student reads, the deterministic held-out split, and length-grouped batches.

The source text is the note's category, title, body and image captions; never its reference tags or
hashtags. The split puts a note in ``test`` / ``val`` / ``train`` by a hash of its note_id alone, so
it does not depend on row order, dataset size or the random seed, and a note stays held out when the
run is re-made.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from tagging.types import NoteInput

__all__ = ["Example", "batches", "note_source", "split_of"]


def note_source(note: NoteInput, *, lowercase: bool = False) -> str:
    """``category | title | body | caption 1 / caption 2`` (empty parts left out).

    ``lowercase``: the copy-head student's form (values are lower-case, so a value in the target is
    spelled with the same tokens as in the note).
    """
    caps = " / ".join(c for c in note.image_captions if c)
    text = " | ".join(p for p in (note.category, note.title, note.body, caps) if p and p.strip())
    return text.lower() if lowercase else text


def _unit(note_id: str) -> float:
    digest = hashlib.sha256(f"tagllm-student-split:{note_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(note_id: str, *, test_share: float, val_share: float) -> str:
    """``"test"`` (hash bucket < test_share), ``"val"`` (next val_share) or ``"train"``."""
    u = _unit(str(note_id))
    if u < test_share:
        return "test"
    if u < test_share + val_share:
        return "val"
    return "train"


@dataclass(frozen=True)
class Example:
    """One training pair as token ids: source (S,) and target (T,) ending with eos."""

    note_id: str
    source: tuple[int, ...]
    target: tuple[int, ...]


def batches(
    examples: Sequence[Example], batch_size: int, *, seed: int | None, pad_id: int = 0
) -> Iterator[tuple[list[list[int]], list[list[int]]]]:
    """Length-grouped batches: sort by source length within shuffled pools, shuffle the batches.

    ``seed`` None keeps the given order (evaluation). Yields (sources, targets) as id lists; padding
    is the caller's job.
    """
    idx = list(range(len(examples)))
    if seed is not None:
        rng = random.Random(seed)
        rng.shuffle(idx)
        pool = batch_size * 50
        idx = [
            i
            for s in range(0, len(idx), pool)
            for i in sorted(idx[s : s + pool], key=lambda j: len(examples[j].source))
        ]
        chunks = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
        rng.shuffle(chunks)
    else:
        chunks = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    for chunk in chunks:
        yield [list(examples[i].source) for i in chunk], [list(examples[i].target) for i in chunk]
