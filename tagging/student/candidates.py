"""Candidate tags from a note's own words: hashtags, handbook values and known tags found in the text.

The scorer student (:mod:`tagging.student.scorer`) decides among two kinds of tags: *extractive*
candidates proposed here, and *abstractive* known tags (the teacher's frequent training tags, scored
by a classifier). A candidate is

- a creator **hashtag** (``#tag``, ``#tag#``, full-width ``＃``), canonicalized; mapped to its handbook
  value when it is a handbook value or synonym of the note's category;
- a **handbook** value or synonym of the note's category that occurs in the title or body (the value
  is proposed, in its dimension, as the teacher is asked to do);
- a **known** tag (a tag text the teacher used in training) that occurs in the title or body.

Matching is on the canonical form (:func:`~tagging.normalize.canonical`), at word edges for Latin
script and at any character for CJK, for spans of at most ``max_chars`` characters. Boilerplate
(``handbook.boilerplate``) is never proposed. Each candidate carries the evidence a scorer needs:
where it was found, how often, how early.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tagging.handbook_model import Handbook
from tagging.normalize import canonical, handbook_lookup
from tagging.types import NoteInput

__all__ = ["HASHTAG_RE", "Candidate", "CandidateExtractor", "hashtags", "note_text"]

# a closing mark (Weibo-style "#tag#") belongs to the hashtag, so the text after it is not one
HASHTAG_RE = re.compile(r"[#＃]([\w·]+)[#＃]?")
_CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_SOURCES = ("hashtag", "title", "body", "handbook", "known")


def hashtags(text: str) -> list[str]:
    """The canonical hashtags of ``text`` in order of appearance (duplicates kept once)."""
    out = [canonical(h) for h in HASHTAG_RE.findall(text)]
    return list(dict.fromkeys(h for h in out if h))


def note_text(note: NoteInput, boilerplate: frozenset[str] = frozenset()) -> tuple[str, str]:
    """(title, body) as the student reads them: boilerplate hashtags removed, other hashtags kept.

    Teacher and student see the same note: cover text and caption with the creator's hashtags;
    only hashtags whose canonical form is boilerplate are dropped (with their ``#``).
    """

    def strip(text: str) -> str:
        if not boilerplate or ("#" not in text and "＃" not in text):
            return text
        return HASHTAG_RE.sub(lambda m: " " if canonical(m.group(1)) in boilerplate else m.group(0), text)

    caps = " / ".join(c for c in note.image_captions if c)
    body = " ".join(p for p in (note.body, caps) if p)
    return strip(note.title), strip(body)


@dataclass(frozen=True)
class Candidate:
    """One proposed tag and its evidence in the note.

    Attributes:
        text: canonical tag text.
        dimension: handbook dimension, the teacher's usual one for a known tag, or ``"other"``.
        sources: where it was found, a subset of hashtag/title/body/handbook/known.
        count: occurrences in title + body (hashtags included).
        first_pos: position of the first occurrence relative to the text length, in [0, 1].
    """

    text: str
    dimension: str
    sources: frozenset[str]
    count: int
    first_pos: float


class CandidateExtractor:
    """Proposes :class:`Candidate` tags for notes.

    Args:
        handbook: supplies per-category values/synonyms and the boilerplate list (None: none).
        known: known tag text -> its usual dimension (the teacher's training tags).
        max_chars: longest span matched, in characters.

    Example:
        >>> ex = CandidateExtractor(None, {"cream white": "colour"})
        >>> [c.text for c in ex.extract(NoteInput("n1", "shoes", "Cream white sneakers", "#retro"))]
        ['retro', 'cream white']
    """

    def __init__(self, handbook: Handbook | None, known: Mapping[str, str], *, max_chars: int = 16) -> None:
        self.handbook = handbook
        self.known = dict(known)
        self.boilerplate = frozenset(canonical(b) for b in handbook.boilerplate) if handbook else frozenset()
        self.max_chars = max_chars
        self._lookups: dict[str, dict[str, tuple[str, str, bool]]] = {}

    def _lookup(self, category: str) -> dict[str, tuple[str, str, bool]]:
        """Surface form -> (value, dimension, is_handbook) for ``category``: handbook forms win."""
        if category not in self._lookups:
            table: dict[str, tuple[str, str, bool]] = {
                t: (t, d, False) for t, d in self.known.items() if len(t) <= self.max_chars
            }
            if self.handbook is not None:
                for form, entry in handbook_lookup(self.handbook, category).items():
                    if len(form) <= self.max_chars:
                        table[form] = (entry.value, entry.dimension, True)
            self._lookups[category] = table
        return self._lookups[category]

    def extract(self, note: NoteInput) -> list[Candidate]:
        """The note's candidates: hashtags first, then spans in order of first occurrence."""
        title, body = note_text(note, self.boilerplate)
        lookup = self._lookup(note.category)
        found: dict[str, _Found] = {}

        def add(value: str, dim: str, sources: tuple[str, ...], pos: float) -> None:
            if not value or value in self.boilerplate:
                return
            slot = found.setdefault(value, _Found(dim, set(), 0, pos))
            slot.sources.update(sources)
            slot.count += 1
            if dim != "other" and slot.dim == "other":
                slot.dim = dim

        for tag in hashtags(f"{title} {body}"):
            value, dim, is_hb = lookup.get(tag, (tag, self.known.get(tag, "other"), False))
            add(value, dim, _tags_of("hashtag", is_hb, value in self.known), 0.0)
        texts = [("title", canonical(title)), ("body", canonical(body))]
        total = sum(len(t) for _, t in texts) or 1
        offset = 0
        for source, text in texts:
            for start, end in _spans(text, self.max_chars):
                hit = lookup.get(text[start:end])
                if hit is not None:
                    value, dim, is_hb = hit
                    add(
                        value,
                        dim,
                        _tags_of(source, is_hb, not is_hb or value in self.known),
                        (offset + start) / total,
                    )
            offset += len(text)
        return [Candidate(v, f.dim, frozenset(f.sources), f.count, f.pos) for v, f in found.items()]

    def extract_many(self, notes: Sequence[NoteInput]) -> list[list[Candidate]]:
        return [self.extract(n) for n in notes]


@dataclass
class _Found:
    dim: str
    sources: set[str]
    count: int
    pos: float


def _tags_of(source: str, handbook: bool, known: bool) -> tuple[str, ...]:
    return (source, *(("handbook",) if handbook else ()), *(("known",) if known else ()))


def _spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Every (start, end) of at most ``max_chars`` characters that starts and ends on a word edge.

    Between two CJK characters every position is an edge; in Latin script only spaces are.
    """
    n = len(text)
    if n == 0:
        return []
    cjk = [bool(_CJK_CHAR.match(c)) for c in text]
    starts = [
        i for i in range(n) if text[i] != " " and (i == 0 or text[i - 1] == " " or cjk[i] or cjk[i - 1])
    ]
    ends = {
        j
        for j in range(1, n + 1)
        if text[j - 1] != " " and (j == n or text[j] == " " or cjk[j] or cjk[j - 1])
    }
    return [(i, j) for i in starts for j in range(i + 1, min(n, i + max_chars) + 1) if j in ends]
