"""Batched reads straight from a run's Feast online store, without Feast's per-request machinery.

One SQLite ``SELECT ... IN`` (chunked by the bound-parameter limit) or one Redis pipeline of ``HMGET``
per read, then Feast's stored ``ValueProto`` bytes decoded with one protobuf parse per column. Same
answers as ``FeatureStore.get_online_features`` (a test checks it). :class:`~features.client.FeatureClient`
is the public face; this module owns the connections, the entity-key encoding and the decoding.

Example::

    reader = OnlineStoreReader(settings, project="tagllm", key_version=3)
    found, columns = reader.read("note_stats", ["n000001"], ("n_views",))
    reader.close()
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from features.compute import VIEW_JOIN_KEY
from features.errors import NotFoundError

if TYPE_CHECKING:
    from features.feast_repo import FeastSettings

__all__ = ["OnlineStoreReader"]


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


class OnlineStoreReader:
    """Reads feature rows of one run's online store (SQLite or Redis, per ``settings.online``).

    Connections open on first use and stay open until :meth:`close`; decoded values are memoized by
    their stored bytes (bounded), so a changed value is never served stale.

    Args:
        settings: the run's Feast settings (online store kind, SQLite path, Redis address).
        project: the Feast project (table and key prefix).
        key_version: Feast's ``entity_key_serialization_version``.
    """

    def __init__(self, settings: FeastSettings, *, project: str, key_version: int) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

        self.settings = settings
        self._value_proto = Value
        self._repeated = RepeatedValue
        self._entity_key = EntityKey
        self._serialize = serialize_entity_key
        self._project = project
        self._key_version = key_version
        self._sqlite: sqlite3.Connection | None = None
        self._redis: Any = None  # redis.Redis; its stubs type keys as str, Feast's keys are bytes
        self._redis_fields: dict[tuple[str, tuple[str, ...]], list[bytes]] = {}
        self._memo: dict[bytes, Any] = {}

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._redis is not None:
            self._redis.close()
            self._redis = None

    def read(
        self, view: str, ids: list[str], names: tuple[str, ...]
    ) -> tuple[list[bool], dict[str, list[Any]]]:
        """(found per id, feature name -> decoded values aligned with ``ids``, ``None`` where not found).

        ``view`` and ``names`` must be valid (the caller checks them)."""
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
        return found, columns

    def counts(self, views: Iterable[str]) -> dict[str, int]:
        """Entities per view in the SQLite online store ({} when a table cannot be read)."""
        conn = self._sqlite_conn()
        with contextlib.suppress(sqlite3.Error):
            return {
                v: int(
                    conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{self._project}_{v}"').fetchone()[
                        0
                    ]
                )
                for v in views
            }
        return {}

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
