"""The taxonomy of the synthetic community as frozen values, its ground-truth table and its checks.

A :class:`Taxonomy` is built once from the vocabulary data file (:mod:`.vocabulary`); every value gets a global integer id
(``vid``) so later stages (notes, preferences, matching) work on integer arrays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from features.datasets.synthetic.vocabulary import load_vocabulary

__all__ = [
    "Category",
    "Dimension",
    "Taxonomy",
    "Value",
    "build_taxonomy",
    "check_taxonomy",
    "form_pattern",
    "hashtag_slug",
    "value_popularity",
]


@dataclass(frozen=True)
class Value:
    """One fine-grained value, e.g. sneakers / colour / "off-white".

    Attributes:
        vid: global id, the value's row in :attr:`Taxonomy.values`.
        category: category name.
        dimension: dimension name.
        name: canonical name (the first surface form).
        forms: surface forms (synonyms, paraphrases), ``forms[0] == name``.
    """

    vid: int
    category: str
    dimension: str
    name: str
    forms: tuple[str, ...]


@dataclass(frozen=True)
class Dimension:
    """An interest dimension of one category (brand, colour, skin_type ...)."""

    name: str
    values: tuple[Value, ...]
    is_item: bool


@dataclass(frozen=True)
class Category:
    """A category with its nouns, caption scenes, hashtag aliases and dimensions."""

    name: str
    nouns: tuple[str, ...]
    caption_nouns: tuple[str, ...]
    scenes: tuple[str, ...]
    aliases: tuple[str, ...]
    dimensions: tuple[Dimension, ...]


@dataclass(frozen=True)
class Taxonomy:
    """All categories and a flat list of values indexed by ``vid``."""

    categories: tuple[Category, ...]
    values: tuple[Value, ...]

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)

    def frame(self) -> pd.DataFrame:
        """The ``taxonomy`` ground-truth table: category, dimension, value, surface_forms (list[str])."""
        return pd.DataFrame(
            {
                "category": [v.category for v in self.values],
                "dimension": [v.dimension for v in self.values],
                "value": [v.name for v in self.values],
                "surface_forms": [list(v.forms) for v in self.values],
            }
        )


@lru_cache(maxsize=1)
def build_taxonomy() -> Taxonomy:
    """Build the taxonomy from the packaged vocabulary (:func:`.vocabulary.load_vocabulary`; cached).

    Returns:
        The taxonomy; ``values[i].vid == i``.
    """
    vocabulary = load_vocabulary()
    categories: list[Category] = []
    values: list[Value] = []
    for words in vocabulary.categories:
        cname = words.name
        dims: list[Dimension] = []
        for dname, entries in words.dimensions:
            dvalues: list[Value] = []
            for entry in entries:
                forms = tuple(f.strip() for f in entry.split("|"))
                value = Value(len(values), cname, dname, forms[0], forms)
                values.append(value)
                dvalues.append(value)
            dims.append(Dimension(dname, tuple(dvalues), dname in vocabulary.item_dimensions))
        categories.append(
            Category(cname, words.nouns, words.caption_nouns, words.scenes, words.aliases, tuple(dims))
        )
    return Taxonomy(tuple(categories), tuple(values))


def value_popularity(taxonomy: Taxonomy, rng: np.random.Generator, exponent: float = 0.8) -> np.ndarray:
    """Zipf-like popularity of each value within its dimension, in a seed-dependent order.

    Args:
        taxonomy: the taxonomy.
        rng: random generator (decides which values are popular).
        exponent: Zipf exponent; 0 gives uniform popularity.

    Returns:
        (V,) float array indexed by ``vid``; sums to 1 within each (category, dimension).
    """
    pop = np.zeros(len(taxonomy.values))
    for cat in taxonomy.categories:
        for dim in cat.dimensions:
            ranks = rng.permutation(len(dim.values))
            w = 1.0 / (ranks + 1.0) ** exponent
            pop[[v.vid for v in dim.values]] = w / w.sum()
    return pop


def form_pattern(form: str) -> re.Pattern[str]:
    """A case-insensitive whole-word regex for a surface form."""
    return re.compile(r"(?<!\w)" + re.escape(form) + r"(?!\w)", re.IGNORECASE)


def hashtag_slug(text: str) -> str:
    """A hashtag as creators write it, without '#': lowercase letters and digits only."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def check_taxonomy(taxonomy: Taxonomy, generic: Iterable[str]) -> list[str]:
    """Find surface forms that would make a value ambiguous in text.

    Args:
        taxonomy: the taxonomy.
        generic: fixed texts (templates, distractors) that mention no value.

    Returns:
        Problems as readable lines (empty when the taxonomy is clean): a form found inside a form
        of another value of the same category, inside a category noun or scene, or inside a fixed text;
        a dimension with a count of values outside 5..12; a category with a count of dimensions
        outside 4..6.
    """
    problems: list[str] = []
    generic_list = list(generic)
    for cat in taxonomy.categories:
        if not 4 <= len(cat.dimensions) <= 6:
            problems.append(f"{cat.name}: {len(cat.dimensions)} dimensions, expected 4..6")
        fixed = [*generic_list, *cat.nouns, *cat.caption_nouns, *cat.scenes]
        cat_values = [v for d in cat.dimensions for v in d.values]
        for dim in cat.dimensions:
            if not 5 <= len(dim.values) <= 12:
                problems.append(f"{cat.name}/{dim.name}: {len(dim.values)} values, expected 5..12")
        for value in cat_values:
            for form in value.forms:
                pattern = form_pattern(form)
                for other in cat_values:
                    if other.vid != value.vid and any(pattern.search(f) for f in other.forms):
                        problems.append(
                            f"{cat.name}: form {form!r} of {value.name!r} occurs in {other.forms}"
                        )
                for text in fixed:
                    if pattern.search(text):
                        problems.append(f"{cat.name}: form {form!r} of {value.name!r} occurs in {text!r}")
    return problems
