"""Text templates of the synthetic community: titles, body frames, per-dimension slot sentences,
image-caption phrases, chit-chat distractors and platform-boilerplate hashtags.

The templates are package data (``data/phrases.yaml``, whose header lists the template fields); this
module reads and checks them into a frozen :class:`PhraseBook` and exposes its lists as constants.
Values of one dimension always appear in that dimension's slots ("in {v}", "by {v}", "for {v}"), so a
handbook builder can recover dimensions from co-occurrence. ``{v}`` is a surface form, ``{item}`` the
note's noun ("pair", "serum"). No template mentions a value on its own; :func:`generic_texts` lists
every fixed text so a test can check that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from features.datasets.synthetic.datafile import DataSource, default_source, mapping, read_data_file, strings

__all__ = [
    "BODY_FRAMES",
    "BOILERPLATE",
    "CAPTION_FRAMES",
    "CLOSERS",
    "DIMENSION_PHRASES",
    "DISTRACTORS",
    "OPENERS",
    "PLAIN_CAPTIONS",
    "TITLE_EMOJI",
    "TITLE_TEMPLATES",
    "PhraseBook",
    "SlotPhrases",
    "generic_texts",
    "load_phrases",
]

PHRASES_FILE = "phrases.yaml"
_LISTS = (
    "boilerplate",
    "title_templates",
    "title_emoji",
    "body_frames",
    "openers",
    "closers",
    "distractors",
    "caption_frames",
    "plain_captions",
)
_SLOTS = ("title", "body", "caption")


@dataclass(frozen=True)
class SlotPhrases:
    """One dimension's slot templates: title phrases, body sentences, caption phrases (each uses ``{v}``)."""

    title: tuple[str, ...]
    body: tuple[str, ...]
    caption: tuple[str, ...]


@dataclass(frozen=True)
class PhraseBook:
    """Every text template of the generator (see ``data/phrases.yaml`` for the template fields).

    Attributes:
        boilerplate: platform hashtags shared by every category.
        title_templates, title_emoji: titles and their endings.
        body_frames, openers, closers, distractors: body frames and the sentences they are filled with.
        dimension_phrases: dimension -> its :class:`SlotPhrases`.
        caption_frames: captions of image-visible attributes; plain_captions: captions without any.
    """

    boilerplate: tuple[str, ...]
    title_templates: tuple[str, ...]
    title_emoji: tuple[str, ...]
    body_frames: tuple[str, ...]
    openers: tuple[str, ...]
    closers: tuple[str, ...]
    distractors: tuple[str, ...]
    caption_frames: tuple[str, ...]
    plain_captions: tuple[str, ...]
    dimension_phrases: Mapping[str, SlotPhrases]


def load_phrases(source: DataSource | None = None) -> PhraseBook:
    """Read and check a phrases file (by default the packaged ``data/phrases.yaml``, cached).

    Args:
        source: a path (or importlib resource) of a phrases YAML file; ``None`` for the packaged one.

    Returns:
        The :class:`PhraseBook`, every list in file order.

    Raises:
        DataFileError: the file is missing, not YAML, or an entry is malformed (naming the file and key).
    """
    if source is None:
        return _packaged()
    file, raw = read_data_file(source)
    top = mapping(raw, file, "", (*_LISTS, "dimension_phrases"))
    lists = {k: strings(top[k], file, k) for k in _LISTS}
    dims = mapping(top["dimension_phrases"], file, "dimension_phrases")
    slots: dict[str, SlotPhrases] = {}
    for dim, raw_slots in dims.items():
        key = f"dimension_phrases.{dim}"
        pools = mapping(raw_slots, file, key, _SLOTS)
        # An item dimension has no caption phrase: it shows up as the caption noun instead.
        slots[dim] = SlotPhrases(
            *(strings(pools[s], file, f"{key}.{s}", allow_empty=s == "caption") for s in _SLOTS)
        )
    return PhraseBook(**lists, dimension_phrases=slots)


@lru_cache(maxsize=1)
def _packaged() -> PhraseBook:
    return load_phrases(default_source(PHRASES_FILE))


_BOOK = load_phrases()
BOILERPLATE: tuple[str, ...] = _BOOK.boilerplate
TITLE_TEMPLATES: tuple[str, ...] = _BOOK.title_templates
TITLE_EMOJI: tuple[str, ...] = _BOOK.title_emoji
BODY_FRAMES: tuple[str, ...] = _BOOK.body_frames
OPENERS: tuple[str, ...] = _BOOK.openers
CLOSERS: tuple[str, ...] = _BOOK.closers
DISTRACTORS: tuple[str, ...] = _BOOK.distractors
DIMENSION_PHRASES: Mapping[str, SlotPhrases] = _BOOK.dimension_phrases
CAPTION_FRAMES: tuple[str, ...] = _BOOK.caption_frames
PLAIN_CAPTIONS: tuple[str, ...] = _BOOK.plain_captions


def generic_texts() -> list[str]:
    """Every fixed text a note may contain, with the ``{...}`` placeholders removed.

    Returns:
        Titles, frames, openers, closers, distractors and slot phrases; used to check that no
        surface form of a value appears in text that is not about that value.
    """
    texts: list[str] = [*TITLE_TEMPLATES, *BODY_FRAMES, *OPENERS, *CLOSERS, *DISTRACTORS, *CAPTION_FRAMES]
    for slots in DIMENSION_PHRASES.values():
        for pool in (slots.title, slots.body, slots.caption):
            texts.extend(pool)
    for key in (
        "{item}",
        "{tp}",
        "{open}",
        "{attrs}",
        "{chat2}",
        "{chat}",
        "{close}",
        "{v}",
        "{noun}",
        "{a_noun}",
    ):
        texts = [t.replace(key, " | ") for t in texts]
    return [t.replace("{phr}", " | ").replace("{scene}", " | ") for t in texts]
