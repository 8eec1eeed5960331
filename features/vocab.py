"""The project's one tag vocabulary, and the canonical form of a tag text.

:class:`TagVocabulary` maps tag texts to stable integer ids for embedding tables and feature rows:
id 0 is reserved for padding/unknown, ids are never reassigned when the vocabulary is extended, and
the file is written atomically with a version counter and a content hash. It is a read-only
``Mapping[str, int]`` over the tags (padding excluded), so code that only needs "text -> id" can take
any mapping. Its users:

- the tagger writes RUN_DIR/tag_vocab.json (:meth:`TagVocabulary.extend`, append-only);
- the Feast feature tables use that file's ids, or a sorted vocabulary of the run's tag texts when
  there is none (:meth:`TagVocabulary.sorted_of`), and snapshot it to RUN_DIR/features/tag_vocab.json;
- the ranking catalog numbers its tag texts with :meth:`TagVocabulary.sorted_of`.

A lookup tries the text as given, then its canonical form (:func:`canonical`), so a vocabulary of
canonical tags answers for "Cream-White" as for "cream white".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from features.errors import ConfigError, NotFoundError
from features.io import atomic_path

__all__ = ["PAD", "PAD_ID", "TagVocabulary", "canonical", "is_cjk"]

PAD = "<pad>"
PAD_ID = 0

_PUNCT_RE = re.compile(r"[\W_]+", re.UNICODE)
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
_SPACE_RE = re.compile(r"\s+")


def canonical(text: str) -> str:
    """Canonical tag form: NFKC, lower case, ``#``/punctuation removed, single spaces.

    Hyphens and underscores join words with a space ("off-white" -> "off white"); spaces between two
    CJK characters are removed, since Chinese is written without them.

    Example:
        >>> canonical("  #Cream-White!! ")
        'cream white'
    """
    text = unicodedata.normalize("NFKC", str(text)).lower()
    text = _PUNCT_RE.sub(" ", text)
    text = _SPACE_RE.sub(" ", text).strip()
    if " " in text and _CJK_RE.search(text):
        text = re.sub(r"(?<=[\u3400-\u9fff]) (?=[\u3400-\u9fff])", "", text)
    return text


def is_cjk(text: str) -> bool:
    """True when ``text`` contains CJK characters (compared by characters, not words)."""
    return bool(_CJK_RE.search(text))


class TagVocabulary(Mapping[str, int]):
    """Tag text -> stable integer id (0 = padding/unknown).

    Args:
        tokens: the texts by id; ``tokens[0]`` must be ``"<pad>"``.
        version: bumped by :meth:`extend` whenever it grows.

    ``len(vocab)`` counts tags (padding excluded); :attr:`size` is the number of ids (rows of an
    embedding table, padding included).

    Example:
        >>> vocab = TagVocabulary().extend(["cream white", "chunky"])
        >>> vocab.id("Cream-White"), vocab.id("never seen"), len(vocab), vocab.size
        (1, 0, 2, 3)
    """

    def __init__(self, tokens: Iterable[str] | None = None, version: int = 0) -> None:
        self.tokens: list[str] = list(tokens) if tokens is not None else [PAD]
        self.version = int(version)
        if not self.tokens or self.tokens[0] != PAD:
            raise ConfigError(f"a tag vocabulary must start with {PAD!r} at id 0, got {self.tokens[:1]!r}")
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ConfigError("a tag vocabulary must not contain the same tag twice")

    def __repr__(self) -> str:
        return f"TagVocabulary({len(self)} tags, version {self.version})"

    # ---- Mapping[str, int] over the tags
    def __getitem__(self, text: str) -> int:
        idx = self._index.get(text)
        if idx is None:
            idx = self._index.get(canonical(text))
        if not idx:  # unknown, or the padding token itself
            raise KeyError(text)
        return idx

    def __iter__(self) -> Iterator[str]:
        return iter(self.tokens[1:])

    def __len__(self) -> int:
        return len(self.tokens) - 1

    @property
    def size(self) -> int:
        """Number of ids, padding included (0..size-1)."""
        return len(self.tokens)

    def id(self, text: str) -> int:
        """The id of ``text`` (as given, else canonicalized); 0 when unknown."""
        return self.get(text, PAD_ID)

    def ids(self, texts: Iterable[str]) -> list[int]:
        return [self.id(t) for t in texts]

    def text(self, idx: int) -> str:
        """The tag text of id ``idx``; raises NotFoundError for ids out of range."""
        if not 0 <= idx < len(self.tokens):
            raise NotFoundError(f"tag id {idx} is not in the vocabulary (size {len(self.tokens)})")
        return self.tokens[idx]

    # ---- building
    def extend(self, texts: Iterable[str]) -> TagVocabulary:
        """A new vocabulary with unseen canonical texts appended (existing ids unchanged; version + 1
        if grown)."""
        tokens = list(self.tokens)
        seen = set(self._index)
        for t in texts:
            c = canonical(t)
            if c and c not in seen:
                seen.add(c)
                tokens.append(c)
        grown = len(tokens) > len(self.tokens)
        return TagVocabulary(tokens, self.version + 1 if grown else self.version)

    @classmethod
    def sorted_of(cls, texts: Iterable[str]) -> TagVocabulary:
        """The texts as given (not canonicalized), de-duplicated and sorted: ids 1..N in that order."""
        return cls([PAD, *sorted({str(t) for t in texts if t and t != PAD})])

    @classmethod
    def from_tables(
        cls, tables: Iterable[pd.DataFrame], *, base: TagVocabulary | None = None
    ) -> TagVocabulary:
        """Build (or extend ``base``) from canonical ``tags`` tables, in row order."""
        texts: list[str] = []
        for df in tables:
            for tag_list in df["tags"]:
                texts.extend(str(t["text"]) for t in (tag_list if tag_list is not None else ()))
        return (base or cls()).extend(texts)

    # ---- files
    def content_hash(self) -> str:
        return hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()[:12]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary as JSON (``{version, hash, tokens}``) atomically."""
        payload = {"version": self.version, "hash": self.content_hash(), "tokens": self.tokens}
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TagVocabulary:
        """Read a vocabulary written by :meth:`save`.

        Raises:
            NotFoundError: the file does not exist.
            ConfigError: the file is not a vocabulary, or its hash does not match its tokens.
        """
        path = Path(path)
        if not path.exists():
            raise NotFoundError(f"tag vocabulary {path} does not exist")
        expected = (
            'expected a JSON object {"version": int, "hash": str, "tokens": ["<pad>", "tag a", ...]} '
            "whose token positions are the ids, as written by `tagllm tag apply`"
        )
        try:
            raw: Any = json.loads(path.read_text(encoding="utf-8"))
            tokens = raw["tokens"]
            if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
                raise TypeError("'tokens' is not a list of strings")
            vocab = cls(tokens, int(raw.get("version", 0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"tag vocabulary {path} is malformed ({exc}); {expected}") from exc
        if raw.get("hash") not in (None, vocab.content_hash()):
            raise ConfigError(f"tag vocabulary {path}: hash {raw.get('hash')!r} does not match its tokens")
        return vocab
