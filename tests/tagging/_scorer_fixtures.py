"""A deterministic synthetic community for the scorer student's tests: notes, a fake teacher, a handbook.

Two categories, one Latin-script (``shoes``) and one Chinese (``咖啡``). Every note's title names one
colour/flavour and one style; the fake teacher tags exactly those words (in their handbook
dimension) plus the note's topic hashtag, and, like a careless LLM, the boilerplate ``热门`` on every
note whose text carries ``#热门``. Nothing here is random beyond ``random.Random(seed)``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from tagging.handbook_model import Dimension, DimensionValue, Handbook, HandbookSection
from tagging.student.config import StudentConfig
from tagging.types import NoteInput, Tag

__all__ = ["BOILERPLATE", "SMALL", "handbook", "make_notes", "small_config", "tag_f1", "teacher_for"]

BOILERPLATE = "热门"
SMALL: dict[str, Any] = {
    "scorer": {"buckets": 4096, "dim": 16, "hidden": 16},
    "epochs": 3,
    "batch_size": 16,
    "device": "cpu",
}

# category -> dimension -> values (each used in titles; the teacher tags the value it sees)
_ATTRS: dict[str, dict[str, tuple[str, ...]]] = {
    "shoes": {
        "colour": ("red", "cream white", "black", "navy", "olive"),
        "style": ("retro", "minimal", "chunky", "skate"),
    },
    "咖啡": {
        "口味": ("拿铁", "美式", "抹茶", "焦糖"),
        "风格": ("复古", "清新", "工业风"),
    },
}
_SYNONYMS = {"cream white": ("off white",), "拿铁": ("latte",)}
_TOPICS = {"shoes": ("sneakerhead", "streetwear", "kicks"), "咖啡": ("咖啡日记", "探店", "周末")}
_FILLER = {
    "shoes": (
        "Picked these up last week.",
        "The sole feels great on long walks.",
        "Sizing runs a little small.",
        "Would buy again for sure.",
        "They go with almost everything.",
    ),
    "咖啡": ("今天路过这家店。", "环境很安静适合看书。", "价格还算合理。", "店员很热情。", "下次还会再来。"),
}


def handbook() -> Handbook:
    """The handbook of the synthetic community (values, one synonym each for two of them, boilerplate)."""
    cats = {
        cat: HandbookSection(
            dimensions=tuple(
                Dimension(
                    name=dim,
                    values=tuple(DimensionValue(value=v, synonyms=_SYNONYMS.get(v, ())) for v in values),
                )
                for dim, values in dims.items()
            )
        )
        for cat, dims in _ATTRS.items()
    }
    return Handbook(boilerplate=(BOILERPLATE, "fyp"), categories=cats).with_version()


def _note(i: int, rng: random.Random, prefix: str) -> tuple[NoteInput, list[Tag]]:
    cat = "shoes" if i % 2 == 0 else "咖啡"
    (d1, v1s), (d2, v2s) = _ATTRS[cat].items()
    v1, v2 = rng.choice(v1s), rng.choice(v2s)
    topic = rng.choice(_TOPICS[cat])
    own = "zq" + "".join(rng.choice("bcdfghjklmnpstvwxz") for _ in range(6))  # this note's own hashtag
    filler = " ".join(rng.sample(_FILLER[cat], 2))
    said = _SYNONYMS[v1][0] if v1 in _SYNONYMS and rng.random() < 0.5 else v1  # the teacher says v1
    title = f"My new {said} {v2} sneakers" if cat == "shoes" else f"今天喝到一杯{said}，店里是{v2}装修"
    boiler = i % 3 != 2  # two notes in three carry #热门 and the teacher tags it there
    body = f"{filler} #{topic} #{own}" + (f" #{BOILERPLATE}" if boiler else "")
    tags = [Tag(v1, d1, 0.9), Tag(v2, d2, 0.8), Tag(topic, "topic", 0.7), Tag(own, "topic", 0.6)]
    if boiler:
        tags.append(Tag(BOILERPLATE, "other", 0.9))
    return NoteInput(f"{prefix}{i:04d}", cat, title, body), tags


def make_notes(n: int, *, seed: int = 0, prefix: str = "s") -> tuple[list[NoteInput], dict[str, list[Tag]]]:
    """``n`` notes (alternating categories) and the fake teacher's answer for each."""
    rng = random.Random(seed)
    notes, teacher = [], {}
    for i in range(n):
        note, tags = _note(i, rng, prefix)
        notes.append(note)
        teacher[note.note_id] = tags
    return notes, teacher


def teacher_for(
    notes: Sequence[NoteInput], teacher: dict[str, list[Tag]], boilerplate: bool
) -> dict[str, set[str]]:
    """note_id -> the set of teacher tag texts (without the boilerplate tag unless ``boilerplate``)."""
    return {
        n.note_id: {t.text for t in teacher[n.note_id] if boilerplate or t.text != BOILERPLATE} for n in notes
    }


def small_config(**overrides: Any) -> StudentConfig:
    """A StudentConfig small enough for a unit test (a few seconds on one core)."""
    return StudentConfig.from_mapping({**SMALL, **overrides})


def tag_f1(pred: dict[str, set[str]], gold: dict[str, set[str]]) -> float:
    """Micro F1 of predicted tag sets vs gold tag sets over gold's notes."""
    hit = sum(len(pred.get(k, set()) & g) for k, g in gold.items())
    n_p = sum(len(pred.get(k, set())) for k in gold)
    n_g = sum(len(g) for g in gold.values())
    return 2 * hit / (n_p + n_g) if n_p + n_g else 0.0
