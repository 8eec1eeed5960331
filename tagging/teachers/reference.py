"""The reference teacher: a dataset's human or creator tags, cleaned through the handbook.

For real datasets that carry tags (KuaiRec hashtags, MovieLens user tags) this is the evaluation
reference and a teacher in its own right. Each tag is canonicalized; boilerplate (the handbook's
data-driven list) is removed; a tag equal to a handbook value or synonym of the note's category takes
that value's dimension, one within :data:`FUZZY_THRESHOLD` similarity of a form takes it as a fuzzy
match; every other tag is kept with dimension ``"other"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from features.errors import ConfigError
from tagging.handbook_model import Handbook
from tagging.normalize import canonical, handbook_lookup, normalize_tags, similarity
from tagging.types import Evidence, NoteInput, Tag, TagResult

__all__ = ["CODE_VERSION", "FUZZY_THRESHOLD", "ReferenceTeacher", "clean_reference_tags"]

CODE_VERSION = "reference-1"
FUZZY_THRESHOLD = 0.85


def clean_reference_tags(
    tags: Iterable[str], handbook: Handbook, category: str, *, cap_per_dimension: int = 10
) -> tuple[Tag, ...]:
    """Clean one note's reference tags (see module docstring); returns normalized tags."""
    lookup = handbook_lookup(handbook, category)
    boiler = {canonical(b) for b in handbook.boilerplate}
    raw: list[Tag] = []
    for t in tags:
        c = canonical(t)
        if not c or c in boiler:
            continue
        entry = lookup.get(c)
        conf = 1.0
        if entry is None:
            best = max(lookup, key=lambda f: similarity(c, f), default=None)
            if best is not None and similarity(c, best) >= FUZZY_THRESHOLD:
                entry, conf = lookup[best], 0.9
        if entry is not None:
            raw.append(Tag(entry.value, entry.dimension, conf, (Evidence("hashtag", t),)))
        else:
            raw.append(Tag(c, "other", 0.8, (Evidence("hashtag", t),)))
    return normalize_tags(raw, handbook=handbook, category=category, cap_per_dimension=cap_per_dimension)


class ReferenceTeacher:
    """A Tagger over reference tags known in advance (NoteInput does not carry them).

    Args:
        handbook: the handbook (boilerplate list, dimensions, synonyms).
        reference_tags: note_id -> raw tags; or pass ``notes``, a canonical notes table with a
            ``reference_tags`` column.
        notes: see ``reference_tags``.
        cap_per_dimension: cap after cleaning (generous: references are not a budget).

    Raises:
        ConfigError: neither ``reference_tags`` nor a ``notes`` table with ``reference_tags``.
    """

    name = "reference"

    def __init__(
        self,
        handbook: Handbook,
        *,
        reference_tags: Mapping[str, Sequence[str]] | None = None,
        notes: pd.DataFrame | None = None,
        cap_per_dimension: int = 10,
        **_: Any,
    ) -> None:
        if reference_tags is None:
            if notes is None or "reference_tags" not in notes.columns:
                raise ConfigError(
                    "the reference teacher needs reference_tags={note_id: [tags]} or notes= a notes table "
                    "with a 'reference_tags' column (this dataset has none)"
                )
            reference_tags = {
                str(n): list(t) if t is not None else []
                for n, t in zip(notes["note_id"], notes["reference_tags"], strict=True)
            }
        self.handbook = handbook
        self.reference_tags = reference_tags
        self.cap_per_dimension = cap_per_dimension
        self.version = f"{handbook.version or handbook.content_hash()}+{CODE_VERSION}"

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        out: list[TagResult] = []
        for note in notes:
            raw = self.reference_tags.get(note.note_id)
            if raw is None:
                out.append(TagResult(note.note_id, status="failed", error="no reference tags for this note"))
                continue
            tags = clean_reference_tags(
                raw, self.handbook, note.category, cap_per_dimension=self.cap_per_dimension
            )
            out.append(TagResult(note.note_id, tags, trace={"raw": list(raw), "kept": len(tags)}))
        return out
