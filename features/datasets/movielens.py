"""MovieLens ``ml-latest-small`` → canonical ``notes``, ``users`` and ``interactions``.

Mapping (choices documented here because MovieLens has no "notes"):

- notes = movies. ``note_id`` = ``"m<movieId>"``; ``title`` = the title without its trailing
  ``"(YYYY)"``; ``body`` is a *synthetic* one-line rendering ``"<title> (<year>). Genres: a, b."``
  (MovieLens has no text); ``category`` = the first genre as spelled in the file
  (``"(no genres listed)"`` → ``"unknown"``); ``image_captions`` = []; ``author_id`` =
  ``"movielens"``; ``created_at`` = the movie's first rating or tag (every movie of
  ml-latest-small has one; a movie without any gets :data:`SNAPSHOT`, the dataset's generation
  date, after all activity); ``reference_tags`` = the distinct user tags of the movie, lowercased and
  stripped, in order of first use ([] when none). Extra columns: ``genres`` (list), ``year`` (Int64).
- users = every rater (610), ``created_at`` = their first rating or tag.
- interactions = one row per rating: ``event`` = ``"like"`` when ``rating >= like_threshold``
  (default 4.0), else ``"click"`` (pass ``like_threshold=None`` for clicks only); ``ts`` = the
  rating time; ``dwell_seconds`` = null; extra column ``rating``. Tags are not interactions.
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
from features.errors import ConfigError
from features.schemas import validate_tables

__all__ = ["AUTHOR_ID", "SNAPSHOT", "load"]

log = logging.getLogger(__name__)

AUTHOR_ID = "movielens"
# ml-latest-small README: "generated on September 26, 2018" (after the last rating).
SNAPSHOT = pd.Timestamp("2018-09-26T00:00:00Z")
_FILES = ("movies.csv", "ratings.csv", "tags.csv")
_YEAR = r"\((\d{4})\)\s*$"


def load(path: str | None = None, *, like_threshold: float | None = 4.0, **options: Any) -> Dataset:
    """Load an ``ml-latest-small`` folder.

    Args:
        path: folder holding movies.csv, ratings.csv and tags.csv.
        like_threshold: ratings at or above it become ``like`` events, the others ``click``;
            ``None`` makes every rating a ``click``.

    Returns:
        A :class:`Dataset` with validated ``notes``, ``users`` and ``interactions``.

    Raises:
        ConfigError: unknown option or a non-numeric ``like_threshold``.
        DataSourceError: missing folder/file or missing columns.
    """
    if options:
        raise ConfigError(f"movielens: unknown option(s) {', '.join(options)}; expected like_threshold")
    if like_threshold is not None and not isinstance(like_threshold, (int, float)):
        raise ConfigError(f"movielens: like_threshold={like_threshold!r}; expected a number or None")
    started = time.perf_counter()
    folder = require_dir(path, "movielens", _FILES)
    movies, ratings, tags = _read(folder)
    activity = pd.concat(
        [ratings[["userId", "movieId", "timestamp"]], tags[["userId", "movieId", "timestamp"]]],
        ignore_index=True,
    )
    first_by_movie = activity.groupby("movieId")["timestamp"].min()
    first_by_user = activity.groupby("userId")["timestamp"].min()

    notes = _notes(movies, tags, first_by_movie)
    users = pd.DataFrame(
        {
            "user_id": ratings["userId"].drop_duplicates().sort_values().to_numpy(),
        }
    )
    users["created_at"] = pd.to_datetime(users["user_id"].map(first_by_user), unit="s", utc=True)
    interactions = _interactions(ratings, like_threshold)
    tables = validate_tables({"notes": notes, "users": users, "interactions": interactions})
    tables["notes"]["year"] = tables["notes"]["year"].astype("Int64")  # validate keeps extras as numpy
    info: dict[str, Any] = {
        "source": "movielens",
        "path": str(folder.resolve()),
        "files": {name: file_info(folder / name) for name in _FILES},
        "options": {"like_threshold": like_threshold},
        "body": "synthetic rendering of title, year and genres (MovieLens has no text)",
        "notes_without_activity": int((~movies["movieId"].isin(first_by_movie.index)).sum()),
        "tag_rows": len(tags),
        "counts": {name: len(df) for name, df in tables.items()},
    }
    log.info(
        "movielens: %d notes, %d users, %d interactions in %.2fs",
        len(tables["notes"]),
        len(tables["users"]),
        len(tables["interactions"]),
        time.perf_counter() - started,
    )
    return Dataset(tables=tables, info=info)


def _read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """movies.csv, ratings.csv and tags.csv, columns checked."""
    movies = read_csv(
        folder / "movies.csv",
        columns=("movieId", "title", "genres"),
        what="MovieLens movies (movieId,title,genres)",
        dtype={"title": str, "genres": str},
        keep_default_na=False,
    )
    ratings = read_csv(
        folder / "ratings.csv",
        columns=("userId", "movieId", "rating", "timestamp"),
        what="MovieLens ratings (userId,movieId,rating,timestamp)",
    )
    tags = read_csv(
        folder / "tags.csv",
        columns=("userId", "movieId", "tag", "timestamp"),
        what="MovieLens tags (userId,movieId,tag,timestamp)",
        dtype={"tag": str},
        keep_default_na=False,
    )
    return movies, ratings, tags


def _interactions(ratings: pd.DataFrame, like_threshold: float | None) -> pd.DataFrame:
    """One ``like`` (rating >= ``like_threshold``) or ``click`` row per rating."""
    if like_threshold is None:
        event = np.full(len(ratings), "click", dtype=object)
    else:
        event = np.where(ratings["rating"] >= like_threshold, "like", "click").astype(object)
    return pd.DataFrame(
        {
            "user_id": ratings["userId"],
            "note_id": "m" + ratings["movieId"].astype(str),
            "ts": pd.to_datetime(ratings["timestamp"], unit="s", utc=True),
            "event": event,
            "dwell_seconds": np.nan,
            "rating": ratings["rating"].astype("float64"),
        }
    )


def _notes(movies: pd.DataFrame, tags: pd.DataFrame, first_by_movie: pd.Series) -> pd.DataFrame:
    raw_title = movies["title"].str.strip()
    year = raw_title.str.extract(_YEAR, expand=False)
    title = raw_title.str.replace(_YEAR, "", regex=True).str.strip()
    title = title.where(title != "", raw_title)
    genres = movies["genres"].map(
        lambda g: [] if g.strip() in ("", "(no genres listed)") else [x.strip() for x in g.split("|")]
    )
    category = genres.map(lambda g: g[0] if g else "unknown")
    genre_text = genres.map(lambda g: ", ".join(g) if g else "unknown")
    body = title + np.where(year.notna(), " (" + year.fillna("") + ")", "") + ". Genres: " + genre_text + "."

    tag_text = tags["tag"].str.strip().str.lower()
    used = tags.assign(tag=tag_text)[tag_text != ""].sort_values("timestamp", kind="stable")
    used = used.drop_duplicates(["movieId", "tag"])
    by_movie = used.groupby("movieId", sort=False)["tag"].agg(list)
    reference_tags = movies["movieId"].map(by_movie)
    reference_tags = reference_tags.map(lambda v: v if isinstance(v, list) else [])

    created = pd.to_datetime(movies["movieId"].map(first_by_movie), unit="s", utc=True).fillna(SNAPSHOT)
    return pd.DataFrame(
        {
            "note_id": "m" + movies["movieId"].astype(str),
            "author_id": AUTHOR_ID,
            "category": category,
            "title": title,
            "body": body,
            "image_captions": [[] for _ in range(len(movies))],
            "created_at": created,
            "reference_tags": reference_tags,
            "genres": genres,
            "year": pd.to_numeric(year, errors="coerce").astype("Int64"),
        }
    )
