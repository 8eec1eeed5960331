"""Feature tables from canonical tables and tags: what the Feast feature views serve.

Three tables, each keyed by an entity id plus ``event_timestamp`` (the time from which the row is
true) so that point-in-time joins can pick the row valid at a label's timestamp:

- ``note_tags`` (note_id): tag texts, tag ids, dimensions, confidences, tagger version. Tags are a
  function of the note's content, which exists from ``created_at`` on, so the row is valid from the
  note's creation (``generated_at`` is kept as Feast's ``created`` column: a re-tagging with the same
  event time wins by creation time).
- ``note_stats`` (note_id): cumulative impressions, clicks, engagements and CTR at the end of every
  day the note had events, the note's age at that time and its cold-start flag.
- ``user_interests`` (user_id): the user's top tags and dimensions with time-decayed weights, one
  row at the end of every day the user engaged; weights sum event weight x tag confidence x
  ``exp(-age / tau)`` over the user's engagements up to that time.

Tag ids come from the run's tag vocabulary (``RUN_DIR/tag_vocab.json``, :class:`features.vocab.TagVocabulary`)
when the tagger wrote one, else from a sorted vocabulary of all tag texts (0 = padding, 1..N = texts
in sorted order).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.errors import ConfigError, NotFoundError, SchemaError
from features.io import RunDir
from features.vocab import TagVocabulary

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "VIEW_FEATURES",
    "VIEW_JOIN_KEY",
    "FeatureConfig",
    "FeatureTables",
    "compute_feature_tables",
    "load_tags",
    "note_stats_table",
    "note_tags_table",
    "user_interests_table",
]

log = logging.getLogger(__name__)

# Feature names per view, in declaration order (feature_repo/definitions.py; a test checks they agree).
VIEW_FEATURES: Mapping[str, tuple[str, ...]] = {
    "note_tags": ("tag_texts", "tag_ids", "tag_dimensions", "tag_confidences", "tagger_version", "n_tags"),
    "note_stats": (
        "impressions",
        "clicks",
        "engagements",
        "ctr",
        "age_days",
        "created_at_s",
        "is_cold_start",
    ),
    "user_interests": (
        "top_tags",
        "top_tag_ids",
        "top_tag_weights",
        "top_dimensions",
        "top_dimension_weights",
        "n_engagements",
    ),
}
VIEW_JOIN_KEY: Mapping[str, str] = {
    "note_tags": "note_id",
    "note_stats": "note_id",
    "user_interests": "user_id",
}

# Impressions carry no interest signal; stronger actions weigh more.
DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = {
    "impression": 0.0,
    "click": 1.0,
    "like": 2.0,
    "collect": 3.0,
    "comment": 3.0,
    "share": 4.0,
}

ENGAGEMENTS = ("click", "like", "collect", "comment", "share")


@dataclass(frozen=True)
class FeatureConfig:
    """How feature tables are computed.

    Args:
        half_life_days: interest weights halve every this many days.
        top_k_tags: tags kept per user profile.
        top_k_dimensions: dimensions kept per user profile.
        event_weights: weight per interaction event (missing events weigh 0).
    """

    half_life_days: float = 14.0
    top_k_tags: int = 20
    top_k_dimensions: int = 10
    event_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))

    def __post_init__(self) -> None:
        if not self.half_life_days > 0:
            raise ConfigError(f"half_life_days: got {self.half_life_days!r}; expected a number > 0")
        for name in ("top_k_tags", "top_k_dimensions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)!r}; expected an integer >= 1")
        bad = {k: v for k, v in self.event_weights.items() if not (isinstance(v, int | float) and v >= 0)}
        if bad:
            raise ConfigError(f"event_weights: got {bad!r}; expected numbers >= 0 per event")


@dataclass(frozen=True)
class FeatureTables:
    """The three feature tables plus the vocabulary they used."""

    note_tags: pd.DataFrame
    note_stats: pd.DataFrame
    user_interests: pd.DataFrame
    vocab: TagVocabulary
    tags_table: str
    figures: dict[str, Any]

    def as_dict(self) -> dict[str, pd.DataFrame]:
        return {
            "note_tags": self.note_tags,
            "note_stats": self.note_stats,
            "user_interests": self.user_interests,
        }


def load_tags(run: RunDir) -> tuple[pd.DataFrame, str]:
    """The run's tags: ``tables/tags.parquet`` (student) when present, else ``teacher_tags``.

    With several taggers for one note the most recently generated row wins.

    Raises:
        NotFoundError: neither table exists (naming both and the command that writes them).
    """
    for name in ("tags", "teacher_tags"):
        if run.has_table(name):
            df = run.read_table(name, check=False)
            from features.schemas import validate

            df = validate("tags", df.drop_duplicates(["note_id", "tagger"], keep="last"))
            df = df.sort_values("generated_at", kind="stable").drop_duplicates("note_id", keep="last")
            return df.reset_index(drop=True), name
    raise NotFoundError(
        f"no tags in {run.tables_dir}: expected tags.parquet (`tagllm tag apply`) or "
        "teacher_tags.parquet (`tagllm tag teach`)"
    )


def note_tags_table(notes: pd.DataFrame, tags: pd.DataFrame, vocab: TagVocabulary) -> pd.DataFrame:
    """One row per tagged note; list columns aligned position by position."""
    created = notes.set_index("note_id")["created_at"]
    unknown = ~tags["note_id"].isin(created.index)
    if unknown.any():
        raise SchemaError(
            "tags",
            "note_id",
            f"references unknown notes ({int(unknown.sum())} rows)",
            expected="ids present in notes.note_id",
            rows=np.flatnonzero(unknown.to_numpy()).tolist(),
            values=tags.loc[unknown, "note_id"].head(5).tolist(),
        )
    texts = [[t["text"] for t in ts] for ts in tags["tags"]]
    return pd.DataFrame(
        {
            "note_id": tags["note_id"].to_numpy(),
            "event_timestamp": created.loc[tags["note_id"]].to_numpy(),
            "created": tags["generated_at"].to_numpy(),
            "tag_texts": texts,
            "tag_ids": [vocab.ids(t) for t in texts],
            "tag_dimensions": [[t["dimension"] for t in ts] for ts in tags["tags"]],
            "tag_confidences": [[float(t["confidence"]) for t in ts] for ts in tags["tags"]],
            "tagger_version": tags["tagger_version"].astype(str).to_numpy(),
            "n_tags": np.array([len(t) for t in texts], dtype=np.int64),
        }
    )


def _day_end(ts: pd.Series) -> pd.Series:
    return ts.dt.floor("D") + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)


def note_stats_table(
    notes: pd.DataFrame, interactions: pd.DataFrame, cold_start_cutoff: pd.Timestamp | None
) -> pd.DataFrame:
    """Cumulative per-note counts at the end of each day with events, plus one row at creation."""
    ev = interactions[["note_id", "ts", "event"]].copy()
    ev["day_end"] = _day_end(ev["ts"])
    ev["impressions"] = (ev["event"] == "impression").astype(np.int64)
    ev["clicks"] = (ev["event"] == "click").astype(np.int64)
    ev["engagements"] = ev["event"].isin(ENGAGEMENTS).astype(np.int64)
    daily = ev.groupby(["note_id", "day_end"], sort=True)[["impressions", "clicks", "engagements"]].sum()
    daily = daily.groupby(level="note_id").cumsum().reset_index()
    daily = daily.rename(columns={"day_end": "event_timestamp"})
    # A row at creation time so a fresh note has stats (zeros) before its first event.
    born = pd.DataFrame(
        {
            "note_id": notes["note_id"].to_numpy(),
            "event_timestamp": notes["created_at"].to_numpy(),
            "impressions": 0,
            "clicks": 0,
            "engagements": 0,
        }
    )
    out = pd.concat([born, daily], ignore_index=True)
    created = notes.set_index("note_id")["created_at"]
    note_created = pd.Series(created.loc[out["note_id"]].to_numpy(), index=out.index)
    # Interactions logged before a note's creation would be bad data; keep the row valid from creation.
    out["event_timestamp"] = out["event_timestamp"].where(
        out["event_timestamp"] >= note_created, note_created
    )
    out["ctr"] = np.where(out["impressions"] > 0, out["clicks"] / out["impressions"].clip(lower=1), 0.0)
    out["age_days"] = (out["event_timestamp"] - note_created).dt.total_seconds() / 86400.0
    out["created_at_s"] = (note_created.astype("datetime64[us, UTC]").astype(np.int64) // 1_000_000).astype(
        np.int64
    )
    out["is_cold_start"] = (
        (note_created >= cold_start_cutoff).to_numpy()
        if cold_start_cutoff is not None
        else np.zeros(len(out), dtype=bool)
    )
    out = out.sort_values(["note_id", "event_timestamp"], kind="stable")
    out = out.drop_duplicates(["note_id", "event_timestamp"], keep="last").reset_index(drop=True)
    for c in ("impressions", "clicks", "engagements"):
        out[c] = out[c].astype(np.int64)
    out["event_timestamp"] = out["event_timestamp"].astype("datetime64[us, UTC]")
    return out[["note_id", "event_timestamp", *VIEW_FEATURES["note_stats"]]]


def _top(scores: Mapping[str, float], k: int) -> tuple[list[str], list[float]]:
    items = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    return [k_ for k_, _ in items], [round(float(v), 6) for _, v in items]


def user_interests_table(
    interactions: pd.DataFrame, note_tags: pd.DataFrame, vocab: TagVocabulary, config: FeatureConfig
) -> pd.DataFrame:
    """Time-decayed tag/dimension profiles, one row per user per day with engagements.

    The profile at time T is ``sum_e w(event_e) * confidence * exp(-(T - ts_e) / tau)`` over the
    user's events up to T, with ``tau = half_life / ln 2``; rolled forward day by day, so the whole
    history costs one pass.
    """
    weights = {k: float(v) for k, v in config.event_weights.items()}
    ev = interactions.loc[interactions["event"].isin([e for e, w in weights.items() if w > 0])]
    ev = ev[["user_id", "note_id", "ts", "event"]].merge(
        note_tags[["note_id", "tag_texts", "tag_dimensions", "tag_confidences"]], on="note_id", how="inner"
    )
    columns = [
        "user_id",
        "event_timestamp",
        "top_tags",
        "top_tag_ids",
        "top_tag_weights",
        "top_dimensions",
        "top_dimension_weights",
        "n_engagements",
    ]
    if ev.empty:
        return pd.DataFrame({c: [] for c in columns}).astype(
            {"event_timestamp": "datetime64[us, UTC]", "n_engagements": np.int64}
        )
    tau_s = config.half_life_days * 86400.0 / math.log(2)
    ev = ev.assign(
        day_end=_day_end(ev["ts"]),
        w=ev["event"].map(weights).astype(np.float64),
        t_s=ev["ts"].astype("datetime64[us, UTC]").astype(np.int64) / 1e6,
    ).sort_values(["user_id", "ts"], kind="stable")
    users = ev["user_id"].to_numpy()
    days = (ev["day_end"].astype("datetime64[us, UTC]").astype(np.int64) / 1e6).to_numpy()
    w_arr, t_arr = ev["w"].to_numpy(), ev["t_s"].to_numpy()
    texts_arr, dims_arr = ev["tag_texts"].to_numpy(), ev["tag_dimensions"].to_numpy()
    confs_arr = ev["tag_confidences"].to_numpy()
    day_ts = ev["day_end"].tolist()
    # Boundaries of (user, day) groups in the sorted arrays.
    change = np.flatnonzero((users[1:] != users[:-1]) | (days[1:] != days[:-1])) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(ev)]])
    rows: list[tuple[Any, ...]] = []
    tag_score: dict[str, float] = defaultdict(float)
    dim_score: dict[str, float] = defaultdict(float)
    last_t: float | None = None
    current_user: Any = None
    n = 0
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if users[a] != current_user:
            current_user, last_t, n = users[a], None, 0
            tag_score, dim_score = defaultdict(float), defaultdict(float)
        t_end = float(days[a])
        if last_t is not None:
            decay = math.exp(-(t_end - last_t) / tau_s)
            for dct in (tag_score, dim_score):
                for key in dct:
                    dct[key] *= decay
        for i in range(a, b):
            f = w_arr[i] * math.exp(-(t_end - t_arr[i]) / tau_s)
            for text, dim, conf in zip(texts_arr[i], dims_arr[i], confs_arr[i], strict=True):
                tag_score[text] += f * conf
                dim_score[dim] += f * conf
        n += b - a
        last_t = t_end
        tags, tag_w = _top(tag_score, config.top_k_tags)
        dims_, dim_w = _top(dim_score, config.top_k_dimensions)
        rows.append((current_user, day_ts[a], tags, vocab.ids(tags), tag_w, dims_, dim_w, n))
    out = pd.DataFrame(rows, columns=columns)
    out["event_timestamp"] = out["event_timestamp"].astype("datetime64[us, UTC]")
    out["n_engagements"] = out["n_engagements"].astype(np.int64)
    return out


def compute_feature_tables(run_dir: str | Path, config: FeatureConfig | None = None) -> FeatureTables:
    """Read a run's canonical tables and tags and compute the three feature tables.

    Raises:
        NotFoundError: the run, a table, or its tags are missing.
        SchemaError: a table is malformed (naming the table and column).
    """
    config = config or FeatureConfig()
    run = RunDir(run_dir).require()
    notes = run.read_table("notes")
    interactions = run.read_table("interactions")
    tags, tags_table = load_tags(run)
    vocab_path = run.tag_vocab
    if vocab_path.exists():
        vocab, vocab_source = TagVocabulary.load(vocab_path), str(vocab_path)
    else:
        vocab = TagVocabulary.sorted_of(t["text"] for ts in tags["tags"] for t in ts)
        vocab_source = "built"
    cutoff_raw = run.manifest().get("cold_start_cutoff")
    cutoff = pd.Timestamp(cutoff_raw).tz_convert("UTC") if cutoff_raw else None
    nt = note_tags_table(notes, tags, vocab)
    ns = note_stats_table(notes, interactions, cutoff)
    ui = user_interests_table(interactions, nt, vocab, config)
    oov = int(sum(int(np.sum(np.asarray(ids) == 0)) for ids in nt["tag_ids"]))
    if oov:
        log.warning("%d tag occurrences are not in %s: they get id 0 (padding)", oov, vocab_source)
    figures = {
        "tags_table": tags_table,
        "vocab_source": vocab_source,
        "vocab_size": len(vocab),
        "tags_out_of_vocab": oov,
        "rows": {"note_tags": len(nt), "note_stats": len(ns), "user_interests": len(ui)},
        "notes_without_tags": int((~notes["note_id"].isin(nt["note_id"])).sum()),
    }
    return FeatureTables(nt, ns, ui, vocab, tags_table, figures)
