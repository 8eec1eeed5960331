"""KuaiRec captions → canonical ``notes`` (no users or interactions: the folder has no logs).

A note reads as the platform shows it: the cover text and the caption as published, the creator's
``#hashtags`` included. Nothing is removed from the running text, so names and other words that are
also one of the note's reference tags stay where the creator wrote them.

Mapping:

- ``note_id`` = ``"v<video_id>"``; ``author_id`` = ``"kuairec"`` (no creator ids in the files);
  ``image_captions`` = []; ``created_at`` = :data:`CREATED_AT` for every note (the files carry no
  times; it is the first day of KuaiRec's collection window).
- ``title`` = ``manual_cover_text`` (the text on the video cover; ``"UNKNOWN"`` → ``""``).
- ``body`` = ``caption`` as published, creator ``#hashtags`` included. Only a stray ``\\r`` is
  dropped and whitespace is tidied (runs of spaces, tabs, ideographic spaces and NBSPs become one
  space; the ends are stripped); title and body get the same tidy.
- ``reference_tags`` = the creator's ``topic_tag`` list ``"[a,b]"``: items stripped, empty ones
  dropped, duplicates dropped keeping order. For evaluation only: most of them are also written in
  the body as ``#tag``, so a tagger that copies hashtags scores well against them.
- ``category`` = ``first_level_category_name`` (``"UNKNOWN"`` → ``"unknown"``); extra columns
  ``second_level_category`` and ``third_level_category`` (same rule), and ``feat_ids`` (list[int])
  from item_categories.csv: KuaiRec's own coarse tag ids, which are *not* the category ids.

Option ``hashtags``: ``"keep"`` (default) keeps the hashtags in title and body; ``"strip"`` removes
the hashtag *tokens* only (see :func:`strip_hashtags`: ``#tag``, Weibo-style ``#tag#``, full-width
``＃``, and stray ``#``), never the same words where they occur in running text.

File quirk: four captions contain a bare carriage return; the file is read with ``\\n`` as the only
line terminator (the true row count is 7,476, the same as item_categories.csv; a reader that also
splits on ``\\r``, like Python's ``csv`` module, sees 7,480 rows, four of them broken).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from features.datasets import Dataset
from features.datasets._common import dedupe, file_info, find_file, read_csv, require_dir
from features.errors import ConfigError, DataSourceError
from features.schemas import validate_tables

__all__ = ["AUTHOR_ID", "CREATED_AT", "HASHTAG_MODES", "load", "parse_topic_tags", "strip_hashtags", "tidy"]

log = logging.getLogger(__name__)

AUTHOR_ID = "kuairec"
# KuaiRec's interactions were collected from 2020-07-05; the caption file itself has no times.
CREATED_AT = pd.Timestamp("2020-07-05T00:00:00Z")
CAPTIONS = "kuairec_caption_category.csv"
ITEM_CATEGORIES = "item_categories.csv"
HASHTAG_MODES = ("keep", "strip")
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
_SPACES = re.compile(r"[ \t\u3000\xa0]+")


def parse_topic_tags(text: str) -> list[str]:
    """``"[a, b,,a]"`` → ``["a", "b"]`` (strip, drop empty, dedupe keeping order)."""
    inner = text.strip()
    if inner.startswith("[") and inner.endswith("]"):
        inner = inner[1:-1]
    return dedupe(inner.split(","))


def tidy(text: str) -> str:
    """The only change made to published text: drop ``\\r``, one space per whitespace run, strip.

    Example:
        >>> tidy(" 好吃\\r  #美食\\u3000 ")
        '好吃 #美食'
    """
    return _SPACES.sub(" ", text.replace("\r", "")).strip()


def strip_hashtags(text: str, tags: list[str]) -> tuple[str, int]:
    """Remove the hashtag tokens from ``text``; words in running text are never touched.

    A hashtag token is ``#`` (or full-width ``＃``) followed by a run of word characters, up to a
    space, NBSP, another ``#``, punctuation or the end; Weibo-style ``#tag#`` loses its closing
    ``#`` too. The note's own ``tags`` (topic_tag) settle where a hashtag ends when the text alone
    cannot: ``我为#新神魔大陆#拍摄了视频`` loses ``#新神魔大陆#`` and keeps ``拍摄了视频``. Order:
    the own tags' hashtags (longest first, so ``#ab`` goes before ``#a``; a closing ``#`` is
    swallowed unless it opens another own tag), then any other ``#word`` run, then a stray ``#``.
    A hashtag glued to the prose that follows it (``#美食今天…``) cannot be told apart from a long
    hashtag and is removed whole.

    Args:
        text: published text (title or caption).
        tags: the note's own reference tags (may be empty).

    Returns:
        The text without hashtag tokens (tidied, see :func:`tidy`) and the number of hashtag tokens
        removed.
    """
    if not text:
        return "", 0
    own = sorted(tags, key=len, reverse=True)
    removed = 0
    if own:
        text, removed = _remove_own_hashtags(text, own)
    text, n_other = _ANY_HASHTAG.subn(" ", text)
    text = _LONE_HASH.sub(" ", text)
    return tidy(text), removed + n_other


def _own_tag_at(text: str, start: int, own: list[str]) -> int:
    """End of the own tag (longest first) written at ``start`` as a whole word, or -1."""
    for tag in own:
        end = start + len(tag)
        if text.startswith(tag, start) and not (end < len(text) and _WORD_CHAR.match(text, end)):
            return end
    return -1


def _remove_own_hashtags(text: str, own: list[str]) -> tuple[str, int]:
    pieces: list[str] = []
    pos = 0
    removed = 0
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
        removed += 1
    pieces.append(text[pos:])
    return "".join(pieces), removed


def load(path: str | None = None, *, hashtags: str = "keep", **options: Any) -> Dataset:
    """Load a KuaiRec captions folder.

    Args:
        path: folder holding kuairec_caption_category.csv (item_categories.csv optional).
        hashtags: ``"keep"`` (default: title and body as published) or ``"strip"`` (remove the
            hashtag tokens, see :func:`strip_hashtags`; the words of the running text stay).

    Returns:
        A :class:`Dataset` with a validated ``notes`` table.

    Raises:
        ConfigError: unknown option or bad ``hashtags``.
        DataSourceError: missing folder/file, missing columns, or duplicate/invalid video ids.
    """
    if options:
        raise ConfigError(f"kuairec: unknown option(s) {', '.join(options)}; expected hashtags")
    if hashtags not in HASHTAG_MODES:
        raise ConfigError(f"kuairec: hashtags={hashtags!r}; expected one of {', '.join(HASHTAG_MODES)}")
    started = time.perf_counter()
    folder = require_dir(path, "kuairec", (CAPTIONS,))
    raw = _read_captions(folder)
    ref_tags = raw["topic_tag"].map(parse_topic_tags)
    cover = raw["manual_cover_text"].where(raw["manual_cover_text"] != "UNKNOWN", "")
    texts, removed = _texts(cover, raw["caption"], ref_tags, hashtags)
    notes = pd.DataFrame(
        {
            "note_id": "v" + raw["video_id"],
            "author_id": AUTHOR_ID,
            "category": _category(raw["first_level_category_name"]),
            "title": texts["title"],
            "body": texts["body"],
            "image_captions": [[] for _ in range(len(raw))],
            "created_at": CREATED_AT,
            "reference_tags": ref_tags,
            "second_level_category": _category(raw["second_level_category_name"]),
            "third_level_category": _category(raw["third_level_category_name"]),
        }
    )
    files = {CAPTIONS: file_info(folder / CAPTIONS)}
    _add_feat_ids(notes, raw, folder, files)
    tables = validate_tables({"notes": notes})
    info: dict[str, Any] = {
        "source": "kuairec",
        "path": str(folder.resolve()),
        "files": files,
        "options": {"hashtags": hashtags},
        "created_at": "fixed: " + CREATED_AT.isoformat(),
        "notes_with_reference_tags": int((ref_tags.str.len() > 0).sum()),
        "notes_with_hashtags_in_text": int(
            (raw["caption"].str.contains(_HASH) | cover.str.contains(_HASH)).sum()
        ),
        "hashtag_tokens_removed": removed,
        "counts": {"notes": len(tables["notes"])},
    }
    log.info(
        "kuairec: %d notes (hashtags=%s) in %.2fs",
        len(tables["notes"]),
        hashtags,
        time.perf_counter() - started,
    )
    return Dataset(tables=tables, info=info)


def _read_captions(folder: Path) -> pd.DataFrame:
    """The captions file as strings; video ids must be unique integers."""
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
    return raw


def _texts(
    cover: pd.Series, caption: pd.Series, ref_tags: pd.Series, hashtags: str
) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Title and body texts (hashtags kept or stripped) and the hashtag tokens removed from each."""
    removed = {"title": 0, "body": 0}
    texts: dict[str, list[str]] = {}
    for field, column in (("title", cover), ("body", caption)):
        if hashtags == "keep":
            texts[field] = [tidy(t) for t in column]
            continue
        cleaned = [strip_hashtags(t, tags) for t, tags in zip(column, ref_tags, strict=True)]
        texts[field] = [t for t, _ in cleaned]
        removed[field] = sum(n for _, n in cleaned)
    return texts, removed


def _add_feat_ids(notes: pd.DataFrame, raw: pd.DataFrame, folder: Path, files: dict[str, Any]) -> None:
    """Add ``feat_ids`` from the optional item_categories.csv (and record the file in ``files``)."""
    feats_path = find_file(folder, (ITEM_CATEGORIES,), required=False)
    if feats_path is not None:
        feats = read_csv(feats_path, columns=("video_id", "feat"), what="video_id,feat", dtype=str)
        feat_ids = feats.set_index("video_id")["feat"].map(
            lambda s: [int(x) for x in s.strip("[] ").split(",") if x.strip()]
        )
        notes["feat_ids"] = raw["video_id"].map(feat_ids).map(lambda v: v if isinstance(v, list) else [])
        files[ITEM_CATEGORIES] = file_info(feats_path)


def _category(names: pd.Series) -> pd.Series:
    cleaned = names.str.strip()
    return cleaned.where(~cleaned.isin(("", "UNKNOWN")), "unknown")
