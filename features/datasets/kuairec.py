"""KuaiRec captions → canonical ``notes`` (no users or interactions: the folder has no logs).

Mapping:

- ``note_id`` = ``"v<video_id>"``; ``author_id`` = ``"kuairec"`` (no creator ids in the files);
  ``image_captions`` = []; ``created_at`` = :data:`CREATED_AT` for every note (the files carry no
  times; it is the first day of KuaiRec's collection window).
- ``reference_tags`` = the creator's ``topic_tag`` list ``"[a,b]"``: items stripped, empty ones
  dropped, duplicates dropped keeping order.
- ``title`` = ``manual_cover_text`` (the text on the video cover; ``"UNKNOWN"`` → ``""``), cleaned
  like the body.
- ``body`` = ``caption`` with every hashtag removed, so that reference tags cannot be copied from
  the text (see :func:`strip_hashtags`). Hashtags come as ``#tag`` (ended by a space, NBSP, another
  ``#``, punctuation or the end), Weibo-style ``#tag#``, and with the full-width ``＃``.
  With ``plain_tags="remove"`` (default) a note's own reference tags are also removed where they
  occur as plain words (case-insensitive), so **no body or title contains one of its own reference
  tags as a substring**; ``plain_tags="keep"`` keeps those words (and drops that guarantee).
- ``category`` = ``first_level_category_name`` (``"UNKNOWN"`` → ``"unknown"``); extra columns
  ``second_level_category`` and ``third_level_category`` (same rule), and ``feat_ids`` (list[int])
  from item_categories.csv: KuaiRec's own coarse tag ids, which are *not* the category ids.

File quirk: four captions contain a bare carriage return; the file is read with ``\\n`` as the only
line terminator (the true row count is 7,476, the same as item_categories.csv; a reader that also
splits on ``\\r``, like Python's ``csv`` module, sees 7,480 rows, four of them broken).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pandas as pd

from features.datasets import Dataset
from features.datasets._common import dedupe, file_info, find_file, read_csv, require_dir
from features.errors import ConfigError, DataSourceError
from features.schemas import validate_tables

__all__ = ["AUTHOR_ID", "CREATED_AT", "load", "parse_topic_tags", "strip_hashtags"]

log = logging.getLogger(__name__)

AUTHOR_ID = "kuairec"
# KuaiRec's interactions were collected from 2020-07-05; the caption file itself has no times.
CREATED_AT = pd.Timestamp("2020-07-05T00:00:00Z")
CAPTIONS = "kuairec_caption_category.csv"
ITEM_CATEGORIES = "item_categories.csv"
_COLUMNS = (
    "video_id",
    "manual_cover_text",
    "caption",
    "topic_tag",
    "first_level_category_name",
    "second_level_category_name",
    "third_level_category_name",
)
_HASH = "[#＃]"
_WORD = r"[\w·]"  # tag characters: letters/digits/CJK/underscore, and "·" (seen inside names)
_ANY_HASHTAG = re.compile(rf"{_HASH}{_WORD}+")
_LONE_HASH = re.compile(_HASH)
_WORD_CHAR = re.compile(_WORD)
_SPACES = re.compile(r"[ \t\u3000\xa0]{2,}")
_PLAIN_TAGS = ("remove", "keep")


def parse_topic_tags(text: str) -> list[str]:
    """``"[a, b,,a]"`` → ``["a", "b"]`` (strip, drop empty, dedupe keeping order)."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return dedupe(inner.split(","))


def strip_hashtags(text: str, tags: list[str], *, plain_tags: str = "remove") -> tuple[str, int]:
    """Remove every hashtag from ``text``; with ``plain_tags="remove"`` also plain ``tags``.

    Order matters: the note's own tags are removed first (longest first, so ``#ab`` goes before
    ``#a``; a closing ``#`` is swallowed unless it opens another own tag), then any other
    ``#word`` run, then stray ``#``. A hashtag glued to the prose that follows it
    (``#美食今天…``) cannot be told apart from a long hashtag and is removed whole.

    Returns:
        The cleaned text (whitespace runs collapsed, stripped) and the number of plain
        occurrences of own tags removed.

    Raises:
        ConfigError: ``plain_tags`` is not ``"remove"`` or ``"keep"``.
    """
    if plain_tags not in _PLAIN_TAGS:
        raise ConfigError(f"plain_tags={plain_tags!r}; expected one of {', '.join(_PLAIN_TAGS)}")
    if not text:
        return "", 0
    own = sorted(tags, key=len, reverse=True)
    if own:
        text = _remove_own_hashtags(text, own)
    text = _ANY_HASHTAG.sub(" ", text)
    text = _LONE_HASH.sub(" ", text)
    removed = 0
    if plain_tags == "remove":
        folded = text.casefold()
        present = [t for t in own if t.casefold() in folded]
        if present:  # compiled only for the few notes that need it (compiling per note is slow)
            pattern = "|".join(re.escape(t) for t in present)
            text, removed = re.subn(pattern, " ", text, flags=re.IGNORECASE)
    return _SPACES.sub(" ", text).strip(), removed


def _own_tag_at(text: str, start: int, own: list[str]) -> int:
    """End of the own tag (longest first) written at ``start`` as a whole word, or -1."""
    for tag in own:
        end = start + len(tag)
        if text.startswith(tag, start) and not (end < len(text) and _WORD_CHAR.match(text, end)):
            return end
    return -1


def _remove_own_hashtags(text: str, own: list[str]) -> str:
    pieces: list[str] = []
    pos = 0
    for m in _LONE_HASH.finditer(text):
        i = m.start()
        if i < pos:
            continue  # a closing "#" already swallowed
        end = _own_tag_at(text, i + 1, own)
        if end < 0:
            continue
        if end < len(text) and text[end] in "#＃" and _own_tag_at(text, end + 1, own) < 0:
            end += 1  # Weibo-style closing "#"
        pieces.append(text[pos:i])
        pieces.append(" ")
        pos = end
    pieces.append(text[pos:])
    return "".join(pieces)


def load(path: str | None = None, *, plain_tags: str = "remove", **options: Any) -> Dataset:
    """Load a KuaiRec captions folder.

    Args:
        path: folder holding kuairec_caption_category.csv (item_categories.csv optional).
        plain_tags: ``"remove"`` (default) or ``"keep"`` own reference tags that appear in the
            caption as plain words (see the module docstring).

    Returns:
        A :class:`Dataset` with a validated ``notes`` table.

    Raises:
        ConfigError: unknown option or bad ``plain_tags``.
        DataSourceError: missing folder/file, missing columns, or duplicate/invalid video ids.
    """
    if options:
        raise ConfigError(f"kuairec: unknown option(s) {', '.join(options)}; expected plain_tags")
    if plain_tags not in _PLAIN_TAGS:
        raise ConfigError(f"kuairec: plain_tags={plain_tags!r}; expected one of {', '.join(_PLAIN_TAGS)}")
    started = time.perf_counter()
    folder = require_dir(path, "kuairec", (CAPTIONS,))
    raw = read_csv(
        folder / CAPTIONS,
        columns=_COLUMNS,
        what=f"KuaiRec captions with columns {', '.join(_COLUMNS)}",
        dtype=str,
        keep_default_na=False,
        lineterminator="\n",
    )
    bad_id = ~raw["video_id"].str.fullmatch(r"\d+") | raw["video_id"].duplicated(keep=False)
    if bad_id.any():
        raise DataSourceError(
            f"{str(folder / CAPTIONS)!r}: {int(bad_id.sum())} rows have a missing, non-numeric or "
            f"duplicate video_id (first: {raw.loc[bad_id, 'video_id'].head(3).tolist()}); expected unique integers"
        )

    ref_tags = raw["topic_tag"].map(parse_topic_tags)
    body_and_count = [
        strip_hashtags(c, t, plain_tags=plain_tags)
        for c, t in zip(raw["caption"].str.replace("\r", ""), ref_tags, strict=True)
    ]
    cover = raw["manual_cover_text"].where(raw["manual_cover_text"] != "UNKNOWN", "")
    title_and_count = [
        strip_hashtags(c, t, plain_tags=plain_tags) for c, t in zip(cover, ref_tags, strict=True)
    ]
    notes = pd.DataFrame(
        {
            "note_id": "v" + raw["video_id"],
            "author_id": AUTHOR_ID,
            "category": _category(raw["first_level_category_name"]),
            "title": [t for t, _ in title_and_count],
            "body": [b for b, _ in body_and_count],
            "image_captions": [[] for _ in range(len(raw))],
            "created_at": CREATED_AT,
            "reference_tags": ref_tags,
            "second_level_category": _category(raw["second_level_category_name"]),
            "third_level_category": _category(raw["third_level_category_name"]),
        }
    )
    files = {CAPTIONS: file_info(folder / CAPTIONS)}
    feats_path = find_file(folder, (ITEM_CATEGORIES,), required=False)
    if feats_path is not None:
        feats = read_csv(feats_path, columns=("video_id", "feat"), what="video_id,feat", dtype=str)
        feat_ids = feats.set_index("video_id")["feat"].map(
            lambda s: [int(x) for x in s.strip("[] ").split(",") if x.strip()]
        )
        notes["feat_ids"] = raw["video_id"].map(feat_ids).map(lambda v: v if isinstance(v, list) else [])
        files[ITEM_CATEGORIES] = file_info(feats_path)
    tables = validate_tables({"notes": notes})
    info: dict[str, Any] = {
        "source": "kuairec",
        "path": str(folder.resolve()),
        "files": files,
        "options": {"plain_tags": plain_tags},
        "created_at": "fixed: " + CREATED_AT.isoformat(),
        "notes_with_reference_tags": int((ref_tags.str.len() > 0).sum()),
        "plain_tag_occurrences_removed": {
            "body": sum(n for _, n in body_and_count),
            "title": sum(n for _, n in title_and_count),
        },
        "counts": {"notes": len(tables["notes"])},
    }
    log.info("kuairec: %d notes in %.2fs", len(tables["notes"]), time.perf_counter() - started)
    return Dataset(tables=tables, info=info)


def _category(names: pd.Series) -> pd.Series:
    cleaned = names.str.strip()
    return cleaned.where(~cleaned.isin(("", "UNKNOWN")), "unknown")
