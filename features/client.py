"""``FeatureClient``: the only code that calls Feast at runtime.

Three paths:

- :meth:`FeatureClient.online` — batched online reads that go straight to the online store (one
  SQLite ``SELECT ... IN`` or one Redis pipeline of ``HMGET``), decoding Feast's stored ``ValueProto``
  bytes. Same answers as Feast (a test checks it), without its generic per-request machinery.
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

import contextlib
import sqlite3
import struct
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


_STRING = 2  # feast ValueType.STRING


def _entity_key_v3(join_key: str, value: str) -> bytes:
    """Feast's ``serialize_entity_key`` (version 3) for one string join key, without protos.

    Layout: n_keys, then per key (type, len, name), then per value (type, len, bytes); all uint32 LE.
    A test checks byte equality with Feast's own function.
    """
    k = join_key.encode("utf8")
    v = value.encode("utf8")
    return b"".join((struct.pack("<III", 1, _STRING, len(k)), k, struct.pack("<II", _STRING, len(v)), v))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _decode_column(
    raws: list[bytes | None], repeated_proto: Any, memo: dict[bytes, Any] | None = None
) -> list[Any]:
    """Decode many stored ValueProto bytes with one C-level parse.

    The values are framed as field 1 of a ``RepeatedValue`` message (tag 0x0A + varint length), so
    protobuf parses them all at once instead of one Python call per value. With ``memo``, decoded
    values are memoized by their stored bytes: the store is still read on every call, and a changed
    value has different bytes, so a memo hit is never stale. List values come back as fresh lists.
    """
    out: list[Any] = [None] * len(raws)
    misses: list[int] = []
    for i, r in enumerate(raws):
        if r is None:
            continue
        if memo is not None:
            hit = memo.get(r, _MISS)
            if hit is not _MISS:
                out[i] = list(hit) if isinstance(hit, tuple) else hit
                continue
        misses.append(i)
    if not misses:
        return out
    rv = repeated_proto()
    rv.ParseFromString(b"".join(b"\x0a" + _varint(len(raws[i])) + raws[i] for i in misses))  # type: ignore[operator, arg-type]
    for i, v in zip(misses, rv.val, strict=True):
        kind = v.WhichOneof("val")
        if kind is None or kind == "null_val":
            value: Any = None
        else:
            value = getattr(v, kind)
            if kind.endswith("_list_val"):
                value = tuple(value.val)
        if memo is not None:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[raws[i]] = value  # type: ignore[index]
        out[i] = list(value) if isinstance(value, tuple) else value
    return out


_MISS = object()
_MEMO_MAX = 500_000  # decoded values kept (bounded; cleared when full)


def _decode(raw: bytes | None, value_proto: Any) -> Any:
    """A stored ValueProto -> Python value (lists for list types; None when unset)."""
    if raw is None:
        return None
    v = value_proto()
    v.ParseFromString(raw)
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    val = getattr(v, kind)
    return list(val.val) if kind.endswith("_list_val") else val


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
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

        self._value_proto = Value
        self._repeated = RepeatedValue
        self._entity_key = EntityKey
        self._serialize = serialize_entity_key
        self._project = self.store.config.project
        self._key_version = self.store.config.entity_key_serialization_version
        self._sqlite: sqlite3.Connection | None = None
        self._redis: Any = None
        self._redis_fields: dict[tuple[str, tuple[str, ...]], list[bytes]] = {}
        self._memo: dict[bytes, Any] = {}

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

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

    def _keys(self, view: str, ids: Sequence[str]) -> list[bytes]:
        join_key = VIEW_JOIN_KEY[view]
        if self._key_version == 3:
            return [_entity_key_v3(join_key, i) for i in ids]
        out = []
        for i in ids:
            ek = self._entity_key(join_keys=[join_key], entity_values=[self._value_proto(string_val=str(i))])
            out.append(self._serialize(ek, entity_key_serialization_version=self._key_version))
        return out

    def _sqlite_conn(self) -> sqlite3.Connection:
        if self._sqlite is None:
            path = self.settings.sqlite_path
            if not path.exists():
                raise NotFoundError(f"online store {path} does not exist; run `tagllm features apply` first")
            # Read-only, autocommit: every SELECT is its own consistent snapshot (WAL mode).
            self._sqlite = sqlite3.connect(
                f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
        return self._sqlite

    def _redis_client(self) -> Any:
        if self._redis is None:
            import redis

            host, _, port = (self.settings.redis or "").partition(":")
            self._redis = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379))
        return self._redis

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
        keys = self._keys(view, ids)
        raw = (
            self._read_sqlite(view, keys, names)
            if self.settings.online == "sqlite"
            else self._read_redis(view, keys, names)
        )
        found = [values is not None for values in raw]
        columns = {
            n: _decode_column(
                [values.get(n) if values is not None else None for values in raw], self._repeated, self._memo
            )
            for n in names
        }
        return OnlineRows(view, ids, found, columns)

    def _read_sqlite(
        self, view: str, keys: list[bytes], names: tuple[str, ...]
    ) -> list[dict[str, bytes] | None]:
        conn = self._sqlite_conn()
        wanted = set(names)
        by_key: dict[bytes, dict[str, bytes]] = {}
        unique = list(dict.fromkeys(keys))
        for lo in range(0, len(unique), 900):  # SQLite's bound-parameter limit
            chunk = unique[lo : lo + 900]
            rows = conn.execute(
                f'SELECT entity_key, feature_name, value FROM "{self._project}_{view}" '
                f"WHERE entity_key IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            for key, name, value in rows:
                if name in wanted:
                    by_key.setdefault(key, {})[name] = value
        return [by_key.get(k) for k in keys]

    def _read_redis(
        self, view: str, keys: list[bytes], names: tuple[str, ...]
    ) -> list[dict[str, bytes] | None]:
        from feast.infra.online_stores.helpers import _mmh3

        fields = self._redis_fields.get((view, names))
        if fields is None:
            fields = [_mmh3(f"{view}:{n}") for n in names] + [f"_ts:{view}".encode()]
            self._redis_fields[(view, names)] = fields
        project = self._project.encode()
        pipe = self._redis_client().pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k + project, fields)
        out: list[dict[str, bytes] | None] = []
        for values in pipe.execute():
            # Feast writes every feature of a view plus its _ts field in one HSET: no _ts, no row.
            if values[-1] is None:
                out.append(None)
            else:
                out.append({n: v for n, v in zip(names, values, strict=False) if v is not None})
        return out

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
            import json

            path = RunDir(self.settings.run_dir).features_tag_vocab
            self._vocab_cache: Mapping[str, int] = (
                json.loads(path.read_text(encoding="utf-8"))["tags"] if path.exists() else {}
            )
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
        conn = self._sqlite_conn()
        with contextlib.suppress(sqlite3.Error):
            return {
                v: int(
                    conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{self._project}_{v}"').fetchone()[
                        0
                    ]
                )
                for v in FEATURE_VIEWS
            }
        return {}
