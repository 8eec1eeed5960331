"""Sample the notes of the synthetic community: authors, categories, publication times, latent
quality, true attributes with their channel (text / image / both), and rendered text.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.datasets.synthetic.render import CHANNELS, RenderParams, render_note
from features.datasets.synthetic.sizes import GeneratorConfig
from features.datasets.synthetic.taxonomy import Taxonomy, Value

__all__ = ["MAX_ATTRIBUTES", "NoteParams", "NotesResult", "draw_notes", "make_notes", "us_to_utc"]

log = logging.getLogger(__name__)

MAX_ATTRIBUTES = 4
_HOUR_US = 3_600 * 1_000_000


@dataclass(frozen=True)
class NoteParams:
    """How notes are sampled.

    Attributes:
        attribute_counts: possible numbers of true attributes per note.
        attribute_count_weights: their probabilities.
        channel_weights: probabilities of the ``text``, ``image`` and ``both`` channels.
        notes_per_author: mean notes per author.
        author_home_p: chance a note is in its author's home category.
        publish_growth: exponent < 1 publishes slightly more notes late in the window.
    """

    attribute_counts: tuple[int, ...] = (2, 3, 4)
    attribute_count_weights: tuple[float, ...] = (0.3, 0.45, 0.25)
    channel_weights: tuple[float, float, float] = (0.47, 0.25, 0.28)
    notes_per_author: float = 6.0
    author_home_p: float = 0.85
    publish_growth: float = 0.9


@dataclass
class NotesResult:
    """Notes as a table plus the arrays the behaviour model needs.

    Attributes:
        notes: the canonical ``notes`` table.
        attributes: ground truth ``note_attributes`` (note_id, category, dimension, value, channel).
        category: (N,) category index per note.
        created_us: (N,) publication time, microseconds since the epoch.
        quality: (N,) latent quality, standard normal.
        attr_vids: (N, MAX_ATTRIBUTES) true value ids, padded with -1.
    """

    notes: pd.DataFrame
    attributes: pd.DataFrame
    category: np.ndarray
    created_us: np.ndarray
    quality: np.ndarray
    attr_vids: np.ndarray


def us_to_utc(us: np.ndarray) -> pd.Series:
    """Microseconds since the epoch (int64) to a ``datetime64[us, UTC]`` series."""
    return pd.Series(np.asarray(us, dtype="int64").astype("datetime64[us]")).dt.tz_localize("UTC")


def _id_strings(prefix: str, n: int, width: int) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)


def _sample_meta(
    cfg: GeneratorConfig,
    n_categories: int,
    params: NoteParams,
    rng: np.random.Generator,
    start_us: int,
    end_us: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = cfg.n_notes
    n_authors = max(1, round(n / params.notes_per_author))
    home = rng.integers(n_categories, size=n_authors)
    activity = 1.0 / (rng.permutation(n_authors) + 1.0) ** 0.9
    author = rng.choice(n_authors, size=n, p=activity / activity.sum())
    stray = rng.random(n) >= params.author_home_p
    category = np.where(stray, rng.integers(n_categories, size=n), home[author])
    # Notes stop an hour before the end so every engagement on them still fits in the window.
    span = end_us - _HOUR_US - start_us
    created = start_us + np.sort(rng.random(n) ** params.publish_growth * span).astype(np.int64)
    quality = rng.standard_normal(n)
    return author, category, created, quality


def _sample_attributes(
    taxonomy: Taxonomy,
    category: int,
    cum_pop: dict[tuple[int, int], list[float]],
    params: NoteParams,
    rng: random.Random,
) -> list[tuple[Value, str]]:
    cat = taxonomy.categories[category]
    k = min(
        rng.choices(params.attribute_counts, weights=params.attribute_count_weights)[0], len(cat.dimensions)
    )
    dims = sorted(rng.sample(range(len(cat.dimensions)), k))
    out = []
    for d in dims:
        dim = cat.dimensions[d]
        value = rng.choices(dim.values, cum_weights=cum_pop[(category, d)])[0]
        out.append((value, rng.choices(CHANNELS, weights=params.channel_weights)[0]))
    return out


def make_notes(
    cfg: GeneratorConfig,
    taxonomy: Taxonomy,
    popularity: np.ndarray,
    rng: np.random.Generator,
    text_rng: random.Random,
    start_us: int,
    end_us: int,
    params: NoteParams | None = None,
    render_params: RenderParams | None = None,
) -> NotesResult:
    """Sample and render ``cfg.n_notes`` notes published between ``start_us`` and ``end_us``.

    Args:
        cfg: resolved options.
        taxonomy: the taxonomy.
        popularity: (V,) value popularity within each dimension (see ``value_popularity``).
        rng: numpy generator for the vectorised draws (authors, times, quality).
        text_rng: Python generator for attributes and text.
        start_us, end_us: the window, microseconds since the epoch.
        params: sampling parameters.
        render_params: text noise levels.

    Returns:
        The notes, their ground-truth attributes and arrays for the behaviour model; notes are
        numbered in publication order.
    """
    params = params or NoteParams()
    author, category, created, quality = _sample_meta(
        cfg, len(taxonomy.categories), params, rng, start_us, end_us
    )
    note_ids = _id_strings("n", cfg.n_notes, 6)
    author_ids = _id_strings("a", int(author.max()) + 1, 4)
    result = _render(
        taxonomy,
        _cum_popularity(taxonomy, popularity),
        note_ids,
        author_ids[author],
        category,
        created,
        quality,
        params,
        text_rng,
        render_params,
        progress=cfg.progress,
    )
    log.info("rendered %d notes by %d authors", len(result.notes), result.notes["author_id"].nunique())
    return result


def draw_notes(
    taxonomy: Taxonomy,
    popularity: np.ndarray,
    note_ids: Sequence[str],
    rng: np.random.Generator,
    text_rng: random.Random,
    start_us: int,
    end_us: int,
    *,
    category_p: np.ndarray | None = None,
    author_ids: Sequence[str] = ("",),
    params: NoteParams | None = None,
    render_params: RenderParams | None = None,
) -> NotesResult:
    """Draw extra notes like :func:`make_notes`'s (same attribute sampler, renderer and quality
    distribution), published uniformly in ``[start_us, end_us)``: e.g. notes published after the
    generated window. Does not touch :func:`make_notes`'s streams.

    Args:
        taxonomy, popularity: as :func:`make_notes`.
        note_ids: ids of the new notes (their number is the number of notes drawn).
        rng: numpy generator for categories, authors, times and quality.
        text_rng: Python generator for attributes and text.
        start_us, end_us: the publication window, microseconds since the epoch.
        category_p: (C,) category probabilities in ``taxonomy.categories`` order (default uniform).
        author_ids: authors to draw from uniformly.
        params, render_params: as :func:`make_notes`.

    Returns:
        The notes in publication order, their ground-truth attributes and the behaviour arrays.
    """
    params = params or NoteParams()
    n, n_cat = len(note_ids), len(taxonomy.categories)
    category = rng.choice(n_cat, size=n, p=category_p).astype(np.int64)
    author = np.asarray(author_ids, dtype=object)[rng.integers(len(author_ids), size=n)]
    created = start_us + np.sort(rng.random(n) * (end_us - start_us)).astype(np.int64)
    quality = rng.standard_normal(n)
    ids = np.asarray(list(note_ids), dtype=object)
    cum_pop = _cum_popularity(taxonomy, popularity)
    return _render(
        taxonomy, cum_pop, ids, author, category, created, quality, params, text_rng, render_params
    )


def _cum_popularity(taxonomy: Taxonomy, popularity: np.ndarray) -> dict[tuple[int, int], list[float]]:
    return {
        (ci, di): list(accumulate(float(popularity[v.vid]) for v in dim.values))
        for ci, cat in enumerate(taxonomy.categories)
        for di, dim in enumerate(cat.dimensions)
    }


def _render(
    taxonomy: Taxonomy,
    cum_pop: dict[tuple[int, int], list[float]],
    note_ids: np.ndarray,
    authors: np.ndarray,
    category: np.ndarray,
    created: np.ndarray,
    quality: np.ndarray,
    params: NoteParams,
    text_rng: random.Random,
    render_params: RenderParams | None,
    progress: bool = False,
) -> NotesResult:
    """Sample each note's true attributes and render its text (one ``text_rng`` stream, note by note)."""
    n = len(note_ids)
    titles, bodies, captions, tags = [], [], [], []
    attr_vids = np.full((n, MAX_ATTRIBUTES), -1, dtype=np.int64)
    gt: dict[str, list[str]] = {"note_id": [], "category": [], "dimension": [], "value": [], "channel": []}
    for i in tqdm(range(n), desc="notes", disable=not progress, leave=False):
        cat = taxonomy.categories[int(category[i])]
        attrs = _sample_attributes(taxonomy, int(category[i]), cum_pop, params, text_rng)
        note = render_note(cat, attrs, text_rng, render_params)
        titles.append(note.title)
        bodies.append(note.body)
        captions.append(note.image_captions)
        tags.append(note.reference_tags)
        for j, (value, channel) in enumerate(attrs):
            attr_vids[i, j] = value.vid
            gt["note_id"].append(note_ids[i])
            gt["category"].append(cat.name)
            gt["dimension"].append(value.dimension)
            gt["value"].append(value.name)
            gt["channel"].append(channel)
    names = np.array(taxonomy.category_names, dtype=object)
    notes = pd.DataFrame(
        {
            "note_id": note_ids,
            "author_id": authors,
            "category": names[category],
            "title": titles,
            "body": bodies,
            "image_captions": captions,
            "created_at": us_to_utc(created),
            "reference_tags": tags,
        }
    )
    return NotesResult(notes, pd.DataFrame(gt), category.astype(np.int64), created, quality, attr_vids)
