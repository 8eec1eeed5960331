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

:func:`canonical` and :class:`TagVocabulary` (stable integer ids for tag texts) live in
:mod:`features.vocab`, the project's one vocabulary, and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from features.errors import ConfigError
from features.vocab import PAD_ID, TagVocabulary, canonical, is_cjk
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
