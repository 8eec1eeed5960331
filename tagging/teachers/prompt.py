"""The handbook-guided chain-of-thought prompt, its JSON output schema, and the output parser.

Every LLM-style teacher (the HTTP LLM teacher and the local-model teacher) sends the same messages:
a system message with the rules and the output schema, and a user message with the note (title,
body, image captions; images as OpenAI ``image_url`` parts when the note has URLs) and the handbook
section for the note's category. The model is asked to think in four explicit steps — understand the
note → choose the relevant dimensions → extract fine-grained tags with evidence → merge duplicates —
and to answer with one JSON object (:class:`TeacherOutput`).

Model output is untrusted data: :func:`parse_output` finds the JSON (bare, in a ```json fence, or
wrapped in prose), repairs a few obvious, lossless problems (trailing commas, a confidence given as a
string or outside [0, 1], evidence given as a bare string) and otherwise rejects the answer with an
:class:`InvalidOutputError` whose message says what was wrong, so the caller can ask for a repair.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import TagLLMError
from tagging.handbook_model import Handbook
from tagging.types import Evidence, NoteInput, Tag

__all__ = [
    "PROMPT_VERSION",
    "InvalidOutputError",
    "TeacherOutput",
    "build_messages",
    "normalize",
    "output_to_tags",
    "parse_output",
    "repair_message",
]

PROMPT_VERSION = "cot-v1"

_MAX_NOTE_CHARS = 4000  # a note body beyond this adds cost, not tags
_MAX_VALUES_PER_DIMENSION = 30


class InvalidOutputError(TagLLMError, ValueError):
    """A model answer is not a valid :class:`TeacherOutput` (the message says why, briefly)."""

    grpc_status = "DATA_LOSS"


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvidenceOut(_Out):
    source: Literal["title", "body", "image", "hashtag"]
    span: str = Field(min_length=1, max_length=500)


class TagOut(_Out):
    text: str = Field(min_length=1, max_length=100)
    dimension: str = Field(min_length=1, max_length=100)
    evidence: list[EvidenceOut] = Field(default_factory=list, max_length=10)
    confidence: float = Field(ge=0.0, le=1.0)


class MergeOut(_Out):
    kept: str = Field(min_length=1)
    merged: list[str] = Field(default_factory=list)


class TeacherOutput(_Out):
    """The JSON object the teacher must answer with (one per note)."""

    understanding: str = Field(max_length=2000)
    dimensions: list[str] = Field(default_factory=list, max_length=50)
    tags: list[TagOut] = Field(default_factory=list, max_length=60)
    merged: list[MergeOut] = Field(default_factory=list, max_length=60)


_SCHEMA_EXAMPLE = {
    "understanding": "one or two sentences: what the note is about and who would care",
    "dimensions": ["<handbook dimension names that apply>"],
    "tags": [
        {
            "text": "<fine-grained tag, 1-4 words>",
            "dimension": "<a dimension name, or 'other'>",
            "evidence": [{"source": "title|body|image|hashtag", "span": "<exact words from the note>"}],
            "confidence": 0.9,
        }
    ],
    "merged": [{"kept": "<tag kept>", "merged": ["<near-duplicate tags folded into it>"]}],
}

SYSTEM_PROMPT = f"""You are a careful tagging expert for a note-sharing community.
You tag a note with fine-grained, non-redundant interest tags, guided by the User Interest Handbook for \
the note's category. Think step by step:
1. Understand the note: what it is about, from the title, body and images.
2. Choose the handbook dimensions that this note actually says something about.
3. Extract fine-grained tags for those dimensions. Prefer a handbook value (or its canonical form when a \
synonym appears); use a new specific phrase only when no value fits. Every tag needs evidence: the exact \
span of the note (title, body, image caption or hashtag) that supports it. No generic tags (the category \
name itself, platform words such as "fyp" or "viral").
4. Merge duplicates: synonyms and near-duplicates become one tag; list what you merged.
Answer with ONE JSON object and nothing else, exactly in this form:
{json.dumps(_SCHEMA_EXAMPLE, ensure_ascii=False)}
confidence is a number between 0 and 1."""


def _handbook_text(handbook: Handbook, category: str) -> str:
    section = handbook.section(category)
    if not section.dimensions:
        return f"(the handbook has no section for category {category!r}: use dimension 'other')"
    lines = [section.description] if section.description else []
    for dim in section.dimensions:
        head = f"- {dim.name}" + (f": {dim.description}" if dim.description else "")
        values = []
        for v in sorted(dim.values, key=lambda v: -v.weight)[:_MAX_VALUES_PER_DIMENSION]:
            values.append(v.value + (f" (synonyms: {', '.join(v.synonyms)})" if v.synonyms else ""))
        lines.append(head + "\n    values: " + "; ".join(values))
    if handbook.boilerplate:
        lines.append("Never tag (boilerplate): " + ", ".join(handbook.boilerplate[:50]))
    return "\n".join(lines)


def _note_text(note: NoteInput) -> str:
    parts = [f"Category: {note.category}", f"Title: {note.title[:_MAX_NOTE_CHARS]}"]
    parts.append(f"Body: {note.body[:_MAX_NOTE_CHARS]}")
    for i, cap in enumerate(note.image_captions, 1):
        parts.append(f"Image {i} caption: {cap[:500]}")
    return "\n".join(parts)


def build_messages(note: NoteInput, handbook: Handbook) -> list[dict[str, Any]]:
    """The OpenAI chat messages for one note (system + user).

    Args:
        note: the note; its ``image_urls`` become ``image_url`` content parts.
        handbook: the handbook; only the note category's section is sent.

    Returns:
        ``[{"role": "system", ...}, {"role": "user", ...}]``; the user content is a string, or a list
        of content parts (text first, then one ``image_url`` part per URL) when the note has images.
    """
    text = (
        f"User Interest Handbook for category {note.category!r}:\n{_handbook_text(handbook, note.category)}\n\n"
        f"The note:\n{_note_text(note)}\n\n"
        "Follow the four steps and answer with the JSON object only."
    )
    content: str | list[dict[str, Any]] = text
    if note.image_urls:
        content = [{"type": "text", "text": text}] + [
            {"type": "image_url", "image_url": {"url": url}} for url in note.image_urls
        ]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]


def repair_message(error: InvalidOutputError) -> dict[str, str]:
    """The follow-up user message asking the model to fix its previous answer."""
    return {
        "role": "user",
        "content": (
            f"Your previous answer was not valid: {str(error)[:300]}. Reply again with ONLY one JSON "
            "object in exactly the requested form (keys: understanding, dimensions, tags, merged), "
            "no prose and no code fence."
        ),
    }


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _extract_json(text: str) -> Any:
    candidates = [m.group(1) for m in _FENCE.finditer(text)]
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start : end + 1])
    candidates.append(text)
    for cand in candidates:
        for variant in (cand, _TRAILING_COMMA.sub(r"\1", cand)):
            try:
                return json.loads(variant)
            except (json.JSONDecodeError, RecursionError):  # RecursionError: absurdly deep nesting
                continue
    preview = text.strip()[:80].replace("\n", " ")
    raise InvalidOutputError(f"no JSON object found in the answer (starts with {preview!r})")


def _repair(raw: Any) -> Any:
    """Lossless fixes of common model slips; anything else is left for validation to reject."""
    if not isinstance(raw, dict):
        return raw
    raw.setdefault("understanding", "")
    raw.setdefault("merged", [])
    tags = raw.get("tags")
    if isinstance(tags, list):
        for tag in tags:
            if not isinstance(tag, dict):
                continue
            conf = tag.get("confidence", 0.5)
            if isinstance(conf, str):
                try:
                    conf = float(conf.strip().rstrip("%")) / (100.0 if conf.strip().endswith("%") else 1.0)
                except ValueError:
                    continue
            if isinstance(conf, int | float) and not isinstance(conf, bool):
                tag["confidence"] = min(1.0, max(0.0, float(conf)))
            ev = tag.get("evidence")
            if isinstance(ev, str):
                tag["evidence"] = [{"source": "body", "span": ev}]
            elif isinstance(ev, list):
                for item in ev:
                    if isinstance(item, dict) and isinstance(item.get("source"), str):
                        item["source"] = item["source"].strip().lower()
            if isinstance(tag.get("dimension"), str) and not tag["dimension"].strip():
                tag["dimension"] = "other"
    return raw


def parse_output(text: str) -> TeacherOutput:
    """Parse and validate one model answer.

    Args:
        text: the raw assistant message content.

    Returns:
        The validated output.

    Raises:
        InvalidOutputError: no JSON object, or it does not match :class:`TeacherOutput`; the message
            names the first offending fields (and is safe to send back to the model).
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidOutputError("the answer is empty")
    raw = _repair(_extract_json(text))
    if not isinstance(raw, dict):
        raise InvalidOutputError(f"expected a JSON object, got {type(raw).__name__}")
    try:
        return TeacherOutput.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(x) for x in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:3]
        ]
        raise InvalidOutputError("schema mismatch: " + "; ".join(problems)) from exc


def _source_text(note: NoteInput, source: str) -> str:
    if source == "title":
        return note.title
    if source == "image":
        return " ".join(note.image_captions)
    return f"{note.title} {note.body}"  # body and hashtags (hashtags live in the text)


def output_to_tags(
    output: TeacherOutput, note: NoteInput, handbook: Handbook
) -> tuple[tuple[Tag, ...], dict[str, Any]]:
    """Turn a validated answer into Tags plus an audit trace.

    Dimensions not in the note's handbook section become ``"other"``. Evidence spans are checked
    against the note: a span that does not occur in its source (case-insensitive) is dropped, and a
    tag left with no grounded evidence keeps only half its confidence (the model may paraphrase, but
    an unsupported tag should rank below a supported one).

    Returns:
        (tags, trace); tags are not yet normalized.
    """
    known = {d.name for d in handbook.section(note.category).dimensions}
    tags: list[Tag] = []
    ungrounded = 0
    for t in output.tags:
        evidence = tuple(
            Evidence(source=e.source, span=e.span)
            for e in t.evidence
            if e.span.strip().lower() in _source_text(note, e.source).lower()
        )
        conf = t.confidence
        if not evidence:
            ungrounded += 1
            conf *= 0.5
        dim = t.dimension if t.dimension in known else "other"
        tags.append(Tag(text=t.text, dimension=dim, confidence=conf, evidence=evidence))
    trace = {
        "understanding": output.understanding,
        "dimensions": list(output.dimensions),
        "merged": [m.model_dump() for m in output.merged],
        "ungrounded_tags": ungrounded,
    }
    return tuple(tags), trace


def normalize(
    tags: tuple[Tag, ...], handbook: Handbook, category: str, cap_per_dimension: int
) -> tuple[Tag, ...]:
    """Normalize teacher tags through the shared :func:`tagging.normalize.normalize_tags`.

    Until that module exists, a minimal stand-in lowercases, collapses spaces and drops duplicates
    (keeping the most confident); it does no synonym merge or boilerplate filtering.
    """
    try:
        from tagging.normalize import normalize_tags
    except ImportError:
        best: dict[str, Tag] = {}
        for t in tags:
            text = " ".join(t.text.lower().split())
            if text and (text not in best or t.confidence > best[text].confidence):
                best[text] = Tag(
                    text=text, dimension=t.dimension, confidence=t.confidence, evidence=t.evidence
                )
        return tuple(best.values())
    return normalize_tags(tags, handbook=handbook, category=category, cap_per_dimension=cap_per_dimension)
