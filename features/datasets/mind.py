"""MIND (news.tsv, behaviors.tsv; tab-separated, no header) → canonical tables.

Mapping:

- notes = news articles: ``note_id`` = the news id (``N123``); ``category``; ``title``;
  ``body`` = abstract (``""`` when absent); extra column ``subcategory``; ``author_id`` = ``"mind"``
  (MIND has no publishers); ``image_captions`` = []; ``created_at`` = the article's first impression
  time, or :data:`WINDOW_START` (the start of the MIND-small train week) for articles never shown.
  The url and entity columns are ignored.
- users = every user of behaviors.tsv (also those whose impressions were all dropped, see below);
  ``created_at`` = their first impression time.
- interactions: each impression log ``"N1-1 N2-0"`` gives one ``impression`` row per shown article
  and, for ``-1`` entries, an extra ``click`` row at the same time (``dwell_seconds`` null; MIND has
  no dwell). Extra column ``impression_id``. The ``history`` column (clicks before the log window,
  without times) is ignored.
- Times like ``"11/11/2019 9:05:58 AM"`` are read as UTC.

Interactions on articles missing from news.tsv are dropped (in the shared subset the two files were
sampled independently and only ~284 impressed articles have text); the counts are in
``info["dropped_interactions_unknown_note"]`` and logged.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.datasets import Dataset
from features.datasets._common import file_info, read_csv, require_dir
from features.errors import ConfigError, DataSourceError
from features.schemas import validate_tables

__all__ = ["AUTHOR_ID", "WINDOW_START", "load", "parse_time"]

log = logging.getLogger(__name__)

AUTHOR_ID = "mind"
WINDOW_START = pd.Timestamp("2019-11-09T00:00:00Z")
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
NEWS = "news.tsv"
BEHAVIORS = "behaviors.tsv"
NEWS_COLUMNS = (
    "news_id",
    "category",
    "subcategory",
    "title",
    "abstract",
    "url",
    "title_entities",
    "abstract_entities",
)
BEHAVIOR_COLUMNS = ("impression_id", "user_id", "time", "history", "impressions")


def parse_time(values: pd.Series, *, where: str) -> pd.Series:
    """Parse MIND times (``"11/11/2019 9:05:58 AM"``) as UTC.

    Raises:
        DataSourceError: a value does not match the format (names ``where`` and the value).
    """
    out = pd.to_datetime(values, format=TIME_FORMAT, utc=True, errors="coerce")
    bad = out.isna()
    if bad.any():
        raise DataSourceError(
            f"{where}: {int(bad.sum())} unparsable times (first: {values[bad].iloc[0]!r}); "
            'expected the MIND form "11/11/2019 9:05:58 AM"'
        )
    return out


def load(path: str | None = None, **options: Any) -> Dataset:
    """Load a MIND folder (news.tsv, behaviors.tsv).

    Returns:
        A :class:`Dataset` with validated ``notes``, ``users`` and ``interactions``.

    Raises:
        ConfigError: any option (this adapter takes none).
        DataSourceError: missing folder/file, wrong column count, unparsable times or impressions.
    """
    if options:
        raise ConfigError(f"mind: unknown option(s) {', '.join(options)}; this source takes no options")
    started = time.perf_counter()
    folder = require_dir(path, "mind", (NEWS, BEHAVIORS))
    news = _read_tsv(folder / NEWS, NEWS_COLUMNS)
    behaviors = _read_tsv(folder / BEHAVIORS, BEHAVIOR_COLUMNS)
    behaviors["ts"] = parse_time(behaviors["time"], where=str(folder / BEHAVIORS))

    shown = _explode_impressions(behaviors, where=str(folder / BEHAVIORS))
    clicks = shown[shown["clicked"]]
    interactions, dropped = _known_interactions(shown, clicks, news)
    first_shown = interactions.groupby("note_id")["ts"].min()
    notes = _notes(news, first_shown)
    users = behaviors.groupby("user_id", as_index=False)["ts"].min().rename(columns={"ts": "created_at"})
    tables = validate_tables(
        {
            "notes": notes,
            "users": users,
            "interactions": interactions[
                ["user_id", "note_id", "ts", "event", "dwell_seconds", "impression_id"]
            ],
        }
    )
    info: dict[str, Any] = {
        "source": "mind",
        "path": str(folder.resolve()),
        "files": {name: file_info(folder / name) for name in (NEWS, BEHAVIORS)},
        "logs_without_impressions": int((behaviors["impressions"].str.strip() == "").sum()),
        "raw_impressions": len(shown),
        "raw_clicks": len(clicks),
        "dropped_interactions_unknown_note": len(dropped),
        "dropped_impressions_unknown_note": int((dropped["event"] == "impression").sum()),
        "dropped_clicks_unknown_note": int((dropped["event"] == "click").sum()),
        "unknown_note_ids": int(dropped["note_id"].nunique()),
        "users_without_interactions": int((~users["user_id"].isin(interactions["user_id"])).sum()),
        "notes_never_shown": int((~news["news_id"].isin(first_shown.index)).sum()),
        "ignored": ["history", "url", "title_entities", "abstract_entities"],
        "counts": {name: len(df) for name, df in tables.items()},
    }
    log.info(
        "mind: %d notes, %d users, %d interactions in %.2fs",
        len(tables["notes"]),
        len(tables["users"]),
        len(tables["interactions"]),
        time.perf_counter() - started,
    )
    return Dataset(tables=tables, info=info)


def _known_interactions(
    shown: pd.DataFrame, clicks: pd.DataFrame, news: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Impression and click rows on articles of news.tsv (sorted by ts, impression) and the dropped rest."""
    interactions = pd.concat(
        [shown.assign(event="impression"), clicks.assign(event="click")], ignore_index=True
    ).drop(columns="clicked")
    interactions["dwell_seconds"] = np.nan

    known = interactions["note_id"].isin(news["news_id"])
    dropped = interactions[~known]
    interactions = interactions[known].sort_values(["ts", "impression_id"], kind="stable")
    if len(dropped):
        log.info(
            "mind: dropped %d of %d interactions (%d impressions, %d clicks) on %d articles missing from %s",
            len(dropped),
            len(known),
            int((dropped["event"] == "impression").sum()),
            int((dropped["event"] == "click").sum()),
            dropped["note_id"].nunique(),
            NEWS,
        )
    return interactions, dropped


def _notes(news: pd.DataFrame, first_shown: pd.Series) -> pd.DataFrame:
    """One note per article, created when first shown (or at the window start)."""
    return pd.DataFrame(
        {
            "note_id": news["news_id"],
            "author_id": AUTHOR_ID,
            "category": news["category"],
            "title": news["title"],
            "body": news["abstract"],
            "image_captions": [[] for _ in range(len(news))],
            "created_at": news["news_id"].map(first_shown).fillna(WINDOW_START),
            "subcategory": news["subcategory"],
        }
    )


def _read_tsv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    what = f"MIND {path.name} ({len(columns)} tab-separated columns, no header: {', '.join(columns)})"
    return read_csv(
        path, columns=columns, what=what, header=False, sep="\t", dtype=str, keep_default_na=False
    )


def _explode_impressions(behaviors: pd.DataFrame, *, where: str) -> pd.DataFrame:
    """One row per shown article: impression_id, user_id, ts, note_id, clicked (bool)."""
    items = behaviors["impressions"].str.split().explode().dropna()
    parts = items.str.extract(r"^(?P<note_id>[^-\s]+)-(?P<label>[01])$")
    bad = parts["note_id"].isna()
    if bad.any():
        raise DataSourceError(
            f"{where}: {int(bad.sum())} malformed impression entries (first: {items[bad].iloc[0]!r}); "
            'expected "<news_id>-<0|1>" separated by spaces'
        )
    rows = behaviors.loc[items.index, ["impression_id", "user_id", "ts"]].reset_index(drop=True)
    rows["note_id"] = parts["note_id"].to_numpy()
    rows["clicked"] = (parts["label"] == "1").to_numpy()
    return rows
