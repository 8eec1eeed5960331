"""The raw vocabulary of the synthetic community: categories, interest dimensions, values, synonyms.

The vocabulary is package data (``data/vocabulary.yaml``, whose header describes the format); this
module reads and checks it into frozen values. Each value is written ``"canonical|synonym|paraphrase"``:
the first form is the value's name in the ground truth, every form is a surface form the renderer may
use. Within a category no surface form contains (as whole words) a surface form of another value, so a
value is recognisable from text; :func:`features.datasets.synthetic.taxonomy.check_taxonomy` verifies it.

Dimensions in :data:`ITEM_DIMENSIONS` name the thing the note is about (a serum, a tent): when visible
they also replace the category's generic noun ("this serum" instead of "this product").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from features.datasets.synthetic.datafile import DataSource, default_source, mapping, read_data_file, strings

__all__ = ["ITEM_DIMENSIONS", "CategoryWords", "Vocabulary", "load_vocabulary"]

VOCABULARY_FILE = "vocabulary.yaml"
_CATEGORY_KEYS = ("nouns", "caption_nouns", "scenes", "aliases", "dimensions")


@dataclass(frozen=True)
class CategoryWords:
    """The words of one category, in file order.

    Attributes:
        name: category name.
        nouns: generic nouns ("pair", "product").
        caption_nouns: nouns of image captions.
        scenes: caption settings.
        aliases: hashtag aliases of the category.
        dimensions: ``(dimension, value entries)`` pairs; an entry is ``"canonical|synonym|..."``.
    """

    name: str
    nouns: tuple[str, ...]
    caption_nouns: tuple[str, ...]
    scenes: tuple[str, ...]
    aliases: tuple[str, ...]
    dimensions: tuple[tuple[str, tuple[str, ...]], ...]


@dataclass(frozen=True)
class Vocabulary:
    """Every category's words and the dimensions that name the note's item."""

    item_dimensions: frozenset[str]
    categories: tuple[CategoryWords, ...]


def _category(name: str, raw: object, file: str) -> CategoryWords:
    key = f"categories.{name}"
    data = mapping(raw, file, key, _CATEGORY_KEYS)
    dims = mapping(data["dimensions"], file, f"{key}.dimensions")
    return CategoryWords(
        name,
        strings(data["nouns"], file, f"{key}.nouns"),
        strings(data["caption_nouns"], file, f"{key}.caption_nouns"),
        strings(data["scenes"], file, f"{key}.scenes"),
        strings(data["aliases"], file, f"{key}.aliases"),
        tuple((d, strings(entries, file, f"{key}.dimensions.{d}")) for d, entries in dims.items()),
    )


def load_vocabulary(source: DataSource | None = None) -> Vocabulary:
    """Read and check a vocabulary file (by default the packaged ``data/vocabulary.yaml``, cached).

    Args:
        source: a path (or importlib resource) of a vocabulary YAML file; ``None`` for the packaged one.

    Returns:
        The :class:`Vocabulary`, categories and values in file order.

    Raises:
        DataFileError: the file is missing, not YAML, or an entry is malformed (naming the file and key).
    """
    if source is None:
        return _packaged()
    file, raw = read_data_file(source)
    top = mapping(raw, file, "", ("item_dimensions", "categories"))
    item_dimensions = frozenset(strings(top["item_dimensions"], file, "item_dimensions"))
    categories = mapping(top["categories"], file, "categories")
    return Vocabulary(item_dimensions, tuple(_category(n, c, file) for n, c in categories.items()))


@lru_cache(maxsize=1)
def _packaged() -> Vocabulary:
    return load_vocabulary(default_source(VOCABULARY_FILE))


ITEM_DIMENSIONS: frozenset[str] = load_vocabulary().item_dimensions
