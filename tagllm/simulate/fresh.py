"""Brand-new notes published during the simulation: the cold-start notes of the experiment.

Every simulated day (pre-period and experiment) :class:`Publisher` draws ``fresh_notes_per_day`` notes
from the data generator (:func:`features.datasets.synthetic.notes.draw_notes`: the same attribute
sampler, text renderer and quality distribution as the run's notes, categories in the catalog's
shares), adds their true attributes to the response model, and tags them once per day in one batch
for the treatment arm. The engine adds each note to both arms at its publication time with
:meth:`~ranking.recommend.Recommender.add_note`: control with its category only (its catalog has no
tags), treatment with the tags below.

Treatment tags of a fresh note come from the treatment arm's source, as a live system would tag a new
note: ``student`` (and ``teacher``, whose LLM the simulation cannot call) runs the run's student model
(RUN/student/model) on the note's title, body and captions; ``ground_truth`` uses the generator's true
attributes; ``reference`` the rendered creator hashtags. Without a student model, ``student`` and
``teacher`` fall back to the true attributes (logged, and named in the summary).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.datasets.synthetic.notes import draw_notes
from features.io import RunDir
from tagging.types import Tag
from tagllm.simulate.config import SimConfig
from tagllm.simulate.truth import TrueModel

__all__ = ["FRESH_PREFIX", "FreshNote", "Publisher", "fresh_tag_source", "tagger_tags", "truth_tags"]

log = logging.getLogger(__name__)

#: (notes table rows, their true attributes) -> treatment tags per note, in order.
TagFn = Callable[[pd.DataFrame, pd.DataFrame], list[list[Tag]]]

_DAY_S = 86_400.0
#: Fresh note ids start with it (catalog ids of the synthetic community start with "n").
FRESH_PREFIX = "sim"


@dataclass(frozen=True)
class FreshNote:
    """One note published during the simulation.

    Attributes:
        note_id: ``sim<day>-<n>`` (:data:`FRESH_PREFIX`), never a catalog id.
        category: category name.
        created_s: publication time, epoch seconds.
        tags: the treatment arm's tags (control gets none).
        truth_index: the note's index in the :class:`TrueModel`.
    """

    note_id: str
    category: str
    created_s: float
    tags: tuple[Tag, ...]
    truth_index: int


def truth_tags(notes: pd.DataFrame, attributes: pd.DataFrame) -> list[list[Tag]]:
    """The generator's true attributes as tags, in the ``ground_truth`` catalog's form
    (``dimension:value``, confidence 1)."""
    by_note: dict[str, list[Tag]] = {}
    for nid, dim, value in zip(
        attributes["note_id"], attributes["dimension"], attributes["value"], strict=True
    ):
        by_note.setdefault(str(nid), []).append(Tag(f"{dim}:{str(value).lower()}", str(dim), 1.0))
    return [by_note.get(str(n), []) for n in notes["note_id"]]


def reference_tags(notes: pd.DataFrame, _attributes: pd.DataFrame) -> list[list[Tag]]:
    """The rendered creator hashtags, in the ``reference`` catalog's form."""
    return [
        [Tag(t, "reference", 1.0) for t in sorted({str(x).strip().lower() for x in ts if str(x).strip()})]
        for ts in notes["reference_tags"]
    ]


def tagger_tags(tagger: object) -> TagFn:
    """Tags from a :class:`~tagging.types.Tagger` run on the notes' text (one ``tag`` call per day);
    a note whose result failed gets no tags (counted in the log)."""
    from tagging.types import notes_from_frame

    def fn(notes: pd.DataFrame, _attributes: pd.DataFrame) -> list[list[Tag]]:
        results = tagger.tag(notes_from_frame(notes))  # type: ignore[attr-defined]
        failed = sum(r.status != "ok" for r in results)
        if failed:
            log.warning("tagger failed on %d of %d fresh notes: they get no tags", failed, len(results))
        return [
            [Tag(t.text, t.dimension, float(t.confidence)) for t in r.tags] if r.status == "ok" else []
            for r in results
        ]

    return fn


def fresh_tag_source(run: RunDir, treatment_source: str) -> tuple[str, TagFn]:
    """(description, tag function) of the fresh notes' treatment tags (see the module docstring)."""
    if treatment_source == "ground_truth":
        return "ground_truth", truth_tags
    if treatment_source == "reference":
        return "reference", reference_tags
    model_dir = run.path / "student" / "model"
    if not (model_dir / "student.json").exists():
        log.warning(
            "no student model in %s: fresh notes of the treatment arm get the generator's true attributes "
            "as tags (treatment tags: %s)",
            model_dir,
            treatment_source,
        )
        return f"ground_truth (fallback: no student model for {treatment_source})", truth_tags
    return f"student model {model_dir}", tagger_tags(_load_student(run, model_dir))


def _load_student(run: RunDir, model_dir: Path) -> object:
    from tagging.handbook_model import load_handbook
    from tagging.student import load_student

    hb_path = run.handbook
    handbook = load_handbook(hb_path) if hb_path.exists() else None
    return load_student(model_dir, handbook=handbook, batch_size=64, device="cpu")


class Publisher:
    """Draws, registers and tags each simulated day's fresh notes (deterministic by seed and day).

    Args:
        truth: the response model; fresh notes are appended to it.
        tag_fn: the treatment tags (see :func:`fresh_tag_source`).
        cfg: settings (``fresh_notes_per_day``, ``seed``).
        start_s: epoch seconds of day 0.
    """

    def __init__(self, truth: TrueModel, tag_fn: TagFn, cfg: SimConfig, start_s: float) -> None:
        self.truth, self.tag_fn, self.cfg, self.start_s = truth, tag_fn, cfg, start_s
        counts = np.bincount(truth.notes.category, minlength=len(truth.taxonomy.categories))
        self.category_p = counts / counts.sum()
        self.authors = tuple(sorted(truth.notes.notes["author_id"].astype(str).unique()))
        self.published = 0
        self.tag_seconds = 0.0

    def draw(self, day: int) -> list[FreshNote]:
        """The notes published on ``day``, in publication order (all in the day's first 23 hours,
        like the sessions), registered with the response model and tagged."""
        n = self.cfg.fresh_notes_per_day
        if n == 0:
            return []
        rng = np.random.default_rng([self.cfg.seed, 3, day])
        text_rng = random.Random(int(rng.integers(2**62)))
        start_us = round((self.start_s + day * _DAY_S) * 1e6)
        end_us = start_us + round((_DAY_S - 3_600.0) * 1e6)
        ids = [f"{FRESH_PREFIX}{day:03d}-{i:04d}" for i in range(n)]
        new = draw_notes(
            self.truth.taxonomy,
            self.truth.popularity,
            ids,
            rng,
            text_rng,
            start_us,
            end_us,
            category_p=self.category_p,
            author_ids=self.authors,
        )
        base = len(self.truth.note_index)
        self.truth.add_notes(new)
        t0 = time.perf_counter()
        tags = self.tag_fn(new.notes, new.attributes)
        self.tag_seconds += time.perf_counter() - t0
        self.published += n
        return [
            FreshNote(nid, str(cat), us / 1e6, tuple(t), base + i)
            for i, (nid, cat, us, t) in enumerate(
                zip(ids, new.notes["category"], new.created_us.tolist(), tags, strict=True)
            )
        ]
