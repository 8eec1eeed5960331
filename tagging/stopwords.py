"""The stopword list: package data (``tagging/data/stopwords.txt``) read by a small typed loader."""

from __future__ import annotations

from importlib import resources

__all__ = ["STOPWORDS", "load_word_list", "parse_word_list"]


def parse_word_list(text: str) -> frozenset[str]:
    """The words of a word-list file: one a line; blank lines and lines starting with ``#`` skipped."""
    lines = (line.strip() for line in text.splitlines())
    return frozenset(w for w in lines if w and not w.startswith("#"))


def load_word_list(name: str) -> frozenset[str]:
    """A word list shipped in ``tagging/data`` (e.g. ``"stopwords.txt"``)."""
    return parse_word_list((resources.files("tagging") / "data" / name).read_text(encoding="utf-8"))


STOPWORDS: frozenset[str] = load_word_list("stopwords.txt")
"""English and Chinese function words: a handbook phrase neither starts nor ends with one, and a
dimension is never named after one."""
