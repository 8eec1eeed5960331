"""The offline handbook teacher (the default; no LLM): handbook values found in a note, with a trace.

It follows the same four-step chain of thought the LLM teacher is prompted with, and records each step
as data in :attr:`TagResult.trace`:

1. ``understand``: which sources the note has (title, body, image captions) and their sizes.
2. ``choose_dimensions``: the handbook dimensions of the note's category with support in the note.
3. ``extract``: every handbook value or synonym found, with its evidence spans and sources. English
   text is matched longest-phrase-first on words; a word within one edit of a handbook word
   (a typo, "sneekers") is corrected first and the match marked ``fuzzy``. Chinese is matched on
   characters (substring of the canonical text).
4. ``merge``: synonyms become their handbook value, near-duplicates merge, the cap per dimension
   drops the least confident (:func:`tagging.normalize.normalize_tags`).

Confidence grows with the number of distinct sources (title, body, image) that support a value and
with its handbook weight; fuzzy-only evidence is discounted.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tagging.handbook_model import Handbook
from tagging.normalize import canonical, is_cjk, normalize_tags
from tagging.types import Evidence, NoteInput, Tag, TagResult

__all__ = ["CODE_VERSION", "HandbookMatcher", "Match", "OfflineTeacher", "one_edit"]

log = logging.getLogger(__name__)

CODE_VERSION = "offline-2"
_MIN_FUZZY_LEN = 5


@dataclass(frozen=True)
class Match:
    """One handbook form found in one source."""

    value: str
    dimension: str
    weight: float
    form: str
    source: str
    span: str
    fuzzy: bool = False


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def one_edit(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` differ by exactly one insertion, deletion, substitution or swap of
    two adjacent characters (optimal-string-alignment distance 1).

    The shared-deletion index finds candidates up to two edits apart ("close" and "loose" share
    "lose"); this check keeps only true single-edit typos.
    """
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) < len(b):  # one insertion
        return a[i:] == b[i + 1 :]
    if a[i + 1 :] == b[i + 1 :]:  # one substitution
        return True
    return i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]


@dataclass
class HandbookMatcher:
    """Finds one category's handbook values (and synonyms) in text.

    Args:
        handbook: the handbook.
        category: the section to match.
        fuzzy: correct single-edit typos of handbook words (English words of >= 5 characters).
    """

    handbook: Handbook
    category: str
    fuzzy: bool = True
    _phrases: dict[tuple[str, ...], tuple[str, str, float]] = field(default_factory=dict, init=False)
    _cjk: dict[str, tuple[str, str, float]] = field(default_factory=dict, init=False)
    _max_n: int = field(default=1, init=False)
    _words: set[str] = field(default_factory=set, init=False)
    _dels: dict[str, set[str]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for dim in self.handbook.section(self.category).dimensions:
            for v in dim.values:
                entry = (canonical(v.value), dim.name, v.weight)
                for form in (v.value, *v.synonyms):
                    c = canonical(form)
                    if not c:
                        continue
                    if is_cjk(c):
                        self._cjk.setdefault(c, entry)
                    else:
                        toks = tuple(c.split())
                        self._phrases.setdefault(toks, entry)
                        self._max_n = max(self._max_n, len(toks))
                        self._words.update(toks)
        for w in self._words:
            if len(w) >= _MIN_FUZZY_LEN:
                for key in {w} | _deletions(w):
                    self._dels.setdefault(key, set()).add(w)

    @property
    def empty(self) -> bool:
        return not self._phrases and not self._cjk

    def _correct(self, tok: str) -> str | None:
        if tok in self._words or len(tok) < _MIN_FUZZY_LEN:
            return None
        cands: set[str] = set()
        for key in {tok} | _deletions(tok):
            cands |= self._dels.get(key, set())
        best, best_r = None, 0.0
        for c in sorted(cands):
            if not one_edit(tok, c):
                continue
            r = difflib.SequenceMatcher(None, tok, c).ratio()
            if r > best_r:
                best, best_r = c, r
        return best if best_r >= 0.8 else None

    def find(self, text: str, source: str) -> list[Match]:
        """All handbook forms in ``text`` (longest phrase first, non-overlapping)."""
        c = canonical(text)
        if not c:
            return []
        out: list[Match] = []
        if self._cjk and is_cjk(c):
            compact = c.replace(" ", "")
            taken = [False] * len(compact)
            for form in sorted(self._cjk, key=len, reverse=True):
                start = compact.find(form)
                while start >= 0:
                    if not any(taken[start : start + len(form)]):
                        value, dim, weight = self._cjk[form]
                        out.append(Match(value, dim, weight, form, source, form))
                        taken[start : start + len(form)] = [True] * len(form)
                    start = compact.find(form, start + 1)
        if not self._phrases:
            return out
        toks = c.split()
        fixed = [self._correct(t) if self.fuzzy else None for t in toks]
        i = 0
        while i < len(toks):
            for n in range(min(self._max_n, len(toks) - i), 0, -1):
                span = toks[i : i + n]
                key = tuple(f or t for f, t in zip(fixed[i : i + n], span, strict=True))
                entry = self._phrases.get(key)
                if entry is not None:
                    fuzzy = any(f is not None for f in fixed[i : i + n])
                    out.append(Match(*entry, " ".join(key), source, " ".join(span), fuzzy))
                    i += n
                    break
            else:
                i += 1
        return out


class OfflineTeacher:
    """Tags notes with the handbook values they mention (title, body, image captions).

    Args:
        handbook: the handbook that defines the dimensions and values.
        cap_per_dimension: at most this many tags per dimension.
        fuzzy: tolerate single-edit typos in English words.

    Example:
        >>> teacher = OfflineTeacher(load_handbook("runs/demo/handbook.yaml"))  # doctest: +SKIP
        >>> teacher.tag(notes)[0].trace["steps"][1]["chosen"]  # doctest: +SKIP
        ['colour', 'silhouette']
    """

    name = "offline-handbook"

    def __init__(self, handbook: Handbook, *, cap_per_dimension: int = 3, fuzzy: bool = True) -> None:
        self.handbook = handbook
        self.cap_per_dimension = cap_per_dimension
        self.fuzzy = fuzzy
        self.version = f"{handbook.version or handbook.content_hash()}+{CODE_VERSION}"
        self._matchers: dict[str, HandbookMatcher] = {}

    def _matcher(self, category: str) -> HandbookMatcher:
        if category not in self._matchers:
            self._matchers[category] = HandbookMatcher(self.handbook, category, fuzzy=self.fuzzy)
        return self._matchers[category]

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        """One result per note, in order (a note whose category has no handbook section gets no tags)."""
        return [self._tag_one(n) for n in notes]

    def _tag_one(self, note: NoteInput) -> TagResult:
        matcher = self._matcher(note.category)
        sources = [("title", note.title), ("body", note.body)] + [("image", c) for c in note.image_captions]
        understand = {
            "step": "understand",
            "category": note.category,
            "sources": {
                "title_chars": len(note.title),
                "body_chars": len(note.body),
                "images": len(note.image_captions),
            },
            "gist": note.title[:120],
            "handbook_section": not matcher.empty,
        }
        matches = [m for src, text in sources for m in matcher.find(text, src)]

        grouped: dict[tuple[str, str], list[Match]] = {}
        for m in matches:
            grouped.setdefault((m.dimension, m.value), []).append(m)
        dims = [d.name for d in self.handbook.section(note.category).dimensions]
        chosen = [d for d in dims if any(k[0] == d for k in grouped)]
        choose = {
            "step": "choose_dimensions",
            "candidates": dims,
            "chosen": chosen,
            "support": {
                d: sorted({m.source for k, ms in grouped.items() if k[0] == d for m in ms}) for d in chosen
            },
        }

        raw: list[Tag] = []
        extracted: list[dict[str, Any]] = []
        for (dim, value), ms in grouped.items():
            srcs = {m.source for m in ms}
            exact = [m for m in ms if not m.fuzzy]
            conf = (
                0.55 + 0.15 * (len(srcs) - 1) + 0.1 * min(len(ms) - 1, 2) / 2 + 0.1 * min(ms[0].weight, 1.0)
            )
            if not exact:
                conf *= 0.85
            evidence = tuple(dict.fromkeys(Evidence(m.source, m.span) for m in ms))  # type: ignore[arg-type]
            raw.append(
                Tag(text=value, dimension=dim, confidence=round(min(conf, 0.99), 4), evidence=evidence)
            )
            extracted.append(
                {
                    "value": value,
                    "dimension": dim,
                    "evidence": [
                        {"source": m.source, "span": m.span, "form": m.form, "fuzzy": m.fuzzy} for m in ms
                    ],
                }
            )
        tags = normalize_tags(
            raw, handbook=self.handbook, category=note.category, cap_per_dimension=self.cap_per_dimension
        )
        kept = {(t.dimension, t.text) for t in tags}
        merge = {
            "step": "merge",
            "synonyms_merged": [
                {"into": value, "forms": sorted({m.form for m in ms})}
                for (_, value), ms in grouped.items()
                if len({m.form for m in ms}) > 1
            ],
            "dropped": [f"{t.dimension}:{t.text}" for t in raw if (t.dimension, t.text) not in kept],
        }
        trace = {
            "steps": [understand, choose, {"step": "extract", "tags": extracted}, merge],
            "handbook_version": self.handbook.version,
        }
        return TagResult(note_id=note.note_id, tags=tags, trace=trace)
