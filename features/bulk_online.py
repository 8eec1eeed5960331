"""Bulk online writes: feature rows from parquet into Redis, in the layout Feast's Redis store reads.

``FeatureStore.materialize`` converts every value with Feast's generic, per-value type dispatch and
writes one pipeline per batch after reading each key's stored timestamp. For a bulk load this module
writes the same bytes faster:

- the layout comes from the run's Feast registry and Feast's own helpers: one Redis hash per entity,
  key ``serialize_entity_key(EntityKey) + project``, fields ``_mmh3("view:feature")`` -> serialized
  ``ValueProto`` and ``"_ts:view"`` -> serialized ``Timestamp`` (``feast/infra/online_stores/redis.py``);
- values are built as Feast's ``ValueProto`` messages directly (the proto field named by Feast's
  ``type_map``), nulls and NaN through Feast's ``python_values_to_proto_values``; every chunk checks a
  sample of rows byte for byte against Feast's own converters (:class:`LayoutDriftError` otherwise);
- ``HSET`` (+ ``EXPIRE`` when the store sets ``key_ttl_seconds``) through redis-py pipelines with
  ``transaction=False``, ``batch_rows`` commands per round trip, optionally in several processes;
- a checkpoint file records the row offset below which every row is acknowledged by Redis, so a killed
  load restarts where it stopped.

Semantics: like Feast's ``skip_dedup: true`` fast path, a row overwrites what the key holds; inside a
chunk the row with the latest event time wins per entity (as ``materialize`` keeps the latest row).
Across chunks the later chunk wins with one worker, and the order is not defined with several: give
one row per entity (the latest), as a materialization window would.

Example::

    figures = bulk_load(settings, "note_tags", Path("note_tags.parquet"), BulkLoadConfig(workers=2))
"""

from __future__ import annotations

import json
import logging
import random
import socket
import struct
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from features.errors import ConfigError, SchemaError, TagLLMError
from features.io import write_json

if TYPE_CHECKING:
    import pyarrow as pa
    from feast import FeatureStore

    from features.feast_repo import FeastSettings

__all__ = [
    "BulkLoadConfig",
    "BulkLoadFigures",
    "LayoutDriftError",
    "ViewLayout",
    "bulk_load",
    "check_schema",
    "compare_online",
    "redis_memory",
    "view_layout",
]

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1


class LayoutDriftError(TagLLMError):
    """The fast encoder disagrees with Feast's own serialization on a sampled row."""

    grpc_status = "INTERNAL"


@dataclass(frozen=True)
class BulkLoadConfig:
    """How to load.

    Args:
        chunk_rows: rows read from the source at a time; the checkpoint advances per chunk.
        batch_rows: rows (HSET commands) per pipeline round trip.
        workers: processes encoding and writing chunks (1: in this process).
        checkpoint: JSON file recording the acknowledged row offset (None: no resume).
        verify_rows: rows per chunk compared byte for byte with Feast's converters.
    """

    chunk_rows: int = 50_000
    batch_rows: int = 5_000
    workers: int = 1
    checkpoint: Path | None = None
    verify_rows: int = 8

    def __post_init__(self) -> None:
        for name in ("chunk_rows", "batch_rows", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)!r}; expected an integer >= 1")
        if self.verify_rows < 0:
            raise ConfigError(f"verify_rows: got {self.verify_rows!r}; expected an integer >= 0")


@dataclass(frozen=True)
class ViewLayout:
    """Everything a writer needs about one feature view (picklable: sent to worker processes).

    ``features`` holds (name, Feast ``ValueType`` number) in the view's schema order.
    """

    project: str
    view: str
    hash_name: str  # the view name in Redis fields (versioned when the registry versions views)
    join_key: str
    entity_type: int
    key_version: int
    timestamp_field: str
    features: tuple[tuple[str, int], ...]
    key_ttl_seconds: int | None = None


@dataclass(frozen=True)
class BulkLoadFigures:
    """What a load did: rows written (this run), rows skipped by the checkpoint, chunks, time."""

    view: str
    rows: int
    resumed_from_row: int
    chunks: int
    seconds: float
    workers: int
    verified_rows: int = 0
    duplicates_dropped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("extra")
        out.update(self.extra)
        out["seconds"] = round(self.seconds, 3)
        out["rows_per_s"] = round(self.rows_per_s, 1)
        return out


def view_layout(store: FeatureStore, view: str) -> ViewLayout:
    """The layout of ``view`` from the store's registry (entity, features, timestamp field, project).

    Raises:
        ConfigError: the view is unknown, has no batch source, or has more than one entity.
    """
    from feast.infra.online_stores.helpers import compute_versioned_name

    try:
        fv = store.get_feature_view(view)
    except Exception as exc:  # feast raises FeatureViewNotFoundException (and friends)
        names = sorted(v.name for v in store.list_feature_views())
        raise ConfigError(f"view: got {view!r}; expected one of {', '.join(names)}") from exc
    if len(fv.entities) != 1 or fv.batch_source is None:
        raise ConfigError(f"view {view!r}: bulk loads need one entity and a batch source")
    entity = store.get_entity(fv.entities[0])
    versioning = bool(store.config.registry.enable_online_feature_view_versioning)
    return ViewLayout(
        project=store.config.project,
        view=view,
        hash_name=compute_versioned_name(fv, versioning),
        join_key=entity.join_key,
        entity_type=int(entity.value_type.value),
        key_version=int(store.config.entity_key_serialization_version),
        timestamp_field=fv.batch_source.timestamp_field,
        features=tuple((f.name, int(f.dtype.to_value_type().value)) for f in fv.features),
        key_ttl_seconds=getattr(store.config.online_store, "key_ttl_seconds", None),
    )


def check_schema(schema: pa.Schema, layout: ViewLayout) -> None:
    """Raise :class:`SchemaError` naming the column when ``schema`` cannot feed ``layout``."""
    wanted = [(layout.join_key, layout.entity_type), *layout.features]
    for name, value_type in wanted:
        if name not in schema.names:
            raise SchemaError(
                layout.view, name, "missing column", expected=f"a column per entity key and feature: {name}"
            )
        problem = _arrow_type_problem(schema.field(name).type, value_type)
        if problem:
            raise SchemaError(layout.view, name, problem[0], expected=problem[1])
    ts = layout.timestamp_field
    if ts not in schema.names:
        raise SchemaError(layout.view, ts, "missing column", expected="the event timestamp column")
    import pyarrow as pa

    if not pa.types.is_timestamp(schema.field(ts).type):
        raise SchemaError(
            layout.view, ts, f"type {schema.field(ts).type}", expected="a timestamp column (any unit)"
        )


# ------------------------------------------------------------------------------------------- checkpoint


def _source_identity(source: Path, layout: ViewLayout, redis: str, chunk_rows: int) -> dict[str, Any]:
    st = source.stat()
    return {
        "version": CHECKPOINT_VERSION,
        "source": str(source.resolve()),
        "source_bytes": st.st_size,
        "source_mtime_ns": st.st_mtime_ns,
        "view": layout.view,
        "project": layout.project,
        "redis": redis,
        "chunk_rows": chunk_rows,
    }


def _read_checkpoint(path: Path, identity: dict[str, Any]) -> int:
    if not path.exists():
        return 0
    state = json.loads(path.read_text(encoding="utf-8"))
    for k, v in identity.items():
        if state.get(k) != v:
            raise ConfigError(
                f"checkpoint {path}: {k} is {state.get(k)!r}, this load has {v!r}; "
                "delete the checkpoint to start over"
            )
    return int(state["rows_done"])


def _write_checkpoint(path: Path, identity: dict[str, Any], rows_done: int) -> None:
    write_json({**identity, "rows_done": rows_done}, path)


# ------------------------------------------------------------------------------------------- loading


def _chunks(source: Path, columns: list[str], chunk_rows: int, skip: int) -> Iterator[pa.RecordBatch]:
    """Record batches of ``source`` from row ``skip`` on (rows below it are read, not yielded)."""
    import pyarrow.parquet as pq

    start = 0  # row offset of ``batch`` in the file
    for batch in pq.ParquetFile(source).iter_batches(batch_size=chunk_rows, columns=columns):
        end = start + batch.num_rows
        if end > skip:
            yield batch.slice(max(0, skip - start))
        start = end


def bulk_load(
    settings: FeastSettings,
    view: str,
    source: Path,
    cfg: BulkLoadConfig | None = None,
    *,
    store: FeatureStore | None = None,
) -> BulkLoadFigures:
    """Load every row of the parquet file ``source`` into the run's Redis online store.

    Args:
        settings: the run (its Redis-flavour registry must be applied: ``tagllm features apply``).
        view: the feature view (e.g. ``note_tags``); the file holds its entity key, features and
            event timestamp columns (others are ignored).
        source: a parquet file.
        cfg: chunking, pipelining, workers, checkpoint.
        store: an open ``FeatureStore`` for ``settings`` (opened here otherwise).

    Returns:
        Rows written, rows skipped by the checkpoint, seconds, rows/s.

    Raises:
        ConfigError: not a Redis run, an unknown view, a checkpoint of another load.
        SchemaError: a column is missing or has a type the feature cannot take (names it).
        LayoutDriftError: a sampled row encodes differently from Feast's own serialization.
    """
    import pyarrow.parquet as pq

    from features.feast_repo import open_store

    cfg = cfg or BulkLoadConfig()
    if settings.online != "redis" or not settings.redis:
        raise ConfigError(f"online: got {settings.online!r}; bulk loads write to redis (--redis HOST:PORT)")
    source = Path(source)
    if not source.is_file():
        raise ConfigError(f"source: {source} is not a file; expected a parquet file")
    store = store or open_store(settings)
    layout = view_layout(store, view)
    check_schema(pq.read_schema(source), layout)
    identity = _source_identity(source, layout, settings.redis, cfg.chunk_rows)
    skip = _read_checkpoint(cfg.checkpoint, identity) if cfg.checkpoint else 0
    if skip:
        log.info("%s: resuming at row %d (checkpoint %s)", view, skip, cfg.checkpoint)
    columns = [layout.join_key, layout.timestamp_field, *(n for n, _ in layout.features)]
    t0 = time.perf_counter()
    done, stats = _run_chunks(
        settings.redis, layout, cfg, _chunks(source, columns, cfg.chunk_rows, skip), skip, identity
    )
    return BulkLoadFigures(
        view=view,
        rows=done - skip,
        resumed_from_row=skip,
        chunks=stats["chunks"],
        seconds=time.perf_counter() - t0,
        workers=cfg.workers,
        verified_rows=stats["verified"],
        duplicates_dropped=stats["duplicates"],
    )


def _run_chunks(
    redis: str,
    layout: ViewLayout,
    cfg: BulkLoadConfig,
    chunks: Iterator[pa.RecordBatch],
    start: int,
    identity: dict[str, Any],
) -> tuple[int, dict[str, int]]:
    """Write chunks (inline, or in ``cfg.workers`` processes); advance the checkpoint over the longest
    prefix of acknowledged chunks. Returns (rows done including ``start``, counters)."""
    stats = {"chunks": 0, "verified": 0, "duplicates": 0}
    offset = start  # row offset of the next chunk to be submitted
    acked = start  # every row below this is in Redis
    finished: dict[int, int] = {}  # chunk start offset -> its row count, acknowledged out of order

    def ack(lo: int, n: int, result: tuple[int, int]) -> None:
        nonlocal acked
        stats["chunks"] += 1
        stats["verified"] += result[0]
        stats["duplicates"] += result[1]
        finished[lo] = n
        while acked in finished:
            acked += finished.pop(acked)
        if cfg.checkpoint:
            _write_checkpoint(cfg.checkpoint, identity, acked)
        log.info("%s: %d rows written", layout.view, acked)

    if cfg.workers == 1:
        _init_worker(redis, layout, cfg.batch_rows, cfg.verify_rows)
        try:
            for batch in chunks:
                ack(offset, batch.num_rows, _write_chunk(batch))
                offset += batch.num_rows
        finally:
            _close_worker()
        return acked, stats
    with ProcessPoolExecutor(
        cfg.workers, initializer=_init_worker, initargs=(redis, layout, cfg.batch_rows, cfg.verify_rows)
    ) as pool:
        pending: dict[Future[tuple[int, int]], tuple[int, int]] = {}
        for batch in chunks:
            if len(pending) >= 2 * cfg.workers:
                _drain(pending, ack, FIRST_COMPLETED)
            pending[pool.submit(_write_chunk, batch)] = (offset, batch.num_rows)
            offset += batch.num_rows
        _drain(pending, ack, "ALL_COMPLETED")
    return acked, stats


def _drain(pending: dict[Future[tuple[int, int]], tuple[int, int]], ack: Any, when: str) -> None:
    finished, _ = wait(list(pending), return_when=when)
    for fut in finished:
        lo, n = pending.pop(fut)
        ack(lo, n, fut.result())  # re-raises a worker's error (schema, layout drift, Redis)


def redis_memory(addr: str) -> dict[str, int]:
    """``INFO memory`` figures of the redis-server at ``HOST:PORT`` (used, peak, rss; bytes)."""
    import redis

    host, _, port = addr.partition(":")
    client = redis.Redis(host=host or "127.0.0.1", port=int(port or 6379))
    try:
        info: dict[str, Any] = client.info("memory")  # type: ignore[assignment]
    finally:
        client.close()
    return {k: int(info[k]) for k in ("used_memory", "used_memory_peak", "used_memory_rss")}


def sample_ids(n: int, k: int, seed: int = 0) -> list[int]:
    """``k`` distinct row positions out of ``n`` (sorted), for equality checks."""
    return sorted(random.Random(seed).sample(range(n), min(n, k)))


# ------------------------------------------------------------------------------------------- encoding
# Feast ValueType numbers (feast.value_type.ValueType) of the types encoded here without Feast's
# per-value dispatch; anything else goes through python_values_to_proto_values for the whole column.
_BYTES, _STRING, _INT32, _INT64, _DOUBLE, _FLOAT, _BOOL = 1, 2, 3, 4, 5, 6, 7
_LIST_OFFSET = 10  # e.g. STRING_LIST = 12 = STRING + 10
_ARROW_KINDS: dict[int, tuple[str, str]] = {
    _BYTES: ("is_binary", "binary"),
    _STRING: ("is_string", "string"),
    _INT32: ("is_integer", "int8..int64"),
    _INT64: ("is_integer", "int8..int64"),
    _DOUBLE: ("is_floating", "float32|float64"),
    _FLOAT: ("is_floating", "float32|float64"),
    _BOOL: ("is_boolean", "bool"),
}
_SCALAR_MEMO_MAX = 100_000


def _arrow_type_problem(typ: pa.DataType, value_type: int) -> tuple[str, str] | None:
    """(problem, expected) when an arrow column of ``typ`` cannot feed a feature of ``value_type``."""
    import pyarrow as pa
    from feast.value_type import ValueType

    base = value_type - _LIST_OFFSET if value_type > _LIST_OFFSET else value_type
    if base not in _ARROW_KINDS:
        return None  # other Feast types: Feast's converter decides
    is_list = value_type > _LIST_OFFSET
    check, expected = _ARROW_KINDS[base]
    name = ValueType(value_type).name
    inner = typ
    if is_list:
        if not (pa.types.is_list(typ) or pa.types.is_large_list(typ)):
            return f"type {typ} for a {name} feature", f"a column of list<{expected}>"
        inner = typ.value_type
    elif pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return f"type {typ} for a {name} feature", f"a column of {expected} (not a list)"
    ok = getattr(pa.types, check)(inner) or (check == "is_string" and pa.types.is_large_string(inner))
    if not ok:
        where = f"list<{expected}>" if is_list else expected
        return f"type {typ} for a {name} feature", f"a column of {where}"
    return None


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # protobuf: negative int32/int64 take ten bytes
    return _SMALL_VARINTS[n] if n < len(_SMALL_VARINTS) else _varint_slow(n)


def _varint_slow(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [_varint_slow(i) for i in range(1 << 14)]


def _list_encoder(value_type: int, field_number: int) -> Any:
    """A function list -> serialized ``Value`` with the list in field ``field_number`` (taken from
    Feast's ``Value`` descriptor), or None for types left to Feast's converter. Sampled rows of every
    chunk are compared with Feast's converter (:func:`_verify`)."""
    tag = _varint(field_number << 3 | 2)
    base = value_type - _LIST_OFFSET

    def wrap(inner: bytes) -> bytes:
        return tag + _varint(len(inner)) + inner

    def packed(payload: bytes) -> bytes:
        return wrap(b"\x0a" + _varint(len(payload)) + payload if payload else b"")

    if base == _STRING:
        return lambda v: wrap(b"".join([b"\x0a" + _varint(len(e)) + e for e in (x.encode() for x in v)]))
    if base == _BYTES:
        return lambda v: wrap(b"".join([b"\x0a" + _varint(len(e)) + e for e in v]))
    if base in (_INT32, _INT64, _BOOL):
        return lambda v: packed(b"".join([_varint(int(x)) for x in v]))
    if base == _FLOAT:
        return lambda v: packed(struct.pack(f"<{len(v)}f", *v))
    if base == _DOUBLE:
        return lambda v: packed(struct.pack(f"<{len(v)}d", *v))
    return None


class _RespConn:
    """One socket to Redis for pipelined commands: the caller sends many RESP commands at once, then
    every reply is read (hiredis parses them) before the next batch. redis-py's pipeline spends about
    as long per HSET in Python as the encoding does; here a batch costs one ``sendall``."""

    def __init__(self, host: str, port: int) -> None:
        import hiredis

        self._hiredis = hiredis
        self._sock = socket.create_connection((host, port), timeout=60)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._reader = hiredis.Reader()

    def run(self, payload: bytes, replies: int) -> None:
        """Send ``payload`` (``replies`` commands) and wait for all their replies.

        Raises:
            ConnectionError: Redis closed the connection.
            RuntimeError: Redis answered a command with an error (the first one is named).
        """
        self._sock.sendall(payload)
        got, error = 0, None
        while got < replies:
            data = self._sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"redis closed the connection after {got} of {replies} replies")
            self._reader.feed(data)
            while (reply := self._reader.gets()) is not False:
                got += 1
                if error is None and isinstance(reply, self._hiredis.ReplyError):
                    error = reply
        if error is not None:
            raise RuntimeError(f"redis refused a write: {error}")

    def close(self) -> None:
        self._sock.close()


@dataclass
class _Writer:
    """Per-process state: the Redis client and everything derived from the layout once."""

    conn: _RespConn
    layout: ViewLayout
    batch_rows: int
    verify_rows: int
    fields: list[bytes]  # hash fields of the features, then the timestamp field
    key_prefix: bytes | None  # serialize_entity_key(...) = prefix + len + utf-8, when Feast's layout is that
    value_proto: Any
    memos: dict[str, dict[Any, bytes]]


_W: _Writer | None = None


def _init_worker(redis_addr: str, layout: ViewLayout, batch_rows: int, verify_rows: int) -> None:
    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.Value_pb2 import Value

    global _W
    _close_worker()  # a forked worker's copy of the parent's socket
    host, _, port = redis_addr.partition(":")
    fields = [_mmh3(f"{layout.hash_name}:{name}") for name, _ in layout.features]
    fields.append(f"_ts:{layout.hash_name}".encode())
    _W = _Writer(
        conn=_RespConn(host or "127.0.0.1", int(port or 6379)),
        layout=layout,
        batch_rows=batch_rows,
        verify_rows=verify_rows,
        fields=fields,
        key_prefix=_string_key_prefix(layout),
        value_proto=Value,
        memos={name: {} for name, _ in layout.features},
    )


def _close_worker() -> None:
    global _W
    if _W is not None:
        _W.conn.close()
        _W = None


def _feast_entity_key(layout: ViewLayout, value: Any) -> bytes:
    """Feast's Redis key of one entity: ``serialize_entity_key`` + project (``helpers._redis_key``)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    proto = python_values_to_proto_values([value], ValueType(layout.entity_type))[0]
    key = EntityKey(join_keys=[layout.join_key], entity_values=[proto])
    return serialize_entity_key(key, entity_key_serialization_version=layout.key_version) + (
        layout.project.encode()
    )


def _string_key_prefix(layout: ViewLayout) -> bytes | None:
    """The constant head of Feast's key for a string entity, when Feast's key for a value ``v`` is
    ``head + uint32_le(len(v)) + v + project`` (probed with Feast's own function); else None."""
    if layout.entity_type != _STRING:
        return None
    project = layout.project.encode()
    empty = _feast_entity_key(layout, "")
    head = empty[: -len(project) - 4]
    for probe in ("a", "note-é"):
        raw = probe.encode()
        if _feast_entity_key(layout, probe) != head + struct.pack("<I", len(raw)) + raw + project:
            return None
    return head


def _keys(w: _Writer, column: pa.Array) -> list[bytes]:
    ids = column.to_pylist()
    if w.key_prefix is None:
        return [_feast_entity_key(w.layout, v) for v in ids]
    head, project, pack = w.key_prefix, w.layout.project.encode(), struct.Struct("<I").pack
    out = []
    for v in ids:
        raw = v.encode()
        out.append(head + pack(len(raw)) + raw + project)
    return out


def _timestamps(lay: ViewLayout, column: pa.Array) -> tuple[list[int], list[bytes]]:
    """(microseconds since the epoch, serialized Timestamp) per row; Feast keeps microseconds
    (``Timestamp.FromDatetime`` of a Python datetime)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from google.protobuf.timestamp_pb2 import Timestamp

    if column.null_count:
        raise SchemaError(lay.view, lay.timestamp_field, "null event times", expected="a time per row")
    unit = column.type.unit
    raw = pc.cast(column, pa.timestamp(unit)).cast(pa.int64()).to_numpy()
    us = {"s": raw * 1_000_000, "ms": raw * 1000, "us": raw, "ns": raw // 1000}[unit]
    secs, micros = np.divmod(us, 1_000_000)
    out = [
        Timestamp(seconds=s, nanos=m * 1000).SerializeToString()
        for s, m in zip(secs.tolist(), micros.tolist(), strict=True)
    ]
    return us.tolist(), out


def _encode_column(w: _Writer, name: str, value_type: int, column: pa.Array) -> list[bytes]:
    """Serialized ValueProto per row: Feast's proto class and field names, nulls/NaN via Feast."""
    import pyarrow.compute as pc
    from feast.type_map import (
        PYTHON_LIST_VALUE_TYPE_TO_PROTO_VALUE,
        PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE,
        python_values_to_proto_values,
    )
    from feast.value_type import ValueType

    vt = ValueType(value_type)
    base = value_type - _LIST_OFFSET if value_type > _LIST_OFFSET else value_type
    values = column.to_pylist()
    if base not in _ARROW_KINDS or (
        vt not in PYTHON_LIST_VALUE_TYPE_TO_PROTO_VALUE and vt not in PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE
    ):
        protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), vt)
        return [p.SerializeToString() for p in protos]
    Value = w.value_proto
    out: list[bytes] = [b""] * len(values)
    special = column.is_null()
    if value_type in (_FLOAT, _DOUBLE):
        special = pc.or_(special, pc.fill_null(pc.is_nan(column), False))
    if vt in PYTHON_LIST_VALUE_TYPE_TO_PROTO_VALUE:
        field_name = PYTHON_LIST_VALUE_TYPE_TO_PROTO_VALUE[vt][1]
        encode = _list_encoder(value_type, Value.DESCRIPTOR.fields_by_name[field_name].number)
        for i, v in enumerate(values):
            if v is not None:
                out[i] = encode(v)
    else:
        field_name = PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE[vt][0]
        memo = w.memos[name]
        for i, v in enumerate(values):
            b = memo.get(v)
            if b is None:
                if v is None:
                    continue
                b = Value(**{field_name: v}).SerializeToString()
                if len(memo) < _SCALAR_MEMO_MAX:
                    memo[v] = b
            out[i] = b
    if special.true_count:  # nulls (and NaN scalars): whatever Feast's converter makes of them
        rows = pc.indices_nonzero(special).to_pylist()
        protos = python_values_to_proto_values(column.take(rows).to_numpy(zero_copy_only=False), vt)
        for i, p in zip(rows, protos, strict=True):
            out[i] = p.SerializeToString()
    return out


def _verify(
    w: _Writer, batch: pa.RecordBatch, rows: list[int], keys: list[bytes], cols: list[list[bytes]]
) -> None:
    """Encode ``rows`` with Feast's own converters (as ``materialize`` does) and compare bytes."""
    import pandas as pd
    from feast.type_map import python_values_to_proto_values
    from feast.utils import _coerce_datetime, make_tzaware
    from feast.value_type import ValueType
    from google.protobuf.timestamp_pb2 import Timestamp

    lay = w.layout
    sub = batch.take(rows)
    ids = sub.column(lay.join_key).to_pylist()
    times = pd.to_datetime(sub.column(lay.timestamp_field).to_numpy(zero_copy_only=False))
    for (name, vt), ours in zip(lay.features, cols[:-1], strict=True):
        ref = python_values_to_proto_values(sub.column(name).to_numpy(zero_copy_only=False), ValueType(vt))
        for r, p in zip(rows, ref, strict=True):
            if ours[r] != p.SerializeToString():
                raise LayoutDriftError(
                    f"{lay.view}.{name}: row {r} encodes differently from Feast's converter"
                )
    for r, entity, t in zip(rows, ids, times, strict=True):
        if keys[r] != _feast_entity_key(lay, entity):
            raise LayoutDriftError(f"{lay.view}.{lay.join_key}: row {r} key differs from Feast's _redis_key")
        ts = Timestamp()
        with warnings.catch_warnings():  # Feast drops sub-microsecond digits, as we do
            warnings.filterwarnings("ignore", "Discarding nonzero nanoseconds")
            ts.FromDatetime(make_tzaware(_coerce_datetime(t)))
        if cols[-1][r] != ts.SerializeToString():
            raise LayoutDriftError(
                f"{lay.view}.{lay.timestamp_field}: row {r} differs from Feast's Timestamp"
            )


def _latest_per_key(keys: list[bytes], micros: list[int]) -> list[int]:
    """Row positions to write: every row, or, with repeated keys, the latest one per key."""
    if len(set(keys)) == len(keys):
        return list(range(len(keys)))
    best: dict[bytes, int] = {}
    for i, k in enumerate(keys):
        j = best.get(k)
        if j is None or micros[i] >= micros[j]:
            best[k] = i
    return sorted(best.values())


def _write_chunk(batch: pa.RecordBatch) -> tuple[int, int]:
    """Encode and write one chunk; returns (rows verified against Feast, duplicate rows dropped)."""
    w = _W
    if w is None:  # pragma: no cover - _init_worker runs first in every process
        raise RuntimeError("bulk writer used before _init_worker")
    lay = w.layout
    n = batch.num_rows
    keys = _keys(w, batch.column(lay.join_key))
    micros, ts_bytes = _timestamps(lay, batch.column(lay.timestamp_field))
    cols = [_encode_column(w, name, vt, batch.column(name)) for name, vt in lay.features]
    cols.append(ts_bytes)
    inner = random.sample(range(1, n - 1), max(0, min(n - 2, w.verify_rows - 2))) if n > 2 else []
    sample = sorted({0, n - 1, *inner}) if n and w.verify_rows else []
    if sample:
        _verify(w, batch, sample, keys, cols)
    rows = _latest_per_key(keys, micros)
    ttl = lay.key_ttl_seconds
    head = b"*%d\r\n$4\r\nHSET\r\n" % (2 + 2 * len(w.fields))
    fields = [b"$%d\r\n%s\r\n" % (len(f), f) for f in w.fields]
    expire = b"$%d\r\n%d\r\n" % (len(str(ttl)), ttl) if ttl else b""
    for start in range(0, len(rows), w.batch_rows):
        parts: list[bytes] = []
        todo = rows[start : start + w.batch_rows]
        for i in todo:
            key = b"$%d\r\n%s\r\n" % (len(keys[i]), keys[i])
            parts += (head, key)
            for f, col in zip(fields, cols, strict=True):
                v = col[i]
                parts += (f, b"$%d\r\n" % len(v), v, b"\r\n")
            if ttl:
                parts += (b"*3\r\n$6\r\nEXPIRE\r\n", key, expire)
        w.conn.run(b"".join(parts), len(todo) * (2 if ttl else 1))
    return len(sample), n - len(rows)


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN."""
    import math

    nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return bool(a == b or nan)


def compare_online(store: FeatureStore, view: str, rows: pa.Table) -> list[str]:
    """Where Feast's reads disagree with ``rows`` (one row per entity): ``get_online_features`` for the
    values, the Redis store's ``online_read`` (what ``get_online_features`` calls) for the event time
    at full precision. Returns one line per mismatch (empty: equal)."""
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.type_map import python_values_to_proto_values
    from feast.value_type import ValueType

    layout = view_layout(store, view)
    ids = rows.column(layout.join_key).to_pylist()
    names = [n for n, _ in layout.features]
    got = store.get_online_features(
        features=[f"{view}:{n}" for n in names], entity_rows=[{layout.join_key: i} for i in ids]
    ).to_dict()
    bad: list[str] = []
    for n in names:
        for entity, want, have in zip(ids, rows.column(n).to_pylist(), got[n], strict=True):
            if isinstance(want, list) and isinstance(have, list):
                ok = len(want) == len(have) and all(_same(a, b) for a, b in zip(want, have, strict=True))
            else:
                ok = _same(want, have)
            if not ok:
                bad.append(f"{entity}.{n}: wrote {want!r}, Feast read {have!r}")
    keys = [
        EntityKey(
            join_keys=[layout.join_key],
            entity_values=python_values_to_proto_values([i], ValueType(layout.entity_type)),
        )
        for i in ids
    ]
    fv = store.get_feature_view(view)
    stored = RedisOnlineStore().online_read(store.config, fv, keys)
    wanted = rows.column(layout.timestamp_field).to_pandas()
    for entity, want_ts, (have_ts, _) in zip(ids, wanted, stored, strict=True):
        want = want_ts.floor("us").to_pydatetime()
        want = want if want.tzinfo else want.replace(tzinfo=UTC)
        if have_ts != want:
            bad.append(f"{entity}.{layout.timestamp_field}: wrote {want}, Feast read {have_ts}")
    return bad
