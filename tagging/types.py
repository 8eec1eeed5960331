"""Values shared by every tagger: the note a tagger reads, the tags it returns, and the protocol.

A tagger is anything with ``name``, ``version`` and ``tag(notes) -> list[TagResult]``: the offline
handbook teacher, the LLM teacher, the local-model teacher, the reference teacher and the student
all satisfy :class:`Tagger`, so every consumer (evaluation, distillation, the tags table) treats them
alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import pandas as pd

__all__ = [
    "Evidence",
    "NoteInput",
    "Tag",
    "TagResult",
    "Tagger",
    "notes_from_frame",
    "results_to_tags_table",
]

Source = Literal["title", "body", "image", "hashtag", "model"]


@dataclass(frozen=True)
class NoteInput:
    """What a tagger sees of one note (text plus images; captions stand in for images offline).

    Attributes:
        note_id: the note's id.
        category: the note's category (selects the handbook section).
        title: title text.
        body: body text.
        image_captions: one caption per image.
        image_urls: optional image URLs/data-URIs, sent to multimodal LLMs as ``image_url`` parts.
    """

    note_id: str
    category: str
    title: str
    body: str
    image_captions: tuple[str, ...] = ()
    image_urls: tuple[str, ...] = ()

    def content_key(self) -> str:
        """A stable string of everything a tagger reads (for cache keys)."""
        return "\x1f".join(
            [
                self.category,
                self.title,
                self.body,
                "\x1e".join(self.image_captions),
                "\x1e".join(self.image_urls),
            ]
        )


@dataclass(frozen=True)
class Evidence:
    """One step of a chain of thought: which span of which source supports a tag."""

    source: Source
    span: str


@dataclass(frozen=True)
class Tag:
    """One fine-grained tag.

    Attributes:
        text: canonical tag text (normalized: lower case, single spaces).
        dimension: the handbook dimension it belongs to (``"other"`` when none fits).
        confidence: in [0, 1].
        evidence: the spans that support it (empty for taggers without a trace).
    """

    text: str
    dimension: str
    confidence: float = 1.0
    evidence: tuple[Evidence, ...] = ()

    def as_record(self) -> dict[str, Any]:
        """The tags-table form: {text, dimension, confidence}."""
        return {"text": self.text, "dimension": self.dimension, "confidence": float(self.confidence)}


@dataclass(frozen=True)
class TagResult:
    """A tagger's answer for one note.

    Attributes:
        note_id: the note.
        tags: the tags (normalized, deduplicated).
        status: ``"ok"`` or ``"failed"``.
        error: why it failed (``status == "failed"``).
        trace: the chain of thought as data (steps, chosen dimensions, merges), for audit.
    """

    note_id: str
    tags: tuple[Tag, ...] = ()
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None
    trace: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Tagger(Protocol):
    """Anything that tags notes."""

    name: str
    version: str

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        """Tag ``notes``; one result per note, in order; failures are results, not exceptions."""
        ...


def notes_from_frame(notes: pd.DataFrame) -> list[NoteInput]:
    """Canonical ``notes`` table -> NoteInput list (image_urls from an optional ``image_urls`` column)."""
    urls = notes["image_urls"] if "image_urls" in notes.columns else [()] * len(notes)
    return [
        NoteInput(
            note_id=str(nid),
            category=str(cat),
            title=str(title),
            body=str(body),
            image_captions=tuple(caps if caps is not None else ()),
            image_urls=tuple(u if u is not None else ()),
        )
        for nid, cat, title, body, caps, u in zip(
            notes["note_id"],
            notes["category"],
            notes["title"],
            notes["body"],
            notes["image_captions"],
            urls,
            strict=True,
        )
    ]


def results_to_tags_table(
    results: Iterable[TagResult], *, tagger: str, version: str, generated_at: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Successful results -> canonical ``tags`` table rows (failed results are left out)."""
    ts = generated_at if generated_at is not None else pd.Timestamp.now(tz="UTC")
    rows = [
        {
            "note_id": r.note_id,
            "tagger": tagger,
            "tagger_version": version,
            "tags": [t.as_record() for t in r.tags],
            "generated_at": ts,
        }
        for r in results
        if r.status == "ok"
    ]
    return pd.DataFrame(rows, columns=["note_id", "tagger", "tagger_version", "tags", "generated_at"])
