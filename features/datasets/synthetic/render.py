"""Render one note's text from its category and true attributes.

Text-visible attributes (channel ``text`` or ``both``) go into the body (one slot sentence each, in
random order) and maybe the title; image-visible ones (``image`` or ``both``) into the image
captions. Bodies mix openers, chit-chat distractors and closers and carry occasional typos.
Reference tags are noisy creator hashtags: some attribute forms, sometimes the category, and
platform boilerplate.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from features.datasets.synthetic.phrases import (
    BODY_FRAMES,
    BOILERPLATE,
    CAPTION_FRAMES,
    CLOSERS,
    DIMENSION_PHRASES,
    DISTRACTORS,
    OPENERS,
    PLAIN_CAPTIONS,
    TITLE_EMOJI,
    TITLE_TEMPLATES,
)
from features.datasets.synthetic.taxonomy import Category, Value, hashtag_slug
from features.datasets.synthetic.vocabulary import ITEM_DIMENSIONS

__all__ = ["CHANNELS", "RenderParams", "RenderedNote", "render_note"]

CHANNELS: tuple[str, ...] = ("text", "image", "both")


@dataclass(frozen=True)
class RenderParams:
    """Noise levels of the renderer.

    Attributes:
        typo_rate: chance that a body word of 4+ letters gets a swapped or dropped character.
        title_attribute_p: chance the title mentions one text-visible attribute.
        title_emoji_p: chance of a trailing emoji in the title.
        attribute_tag_p: chance a true attribute becomes a creator hashtag.
        category_tag_p: chance the category (or an alias) is a hashtag.
        boilerplate_p: chance a note carries platform-boilerplate hashtags (1 to 3 of them).
    """

    typo_rate: float = 0.012
    title_attribute_p: float = 0.75
    title_emoji_p: float = 0.25
    attribute_tag_p: float = 0.5
    category_tag_p: float = 0.45
    boilerplate_p: float = 0.9


@dataclass(frozen=True)
class RenderedNote:
    """The text of one note."""

    title: str
    body: str
    image_captions: list[str]
    reference_tags: list[str]


_AN = re.compile(r"\b([Aa]) (?=[AaEeIiOo])")


def _articles(text: str) -> str:
    """Fix "a" before a vowel ("a e-reader" -> "an e-reader") after values are filled in."""
    return _AN.sub(r"\1n ", text)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _squash(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.split("\n")]
    return "\n".join(lines).strip()


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    if rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word[:i] + word[i + 1 :]


def add_typos(text: str, rate: float, rng: random.Random) -> str:
    """Swap or drop one inner character in a fraction ``rate`` of the alphabetic words of 4+ letters."""
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) >= 4 and word.isalpha() and rng.random() < rate:
            words[i] = _typo(word, rng)
    return " ".join(words)


def _title(item: str, text_attrs: Sequence[Value], params: RenderParams, rng: random.Random) -> str:
    phrase = ""
    # The item already names itself in every title template ("my {item}").
    candidates = [v for v in text_attrs if v.dimension not in ITEM_DIMENSIONS]
    if candidates and rng.random() < params.title_attribute_p:
        value = rng.choice(candidates)
        phrase = rng.choice(DIMENSION_PHRASES[value.dimension].title).format(v=rng.choice(value.forms))
    title = _squash(rng.choice(TITLE_TEMPLATES).format(item=item, tp=phrase).replace(" ?", "?"))
    if rng.random() < params.title_emoji_p:
        title += rng.choice(TITLE_EMOJI)
    return _cap(_articles(title))


def _body(item: str, text_attrs: Sequence[Value], params: RenderParams, rng: random.Random) -> str:
    sentences = [
        _cap(
            _articles(
                rng.choice(DIMENSION_PHRASES[v.dimension].body).format(v=rng.choice(v.forms), item=item)
            )
        )
        for v in text_attrs
    ]
    rng.shuffle(sentences)
    chat, chat2 = rng.sample(DISTRACTORS, 2)
    body = rng.choice(BODY_FRAMES).format(
        open=rng.choice(OPENERS).format(item=item),
        attrs=" ".join(sentences),
        chat=chat,
        chat2=chat2,
        close=rng.choice(CLOSERS),
    )
    return _squash(add_typos(body, params.typo_rate, rng))


def _captions(cat: Category, image_attrs: Sequence[Value], rng: random.Random) -> list[str]:
    item = next((v for v in image_attrs if v.dimension in ITEM_DIMENSIONS), None)
    noun = rng.choice(item.forms) if item is not None else rng.choice(cat.caption_nouns)
    a_noun = _articles(f"a {noun}")
    n = rng.choice((1, 1, 2, 2, 3))
    buckets: list[list[str]] = [[] for _ in range(n)]
    for value in image_attrs:
        pool = DIMENSION_PHRASES[value.dimension].caption
        if pool:  # item dimensions show up as the caption noun instead
            buckets[rng.randrange(n)].append(rng.choice(pool).format(v=rng.choice(value.forms)))
    captions = []
    for phrases in buckets:
        scene = rng.choice(cat.scenes)
        if phrases:
            frame = rng.choice(CAPTION_FRAMES)
            text = frame.format(noun=noun, a_noun=a_noun, phr=", ".join(phrases), scene=scene)
        else:
            text = rng.choice(PLAIN_CAPTIONS).format(noun=noun, a_noun=a_noun, scene=scene)
        captions.append(_articles(_squash(text)))
    return captions


def _tags(cat: Category, attrs: Sequence[Value], params: RenderParams, rng: random.Random) -> list[str]:
    tags = [hashtag_slug(rng.choice(v.forms)) for v in attrs if rng.random() < params.attribute_tag_p]
    if rng.random() < params.category_tag_p:
        tags.append(rng.choice(cat.aliases))
    if rng.random() < params.boilerplate_p:
        tags.extend(rng.sample(BOILERPLATE, rng.choices((1, 2, 3), weights=(0.45, 0.35, 0.2))[0]))
    tags = list(dict.fromkeys(t for t in tags if t))
    rng.shuffle(tags)
    return tags


def render_note(
    cat: Category,
    attrs: Sequence[tuple[Value, str]],
    rng: random.Random,
    params: RenderParams | None = None,
) -> RenderedNote:
    """Render title, body, image captions and creator hashtags of one note.

    Args:
        cat: the note's category.
        attrs: true attributes as (value, channel) with channel in :data:`CHANNELS`.
        rng: Python random generator (the renderer draws many scalars; this is faster than numpy).
        params: noise levels; defaults to :class:`RenderParams`.

    Returns:
        The rendered note. Values with channel ``image`` appear in no form in title or body.

    Raises:
        ValueError: a channel outside :data:`CHANNELS`.
    """
    params = params or RenderParams()
    bad = [ch for _, ch in attrs if ch not in CHANNELS]
    if bad:
        raise ValueError(f"attribute channel {bad[0]!r} is invalid; expected one of {', '.join(CHANNELS)}")
    text_attrs = [v for v, ch in attrs if ch != "image"]
    image_attrs = [v for v, ch in attrs if ch != "text"]
    item_value = next((v for v in text_attrs if v.dimension in ITEM_DIMENSIONS), None)
    item = rng.choice(item_value.forms) if item_value is not None else rng.choice(cat.nouns)
    return RenderedNote(
        title=_title(item, text_attrs, params, rng),
        body=_body(item, text_attrs, params, rng),
        image_captions=_captions(cat, image_attrs, rng),
        reference_tags=_tags(cat, [v for v, _ in attrs], params, rng),
    )
