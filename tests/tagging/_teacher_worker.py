"""Subprocess body of the SIGKILL test: run the LLM teacher over N synthetic notes against BASE_URL.

Usage: python _teacher_worker.py BASE_URL RUN_DIR N
"""

from __future__ import annotations

import sys

from tagging.handbook_model import Dimension, DimensionValue, Handbook, HandbookSection
from tagging.runner import run_teacher
from tagging.teachers.llm import make_llm_teacher
from tagging.types import NoteInput

WORDS = [
    "alpine",
    "trail",
    "sneaker",
    "leather",
    "vintage",
    "matcha",
    "latte",
    "ramen",
    "espresso",
    "canvas",
    "hiking",
    "marathon",
]


def handbook() -> Handbook:
    dim = Dimension(name="topic", values=tuple(DimensionValue(value=w) for w in WORDS[:6]))
    return Handbook(categories={"life": HandbookSection(dimensions=(dim,))}).with_version()


def notes(n: int) -> list[NoteInput]:
    out = []
    for i in range(n):
        title = " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 7)) + f" n{i}"
        out.append(NoteInput(note_id=f"n{i:05d}", category="life", title=title, body=f"body of note {i}"))
    return out


def teacher(base_url: str, **over: object):
    opts = dict(
        base_url=base_url,
        model="fake",
        concurrency=16,
        timeout_s=0.3,
        max_retries=8,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
    )
    opts.update(over)
    return make_llm_teacher(handbook(), **opts)


if __name__ == "__main__":
    base_url, run_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = run_teacher(teacher(base_url), notes(n), run_dir=run_dir, out_name="llm_tags", batch_size=8)
    print(s.as_dict(), flush=True)
