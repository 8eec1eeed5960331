"""Tag normalization shared by every tagger, and the versioned tag vocabulary.

Every tagger's raw tags go through :func:`normalize_tags`, so "Cream-White", "#cream white" and the
handbook synonym "off white" all become one tag, boilerplate hashtags disappear, and no dimension
carries more than ``cap_per_dimension`` tags. The steps, in order:

1. **canonical form** (:func:`canonical`): Unicode NFKC, lower case, ``#`` and punctuation become
   spaces, whitespace collapsed. CJK text keeps its characters (no spaces are invented).
2. **boilerplate filter**: tags whose canonical form is in ``handbook.boilerplate`` are dropped.
3. **synonym merge**: a tag equal to a handbook value or one of its synonyms (in ``category``'s
   section) becomes that value, in that value's dimension.
4. **near-duplicate merge** (:func:`near_duplicate`): within one dimension, two tags merge when one
   contains the other as whole words (English) or as a substring (CJK), or when their similarity
   (max of token-set Jaccard and character-trigram Dice) is at least ``NEAR_DUP_THRESHOLD``. The
   merged tag keeps the handbook value if either is one, else the longer (more specific) text; its
   confidence is the maximum and its evidence the union.
5. **cap per dimension**: the ``cap_per_dimension`` most confident tags of each dimension are kept.

:class:`TagVocabulary` maps canonical tag texts to stable integer ids for embedding tables: id 0 is
reserved for padding/unknown, ids are never reassigned when the vocabulary is extended, and the file
is written atomically with a version counter and a content hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from features.errors import ConfigError, NotFoundError
from features.io import atomic_path
from tagging.handbook_model import Handbook
from tagging.types import Tag

__all__ = [
    "NEAR_DUP_THRESHOLD",
    "PAD_ID",
    "TagVocabulary",
    "canonical",
    "drop_redundant",
    "handbook_lookup",
    "is_cjk",
    "near_duplicate",
    "normalize_tags",
    "similarity",
    "words",
]

NEAR_DUP_THRESHOLD = 0.8
PAD_ID = 0

_PUNCT_RE = re.compile(r"[\W_]+", re.UNICODE)
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_SPACE_RE = re.compile(r"\s+")


def canonical(text: str) -> str:
    """Canonical tag form: NFKC, lower case, ``#``/punctuation removed, single spaces.

    Hyphens and underscores join words with a space ("off-white" -> "off white"); spaces between two
    CJK characters are removed, since Chinese is written without them.

    Example:
        >>> canonical("  #Cream-White!! ")
        'cream white'
    """
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = _PUNCT_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip()
    if " " in text and _CJK_RE.search(text):
        text = re.sub(r"(?<=[\u3400-\u9fff]) (?=[\u3400-\u9fff])", "", text)
    return text


def is_cjk(text: str) -> bool:
    """True when ``text`` contains CJK characters (compared by characters, not words)."""
    return bool(_CJK_RE.search(text))


def words(text: str) -> list[str]:
    """The comparison units of a canonical text: words for English, characters for CJK."""
    return [c for c in text if not c.isspace()] if is_cjk(text) else text.split()


def _trigrams(text: str) -> set[str]:
    padded = f"  {text} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def similarity(a: str, b: str) -> float:
    """Similarity in [0, 1] of two canonical texts: max(token-set Jaccard, character-trigram Dice)."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    ta, tb = set(words(a)), set(words(b))
    jac = len(ta & tb) / len(ta | tb)
    ga, gb = _trigrams(a), _trigrams(b)
    dice = 2 * len(ga & gb) / (len(ga) + len(gb))
    return max(jac, dice)


def _contains(longer: str, shorter: str) -> bool:
    if is_cjk(longer) or is_cjk(shorter):
        return len(shorter) >= 2 and shorter in longer
    lw, sw = longer.split(), shorter.split()
    n = len(sw)
    return any(lw[i : i + n] == sw for i in range(len(lw) - n + 1))


def near_duplicate(a: str, b: str, threshold: float = NEAR_DUP_THRESHOLD) -> bool:
    """Whether two canonical tags say the same thing (containment, or similarity >= ``threshold``)."""
    if a == b:
        return True
    if not a or not b:
        return False
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    return _contains(long_, short) or similarity(a, b) >= threshold


def drop_redundant(tags: Sequence[Tag]) -> tuple[Tag, ...]:
    """Keep each tag unless it is a :func:`near_duplicate` of one kept before it, in any dimension.

    :func:`normalize_tags` merges near-duplicates within a dimension only (and never two handbook
    values); a generator can still say one thing twice across dimensions (``food: beef noodles`` and
    ``dish: beef``). Order decides: pass the tags most confident first.
    """
    kept: list[Tag] = []
    for t in tags:
        text = canonical(t.text)
        if not any(near_duplicate(canonical(k.text), text) for k in kept):
            kept.append(t)
    return tuple(kept)


@dataclass(frozen=True)
class _Entry:
    value: str
    dimension: str
    weight: float


def handbook_lookup(handbook: Handbook, category: str | None) -> dict[str, _Entry]:
    """Canonical surface form (value or synonym) -> (canonical value, dimension, weight).

    Multi-word English forms are also keyed without spaces, the way hashtags spell them.

    With ``category`` None, every section is merged (the first category wins on conflicts).
    """
    out: dict[str, _Entry] = {}
    sections = [handbook.section(category)] if category is not None else list(handbook.categories.values())
    for section in sections:
        for dim in section.dimensions:
            for v in dim.values:
                entry = _Entry(canonical(v.value), dim.name, v.weight)
                for form in (v.value, *v.synonyms):
                    c = canonical(form)
                    out.setdefault(c, entry)
                    if " " in c and not is_cjk(c):
                        out.setdefault(c.replace(" ", ""), entry)  # hashtag spelling: "creamwhite"
    return out


_View = tuple[frozenset[str], dict[str, _Entry], frozenset[tuple[str, str]]]
_VIEWS: dict[tuple[int, str, str | None], tuple[Handbook, _View]] = {}
_MAX_VIEWS = 512


def _handbook_view(handbook: Handbook | None, category: str | None) -> _View:
    """(boilerplate, lookup, (value, dimension) pairs) for one section, cached per handbook object.

    Building the lookup costs about a millisecond per call; a tagger normalizes thousands of notes
    with one handbook. The cache holds the handbook itself, so an id is never reused while cached.
    """
    if handbook is None:
        return frozenset(), {}, frozenset()
    key = (id(handbook), handbook.version, category)
    hit = _VIEWS.get(key)
    if hit is not None and hit[0] is handbook:
        return hit[1]
    lookup = handbook_lookup(handbook, category)
    view = (
        frozenset(canonical(b) for b in handbook.boilerplate),
        lookup,
        frozenset((e.value, e.dimension) for e in lookup.values()),
    )
    if len(_VIEWS) >= _MAX_VIEWS:
        _VIEWS.clear()
    _VIEWS[key] = (handbook, view)
    return view


def _merge(a: Tag, b: Tag, prefer_a: bool) -> Tag:
    keep = a if prefer_a else b
    evidence = tuple(dict.fromkeys((*a.evidence, *b.evidence)))
    return replace(keep, confidence=max(a.confidence, b.confidence), evidence=evidence)


def normalize_tags(
    tags: Sequence[Tag],
    *,
    handbook: Handbook | None = None,
    category: str | None = None,
    cap_per_dimension: int = 3,
) -> tuple[Tag, ...]:
    """Canonicalize, filter boilerplate, merge synonyms and near-duplicates, cap per dimension.

    Args:
        tags: raw tags from any tagger.
        handbook: supplies boilerplate and synonyms (None: only canonical form, near-dups, cap).
        category: the note's category (selects the handbook section for synonyms).
        cap_per_dimension: at most this many tags per dimension (the most confident); >= 1.

    Returns:
        The normalized tags, ordered by dimension of first appearance, then confidence (descending).

    Raises:
        ConfigError: ``cap_per_dimension`` < 1.
    """
    if cap_per_dimension < 1:
        raise ConfigError(f"cap_per_dimension must be >= 1, got {cap_per_dimension!r}")
    boiler, lookup, hb_values = _handbook_view(handbook, category)

    by_dim: dict[str, list[Tag]] = {}
    for tag in tags:
        text = canonical(tag.text)
        if not text or text in boiler:
            continue
        dim = (tag.dimension or "other").strip() or "other"
        entry = lookup.get(text)
        if entry is not None:
            text, dim = entry.value, entry.dimension
        conf = min(1.0, max(0.0, float(tag.confidence)))
        new = Tag(text=text, dimension=dim, confidence=conf, evidence=tuple(tag.evidence))
        bucket = by_dim.setdefault(dim, [])
        new_hb = (text, dim) in hb_values
        for i, old in enumerate(bucket):
            old_hb = (old.text, dim) in hb_values
            if old.text != text and old_hb and new_hb:
                continue  # two distinct handbook values are never duplicates of each other
            if near_duplicate(old.text, text):
                prefer_old = old_hb if old_hb != new_hb else len(old.text) >= len(new.text)
                bucket[i] = _merge(old, new, prefer_old)
                break
        else:
            bucket.append(new)

    out: list[Tag] = []
    for bucket in by_dim.values():
        ranked = sorted(bucket, key=lambda t: -t.confidence)
        out.extend(ranked[:cap_per_dimension])
    return tuple(out)


# --------------------------------------------------------------------------- vocabulary


@dataclass
class TagVocabulary:
    """Canonical tag text -> stable integer id (0 = padding/unknown), for embedding tables.

    Ids are assigned in order of first appearance and never reassigned: :meth:`extend` only appends,
    and bumps :attr:`version`. Build one from ``tags`` tables with :meth:`from_tables`.

    Example:
        >>> vocab = TagVocabulary().extend(["cream white", "chunky"])
        >>> vocab.id("Cream-White"), vocab.id("never seen"), len(vocab)
        (1, 0, 3)
    """

    tokens: list[str] = field(default_factory=lambda: ["<pad>"])
    version: int = 0
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.tokens or self.tokens[0] != "<pad>":
            raise ConfigError(f"a tag vocabulary must start with '<pad>' at id 0, got {self.tokens[:1]!r}")
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ConfigError("a tag vocabulary must not contain the same tag twice")

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self.id(text) != PAD_ID

    def id(self, text: str) -> int:
        """The id of ``text`` (canonicalized); 0 when unknown."""
        return self._index.get(canonical(text), PAD_ID)

    def ids(self, texts: Iterable[str]) -> list[int]:
        return [self.id(t) for t in texts]

    def text(self, idx: int) -> str:
        """The tag text of id ``idx``; raises NotFoundError for ids out of range."""
        if not 0 <= idx < len(self.tokens):
            raise NotFoundError(f"tag id {idx} is not in the vocabulary (size {len(self.tokens)})")
        return self.tokens[idx]

    def extend(self, texts: Iterable[str]) -> TagVocabulary:
        """A new vocabulary with unseen texts appended (existing ids unchanged; version + 1 if grown)."""
        tokens = list(self.tokens)
        seen = set(self._index)
        for t in texts:
            c = canonical(t)
            if c and c not in seen:
                seen.add(c)
                tokens.append(c)
        grown = len(tokens) > len(self.tokens)
        return TagVocabulary(tokens=tokens, version=self.version + 1 if grown else self.version)

    @classmethod
    def from_tables(
        cls, tables: Iterable[pd.DataFrame], *, base: TagVocabulary | None = None
    ) -> TagVocabulary:
        """Build (or extend ``base``) from canonical ``tags`` tables, in row order."""
        texts: list[str] = []
        for df in tables:
            for tag_list in df["tags"]:
                texts.extend(str(t["text"]) for t in (tag_list if tag_list is not None else ()))
        return (base or cls()).extend(texts)

    def content_hash(self) -> str:
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()[:12]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary as JSON atomically."""
        payload = {"version": self.version, "hash": self.content_hash(), "tokens": self.tokens}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TagVocabulary:
        """Read a vocabulary written by :meth:`save`.

        Raises:
            NotFoundError: the file does not exist.
            ConfigError: the file is not a vocabulary, or its hash does not match its tokens.
        """
        path = Path(path)
        if not path.exists():
            raise NotFoundError(f"tag vocabulary {path} does not exist")
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
            vocab = cls(tokens=[str(t) for t in raw["tokens"]], version=int(raw["version"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"tag vocabulary {path} is malformed: {exc}; expected {{version, hash, tokens}}"
            ) from exc
        if raw.get("hash") not in (None, vocab.content_hash()):
            raise ConfigError(f"tag vocabulary {path}: hash {raw.get('hash')!r} does not match its tokens")
        return vocab
