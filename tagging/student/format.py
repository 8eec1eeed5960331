"""The dimension-aware target format, its parser, and the trie that constrains decoding.

Text form (what people read, what the model card shows)::

    colour: cream white; off white | style: retro running

Token form (what the model emits): each dimension name and each value is tokenized on its own and
joined by special tokens, ``dim <dim> v1 <val> v2 <seg> dim2 <dim> v3 </s>``, so separators are never
part of a tag. :func:`parse_tags` turns either form back into tags and never raises: a fragment it
cannot read (no ``:``, empty name or value) is dropped.

:class:`TagConstraint` is a trie over the allowed (dimension, value) pairs of each category (handbook
values plus the values the teacher used on the training notes); used as ``prefix_allowed_tokens_fn``
in ``generate`` it only lets the decoder spell allowed names and values, so every output parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tagging.normalize import canonical, is_cjk
from tagging.types import Tag

__all__ = [
    "Allowed",
    "TagConstraint",
    "clean_dimension",
    "decode_ids",
    "encode_target",
    "format_tags",
    "is_grounded",
    "parse_tags",
    "source_key",
    "value_text",
]

_SEP_RE = re.compile(r"[:;|<>\n]+")


def clean_dimension(name: str) -> str:
    """A dimension name without the format's separators (``"other"`` when nothing is left)."""
    return " ".join(_SEP_RE.sub(" ", str(name)).split()) or "other"


def _grouped(tags: Iterable[Tag]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for t in tags:
        text = canonical(t.text)
        if not text:
            continue
        vals = groups.setdefault(clean_dimension(t.dimension), [])
        if text not in vals:
            vals.append(text)
    return groups


def format_tags(tags: Iterable[Tag]) -> str:
    """Tags -> ``dim: v1; v2 | dim2: v3`` (dimensions in order of first appearance)."""
    return " | ".join(f"{d}: {'; '.join(vs)}" for d, vs in _grouped(tags).items())


def parse_tags(text: str, *, confidence_step: float = 0.05) -> list[Tag]:
    """``dim: v1; v2 | dim2: v3`` -> tags; unreadable fragments are dropped, never an exception.

    Confidence decreases with position (the model emits its most certain tags first), from 1.0 in
    steps of ``confidence_step``, floored at 0.05.
    """
    out: list[Tag] = []
    seen: set[tuple[str, str]] = set()
    for segment in str(text).split("|"):
        dim, sep, values = segment.partition(":")
        dim = dim.strip()
        if not sep or not dim:
            continue
        for v in values.split(";"):
            value = canonical(v)
            if not value or (dim, value) in seen:
                continue
            seen.add((dim, value))
            out.append(Tag(value, clean_dimension(dim), max(0.05, 1.0 - confidence_step * len(out))))
    return out


@dataclass(frozen=True)
class _Ids:
    pad: int
    eos: int
    dim: int
    val: int
    seg: int


def _special_ids(tokenizer: Any) -> _Ids:
    conv = tokenizer.convert_tokens_to_ids
    return _Ids(tokenizer.pad_token_id, tokenizer.eos_token_id, conv("<dim>"), conv("<val>"), conv("<seg>"))


def _piece(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def value_text(value: str, word_initial: bool) -> str:
    """What a value is tokenized as: itself, or with a leading space (``word_initial``, the copy-head
    format: ``Ġcroissant`` as in running text) unless it starts with a CJK character."""
    return f" {value}" if word_initial and value and not is_cjk(value[0]) else value


def encode_target(
    tokenizer: Any, tags: Iterable[Tag], max_tokens: int, *, word_initial: bool = False
) -> list[int]:
    """Tags -> token ids of the target (ends with eos; whole dimensions/values dropped to fit).

    ``word_initial``: values tokenized as in running text (see :func:`value_text`).
    """
    ids = _special_ids(tokenizer)
    out: list[int] = []
    for d, values in _grouped(tags).items():
        seg = ([ids.seg] if out else []) + _piece(tokenizer, d) + [ids.dim]
        n_vals = 0
        for v in values:
            piece = ([ids.val] if n_vals else []) + _piece(tokenizer, value_text(v, word_initial))
            if len(out) + len(seg) + len(piece) + 1 > max_tokens:
                break
            seg += piece
            n_vals += 1
        if not n_vals:
            break
        out += seg
    return [*out, ids.eos]


def decode_ids(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """Generated ids -> the text form (pad/eos/unknown ids are skipped)."""
    ids = _special_ids(tokenizer)
    parts: list[str] = []
    cur: list[int] = []

    def flush(sep: str) -> None:
        parts.append(tokenizer.decode(cur).strip())
        parts.append(sep)
        cur.clear()

    for t in token_ids:
        t = int(t)
        if t == ids.eos:
            break
        if t == ids.pad:
            continue
        if t == ids.dim:
            flush(": ")
        elif t == ids.val:
            flush("; ")
        elif t == ids.seg:
            flush(" | ")
        else:
            cur.append(t)
    if cur:
        parts.append(tokenizer.decode(cur).strip())
    return "".join(parts).strip()


_END = -1  # trie key marking "a whole name ends here"
_REACH = -2  # trie key holding the set of names that end below a node


def _insert(trie: dict[int, Any], seq: Sequence[int], name: Any = None) -> None:
    node = trie
    for t in seq:
        node = node.setdefault(t, {_REACH: set()})
        node[_REACH].add(name)
    node[_END] = {}


Allowed = Mapping[str, Mapping[str, Mapping[str, Sequence[str]]]]
"""category -> dimension -> value -> surface forms (the value itself, handbook synonyms)."""


def source_key(text: str) -> str:
    """The form of a note's text that grounding searches: canonical, space-padded."""
    return f" {canonical(text)} "


def is_grounded(forms: Iterable[str], key: str) -> bool:
    """Whether one of ``forms`` occurs in ``key`` (:func:`source_key`): as whole words, or as a
    substring for CJK."""
    for f in forms:
        c = canonical(f)
        if c and ((f" {c} " in key) if not is_cjk(c) else (c.replace(" ", "") in key.replace(" ", ""))):
            return True
    return False


class _Trie:
    """One note's allowed dimensions and values as token tries, and the decoding grammar.

    Each trie node also records (under ``_REACH``) the names reachable below it, so a dimension or a
    value that was already emitted can be excluded at its first token instead of at its last.
    """

    def __init__(
        self, ids: _Ids, dims: Mapping[tuple[int, ...], tuple[str, list[tuple[int, ...]]]], max_values: int
    ) -> None:
        self.ids, self.max_values = ids, max_values
        self.dims: dict[int, Any] = {}
        self.values: dict[str, dict[int, Any]] = {}
        self.dim_of: dict[tuple[int, ...], str] = {}
        self.n_values: dict[str, int] = {}
        for dim_ids, (dim, pieces) in dims.items():
            if not pieces:
                continue
            _insert(self.dims, dim_ids, dim)
            self.dim_of[dim_ids] = dim
            vt = self.values.setdefault(dim, {})
            for p in pieces:
                _insert(vt, p, p)
            self.n_values[dim] = len(set(pieces))

    def allowed_next(self, prefix: Sequence[int]) -> list[int]:
        ids = self.ids
        used: set[Any] = set()
        used_vals: set[Any] = set()
        cur: list[int] = []
        state, dim, n_vals = "dim", "", 0
        for t in prefix:
            if t == ids.dim:
                dim = self.dim_of.get(tuple(cur), "")
                used.add(dim)
                state, cur, n_vals, used_vals = "value", [], 0, set()
            elif t == ids.val:
                used_vals.add(tuple(cur))
                state, cur, n_vals = "value", [], n_vals + 1
            elif t == ids.seg:
                used_vals.add(tuple(cur))
                state, cur = "dim", []
            elif t in (ids.eos, ids.pad):
                return [ids.pad]
            else:
                cur.append(t)
        node: dict[int, Any] | None = self.dims if state == "dim" else self.values.get(dim, {})
        for t in cur:
            node = node.get(t) if node is not None else None
        if node is None:  # unreachable under the constraint; end cleanly
            return [ids.eos]
        taken = used if state == "dim" else used_vals
        allowed = [t for t, child in node.items() if t >= 0 and not child[_REACH] <= taken]
        if _END in node:
            if state == "dim":
                if self.dim_of.get(tuple(cur), "") not in used:
                    allowed.append(ids.dim)
            elif tuple(cur) not in used_vals:
                allowed.append(ids.eos)
                if n_vals + 1 < min(self.max_values, self.n_values.get(dim, 0)):
                    allowed.append(ids.val)
                if len(used) < len(self.dim_of):
                    allowed.append(ids.seg)
        if state == "dim" and not cur and not used:
            allowed.append(ids.eos)  # "no tags" is a valid answer
        return allowed or [ids.eos]


@dataclass
class TagConstraint:
    """Tries over the dimension names and values a note may get (see module docstring).

    Args:
        tokenizer: the student's tokenizer.
        allowed: category -> dimension -> value -> surface forms.
        max_values: at most this many values per dimension (the normalizer's cap).
        grounded: only values with a surface form in the note's own text (copy-grounded decoding: no
            tag without evidence in the note); off for data whose tags rarely occur in the text.
        word_initial: values are tokenized word-initially (the copy-head format; see
            :func:`value_text`).

    A category missing from ``allowed`` uses the union of all categories.
    """

    tokenizer: Any
    allowed: Allowed
    max_values: int = 3
    grounded: bool = False
    word_initial: bool = False
    _pieces: dict[str, tuple[int, ...]] = field(default_factory=dict, init=False)
    _cache: dict[str, _Trie] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._ids = _special_ids(self.tokenizer)
        union: dict[str, dict[str, list[str]]] = {}
        for dims in self.allowed.values():
            for d, values in dims.items():
                for v, forms in values.items():
                    union.setdefault(d, {}).setdefault(v, []).extend(forms)
        # precomputed: section -> [(dimension, value, its canonical surface forms)]
        self._sections: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
        for cat, dims in {**self.allowed, "*": union}.items():
            self._sections[cat] = [
                (
                    clean_dimension(d),
                    v,
                    tuple(dict.fromkeys(c for c in (canonical(f) for f in (v, *forms)) if c)),
                )
                for d, values in dims.items()
                for v, forms in values.items()
            ]

    def _piece(self, text: str) -> tuple[int, ...]:
        got = self._pieces.get(text)
        if got is None:
            got = self._pieces[text] = tuple(_piece(self.tokenizer, text))
        return got

    def candidates(self, category: str, source: str) -> dict[str, list[str]]:
        """dimension -> values allowed for a note of ``category`` with text ``source``."""
        section = self._sections.get(category, self._sections["*"])
        key = source_key(source) if self.grounded else ""
        flat = key.replace(" ", "")
        out: dict[str, list[str]] = {}
        for d, v, forms in section:
            if self.grounded and not any(
                (f.replace(" ", "") in flat) if is_cjk(f) else (f" {f} " in key) for f in forms
            ):
                continue
            out.setdefault(d, []).append(v)
        return out

    def trie(self, category: str, source: str) -> _Trie:
        """The decoding trie of one note (cached per category when not grounded)."""
        if not self.grounded and category in self._cache:
            return self._cache[category]
        dims = {
            self._piece(d): (
                d,
                [p for p in (self._piece(value_text(canonical(v), self.word_initial)) for v in vals) if p],
            )
            for d, vals in self.candidates(category, source).items()
            if self._piece(d)
        }
        t = _Trie(self._ids, dims, self.max_values)
        if not self.grounded:
            self._cache[category] = t
        return t

    def allowed_next(self, category: str, source: str, prefix: Sequence[int]) -> list[int]:
        """Token ids allowed after ``prefix`` (generated ids, decoder start token excluded)."""
        return self.trie(category, source).allowed_next(prefix)
