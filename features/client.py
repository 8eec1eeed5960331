"""``FeatureClient``: the only code that calls Feast at runtime.

Three paths:

- :meth:`FeatureClient.online` — batched online reads that go straight to the online store (one
  SQLite ``SELECT ... IN`` or one Redis pipeline of ``HMGET``), decoding Feast's stored ``ValueProto``
  bytes (:mod:`features.online_read`). Same answers as Feast (a test checks it), without its generic
  per-request machinery.
- :meth:`FeatureClient.online_feast` — ``FeatureStore.get_online_features`` (the reference path).
- :meth:`FeatureClient.training_set` — point-in-time joins through Feast's duckdb offline store:
  for each entity row the latest feature row with ``event_timestamp <= label time`` and within the
  view's TTL; rows without one come back with nulls, never dropped.

Example::

    client = FeatureClient("runs/demo")                      # SQLite; imports feast (seconds)
    tags = client.note_tags(["n000001", "n000002"])          # list[NoteTags | None]
    rows = client.online("note_stats", ["n000001"])          # OnlineRows, columns by feature
    train = client.training_set(labels, service="ranking")   # pandas, one row per label row
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.compute import VIEW_FEATURES, VIEW_JOIN_KEY
from features.errors import ConfigError, NotFoundError
from features.feast_repo import (
    FEATURE_VIEWS,
    FeastSettings,
    OnlineStoreKind,
    _feast_env,
    note_tags_frame,
    open_store,
    push_note_tags,
)
from features.io import RunDir
from features.online_read import OnlineStoreReader
from features.vocab import TagVocabulary

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = ["FeatureClient", "NoteTags", "OnlineRows", "UserInterests"]


@dataclass(frozen=True)
class OnlineRows:
    """Online features of one view for a batch of entities.

    Attributes:
        view: the feature view.
        entity_ids: the requested ids, in request order.
        found: per id, whether the online store has a row for it.
        columns: feature name -> values aligned with ``entity_ids`` (``None`` where not found).
    """

    view: str
    entity_ids: list[str]
    found: list[bool]
    columns: dict[str, list[Any]]

    def row(self, i: int) -> dict[str, Any] | None:
        return {k: v[i] for k, v in self.columns.items()} if self.found[i] else None


@dataclass(frozen=True)
class NoteTags:
    """Tags of one note, aligned position by position (ids: 0 = padding / unknown)."""

    note_id: str
    tag_texts: list[str]
    tag_ids: list[int]
    tag_dimensions: list[str]
    tag_confidences: list[float]
    tagger_version: str


@dataclass(frozen=True)
class UserInterests:
    """A user's top tags and dimensions with time-decayed weights (descending)."""

    user_id: str
    top_tags: list[str]
    top_tag_ids: list[int]
    top_tag_weights: list[float]
    top_dimensions: list[str]
    top_dimension_weights: list[float]
    n_engagements: int


class FeatureClient:
    """Typed access to TagLLM features of one run.

    Args:
        run_dir: the run directory (after ``tagllm features apply`` + ``materialize``).
        online: ``sqlite`` (default) or ``redis``.
        redis: ``HOST:PORT`` with ``online="redis"``.

    Raises:
        ConfigError: bad ``online``/``redis`` values.
        NotFoundError: the run has no applied Feast registry.
    """

    def __init__(self, run_dir: str | Path, *, online: OnlineStoreKind = "sqlite", redis: str | None = None):
        self.settings = FeastSettings(Path(run_dir), online=online, redis=redis)
        registry = self.settings.registry
        if not registry.exists():
            raise NotFoundError(
                f"no Feast registry at {registry}; run `tagllm features apply --run {self.settings.run_dir}"
                + (f" --online redis --redis {redis}`" if online == "redis" else "`")
                + " and `tagllm features materialize` first"
            )
        self.store: FeatureStore = open_store(self.settings)
        self._reader = OnlineStoreReader(
            self.settings,
            project=self.store.config.project,
            key_version=self.store.config.entity_key_serialization_version,
        )

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> FeatureClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _features(self, view: str, features: Sequence[str] | None) -> tuple[str, ...]:
        if view not in VIEW_FEATURES:
            raise ConfigError(f"view: got {view!r}; expected one of {', '.join(VIEW_FEATURES)}")
        if features is None:
            return VIEW_FEATURES[view]
        bad = [f for f in features if f not in VIEW_FEATURES[view]]
        if bad:
            raise ConfigError(
                f"features: {', '.join(map(repr, bad))} not in view {view!r}; "
                f"expected some of {', '.join(VIEW_FEATURES[view])}"
            )
        return tuple(features)

    # ------------------------------------------------------------------ online reads

    def online(
        self, view: str, entity_ids: Sequence[str], features: Sequence[str] | None = None
    ) -> OnlineRows:
        """Batched online read of ``features`` (default: all) of ``view`` for ``entity_ids``.

        Raises:
            ConfigError: unknown view or feature (naming it and listing the valid ones).
        """
        names = self._features(view, features)
        ids = [str(i) for i in entity_ids]
        if not ids:
            return OnlineRows(view, [], [], {n: [] for n in names})
        found, columns = self._reader.read(view, ids, names)
        return OnlineRows(view, ids, found, columns)

    def online_feast(
        self, view: str, entity_ids: Sequence[str], features: Sequence[str] | None = None
    ) -> dict[str, list[Any]]:
        """The same read through ``FeatureStore.get_online_features`` (Feast's generic path)."""
        names = self._features(view, features)
        refs = [f"{view}:{n}" for n in names]
        rows = [{VIEW_JOIN_KEY[view]: str(i)} for i in entity_ids]
        return dict(self.store.get_online_features(features=refs, entity_rows=rows).to_dict())

    def note_tags(self, note_ids: Sequence[str]) -> list[NoteTags | None]:
        """Tags of each note (``None`` where the note has none online)."""
        rows = self.online("note_tags", note_ids)
        c = rows.columns
        return [
            NoteTags(
                note_id=nid,
                tag_texts=c["tag_texts"][i] or [],
                tag_ids=c["tag_ids"][i] or [],
                tag_dimensions=c["tag_dimensions"][i] or [],
                tag_confidences=c["tag_confidences"][i] or [],
                tagger_version=c["tagger_version"][i] or "",
            )
            if rows.found[i]
            else None
            for i, nid in enumerate(rows.entity_ids)
        ]

    def user_interests(self, user_ids: Sequence[str]) -> list[UserInterests | None]:
        """Interest profile of each user (``None`` where the user has none online)."""
        rows = self.online("user_interests", user_ids)
        c = rows.columns
        return [
            UserInterests(
                user_id=uid,
                top_tags=c["top_tags"][i] or [],
                top_tag_ids=c["top_tag_ids"][i] or [],
                top_tag_weights=c["top_tag_weights"][i] or [],
                top_dimensions=c["top_dimensions"][i] or [],
                top_dimension_weights=c["top_dimension_weights"][i] or [],
                n_engagements=int(c["n_engagements"][i] or 0),
            )
            if rows.found[i]
            else None
            for i, uid in enumerate(rows.entity_ids)
        ]

    # ------------------------------------------------------------------ writes

    def push_note_tags(
        self, records: Sequence[Mapping[str, Any]], vocab: Mapping[str, int] | None = None
    ) -> int:
        """Push fresh tags of (new) notes to the online store; returns the number of notes.

        Args:
            records: ``{note_id, tags: [{text, dimension, confidence}], tagger_version, created_at?}``.
            vocab: tag text -> id (default: the run's features/tag_vocab.json).
        """
        if vocab is None:
            vocab = self._vocab()
        frame = note_tags_frame(list(records), vocab)
        with _feast_env(self.settings):
            push_note_tags(self.store, frame)
        return len(frame)

    def _vocab(self) -> Mapping[str, int]:
        if not hasattr(self, "_vocab_cache"):
            path = RunDir(self.settings.run_dir).features_tag_vocab
            self._vocab_cache: Mapping[str, int] = TagVocabulary.load(path) if path.exists() else {}
        return self._vocab_cache

    # ------------------------------------------------------------------ training sets

    def training_set(
        self,
        entity_df: pd.DataFrame,
        *,
        service: str | None = None,
        features: Sequence[str] | None = None,
        timestamp_column: str = "event_timestamp",
    ) -> pd.DataFrame:
        """Point-in-time correct features for every row of ``entity_df`` (duckdb offline store).

        Args:
            entity_df: join keys (``note_id`` and/or ``user_id``) plus ``timestamp_column`` (label time)
                and any label columns; every row comes back, in the input order.
            service: a FeatureService name (``retrieval``, ``ranking``, ``serving``), or
            features: ``view:feature`` references (exactly one of the two).
            timestamp_column: the label-time column of ``entity_df``.

        Returns:
            ``entity_df`` with one column per feature; nulls where no row was valid at label time.

        Raises:
            ConfigError: both/neither of service and features, a missing column, an unknown reference.
        """
        if (service is None) == (features is None):
            raise ConfigError("training_set: pass exactly one of service= or features=")
        if timestamp_column not in entity_df.columns:
            raise ConfigError(
                f"entity_df: missing column {timestamp_column!r} (present: {', '.join(map(str, entity_df.columns))})"
            )
        if features is not None:
            for ref in features:
                view, _, name = ref.partition(":")
                self._features(view, [name])
        df = entity_df.copy()
        if timestamp_column != "event_timestamp":
            if "event_timestamp" in df.columns:
                raise ConfigError("entity_df: has both event_timestamp and timestamp_column; drop one")
            df = df.rename(columns={timestamp_column: "event_timestamp"})
        df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
        df["__row"] = range(len(df))
        refs: Any = self.store.get_feature_service(service) if service else list(features or [])
        with _feast_env(self.settings):
            out = self.store.get_historical_features(entity_df=df, features=refs).to_df()
        out = out.sort_values("__row").drop(columns="__row").reset_index(drop=True)
        if timestamp_column != "event_timestamp":
            out = out.rename(columns={"event_timestamp": timestamp_column})
        return out

    def counts(self) -> dict[str, int]:
        """Entities per view in the SQLite online store (for summaries)."""
        return self._reader.counts(FEATURE_VIEWS)
