"""Bulk online writes into Redis: Feast's get_online_features reads back exactly the rows written."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from features import bulk_online
from features.bulk_online import BulkLoadConfig, LayoutDriftError, bulk_load
from features.errors import SchemaError
from features.feast_repo import FeastSettings, apply, open_store
from features.features_cli import features as features_cli
from tagllm.bench.online_writes import generate, note_tags_rows

FEATURES = ("tag_texts", "tag_ids", "tag_dimensions", "tag_confidences", "tagger_version", "n_tags")
N = 2400


@pytest.fixture(scope="module")
def own_redis() -> Iterator[Any]:
    """A redis-server of this module alone (own port; stopped by pid): nothing else shares its keys."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed: `apt-get install -y redis-server` (Debian package)")
    import redis

    from tagllm.bench.procs import redis_server

    with redis_server() as addr:
        host, _, port = addr.partition(":")
        client = redis.Redis(host=host, port=int(port))
        yield addr, client
        client.close()


@pytest.fixture(scope="module")
def redis_run(tmp_path_factory: pytest.TempPathFactory, own_redis: Any) -> tuple[FeastSettings, Any]:
    run_dir = tmp_path_factory.mktemp("bulk") / "run"
    generate(run_dir, 10, seed=0)  # the repo's sources (note_tags: 10 rows) and a manifest
    settings = FeastSettings(run_dir, online="redis", redis=own_redis[0])
    apply(settings, compute=False)
    return settings, open_store(settings)


@pytest.fixture()
def clean(own_redis: Any) -> Any:
    own_redis[1].flushdb()
    return own_redis[1]


def _rows(n: int = N) -> pa.Table:
    """Generated note_tags rows plus the awkward cases: a null list, a null scalar, NaN in a list,
    non-ASCII ids, nanosecond event times (Feast keeps microseconds), and ids that look numeric."""
    t = note_tags_rows(0, n, seed=3)
    ids = t.column("note_id").to_pylist()
    ids[1], ids[2], ids[3] = "note-é-ü", "007", ""
    texts = t.column("tag_texts").to_pylist()
    texts[4] = None
    version = t.column("tagger_version").to_pylist()
    version[5] = None
    conf = t.column("tag_confidences").to_pylist()
    conf[6] = [float("nan"), 0.5]
    ts = pc.cast(t.column("event_timestamp"), pa.timestamp("ns", tz="UTC"))
    ts_ns = pc.add(pc.cast(ts, pa.int64()), 789)  # sub-microsecond part Feast drops
    t = t.set_column(0, "note_id", pa.array(ids))
    t = t.set_column(
        t.schema.get_field_index("tag_texts"), "tag_texts", pa.array(texts, pa.list_(pa.string()))
    )
    t = t.set_column(t.schema.get_field_index("tagger_version"), "tagger_version", pa.array(version))
    t = t.set_column(
        t.schema.get_field_index("tag_confidences"), "tag_confidences", pa.array(conf, pa.list_(pa.float32()))
    )
    i = t.schema.get_field_index("event_timestamp")
    return t.set_column(i, "event_timestamp", pc.cast(ts_ns, pa.timestamp("ns", tz="UTC")))


def _online(store: Any, ids: list[str]) -> dict[str, list[Any]]:
    return store.get_online_features(
        features=[f"note_tags:{f}" for f in FEATURES], entity_rows=[{"note_id": i} for i in ids]
    ).to_dict(include_event_timestamps=True)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # NaN
    return bool(a == b)


def _assert_reads_back(store: Any, table: pa.Table, positions: list[int]) -> None:
    """get_online_features on ``positions`` returns the written values and event seconds; the Redis
    store's online_read (under get_online_features) returns the event time to the microsecond."""
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    sub = table.take(positions)
    ids = sub.column("note_id").to_pylist()
    got = _online(store, [*ids, "never-written"])
    for name in FEATURES:
        want = sub.column(name).to_pylist()
        bad = [(i, w, g) for i, w, g in zip(ids, want, got[name], strict=False) if not _equal(w, g)]
        assert not bad, (name, bad[:3])
        assert got[name][-1] is None
    times = sub.column("event_timestamp").to_pandas()
    assert got["tag_ids__ts"][: len(ids)] == [int(t.timestamp()) for t in times]
    keys = [EntityKey(join_keys=["note_id"], entity_values=[Value(string_val=i)]) for i in ids]
    stored = RedisOnlineStore().online_read(store.config, store.get_feature_view("note_tags"), keys)
    assert [ts for ts, _ in stored] == [t.floor("us").to_pydatetime() for t in times]


def test_bulk_load_reads_back_through_feast(redis_run, clean, tmp_path):
    settings, store = redis_run
    table = _rows()
    src = tmp_path / "rows.parquet"
    pq.write_table(table, src, row_group_size=500)
    ckpt = tmp_path / "ckpt.json"
    fig = bulk_load(
        settings, "note_tags", src, BulkLoadConfig(chunk_rows=700, batch_rows=300, checkpoint=ckpt)
    )
    assert (fig.rows, fig.resumed_from_row, fig.chunks) == (N, 0, 4)
    assert fig.verified_rows == 4 * 8
    assert clean.dbsize() == N  # one hash per entity, nothing else
    awkward = list(range(8))
    _assert_reads_back(store, table, awkward + random.Random(0).sample(range(8, N), 300))
    assert json.loads(ckpt.read_text())["rows_done"] == N
    # A finished checkpoint: a rerun writes nothing.
    assert bulk_load(settings, "note_tags", src, BulkLoadConfig(chunk_rows=700, checkpoint=ckpt)).rows == 0


def test_resume_after_a_crash_writes_only_the_rest(redis_run, clean, tmp_path, monkeypatch):
    settings, store = redis_run
    table = _rows(1000)
    src = tmp_path / "rows.parquet"
    pq.write_table(table, src)
    cfg = BulkLoadConfig(chunk_rows=300, batch_rows=100, checkpoint=tmp_path / "ckpt.json")
    real, calls = bulk_online._write_chunk, []

    def crash_on_third(batch: pa.RecordBatch) -> tuple[int, int]:
        calls.append(batch.num_rows)
        if len(calls) == 3:
            raise ConnectionError("redis went away")
        return real(batch)

    monkeypatch.setattr(bulk_online, "_write_chunk", crash_on_third)
    with pytest.raises(ConnectionError):
        bulk_load(settings, "note_tags", src, cfg, store=store)
    monkeypatch.setattr(bulk_online, "_write_chunk", real)
    assert json.loads(cfg.checkpoint.read_text())["rows_done"] == 600  # type: ignore[union-attr]
    clean.flushdb()  # so the rerun's writes are all that is there
    fig = bulk_load(settings, "note_tags", src, cfg, store=store)
    assert (fig.resumed_from_row, fig.rows) == (600, 400)
    assert clean.dbsize() == 400
    assert _online(store, table.column("note_id").to_pylist()[599:601])["n_tags"][0] is None
    _assert_reads_back(store, table, list(range(600, 1000, 7)))


def test_two_workers_cli_and_latest_row_per_entity(redis_run, clean, tmp_path):
    settings, store = redis_run
    table = note_tags_rows(0, 1500, seed=5)
    older = note_tags_rows(0, 1500, seed=6)  # same ids, event times pushed a year back
    ts = pc.subtract(pc.cast(older.column("event_timestamp"), pa.int64()), 365 * 86_400 * 10**6)
    older = older.set_column(1, "event_timestamp", pc.cast(ts, pa.timestamp("us", tz="UTC")))
    src = tmp_path / "rows.parquet"
    pq.write_table(pa.concat_tables([older.slice(0, 100), table]), src)  # in one chunk: the newer wins
    r = CliRunner().invoke(
        features_cli,
        [
            *("bulk-load", "--run", str(settings.run_dir), "--redis", settings.redis, "--source", str(src)),
            *("--chunk-rows", "400", "--batch-rows", "128", "--workers", "2", "--json"),
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert (out["rows"], out["workers"], out["duplicates_dropped"]) == (1600, 2, 100)
    assert clean.dbsize() == 1500
    _assert_reads_back(store, table, list(range(0, 1500, 11)))
    assert (settings.feast_dir / "bulk_load.note_tags.json").exists()


def test_schema_errors_name_the_column(redis_run, clean, tmp_path):
    settings, _ = redis_run
    table = note_tags_rows(0, 10)
    cases = {
        "note_tags.tag_ids: missing column": table.drop_columns(["tag_ids"]),
        "note_tags.n_tags: type string for a INT64 feature; expected a column of int8..int64": table.set_column(
            8, "n_tags", pa.array(["3"] * 10)
        ),
        "note_tags.tag_confidences: type double for a FLOAT_LIST feature; expected a column of list<float32": (
            table.set_column(6, "tag_confidences", pa.array([0.5] * 10))
        ),
        "note_tags.event_timestamp: type string": table.set_column(
            1, "event_timestamp", pa.array(["x"] * 10)
        ),
    }
    for message, bad in cases.items():
        path = tmp_path / "bad.parquet"
        pq.write_table(bad, path)
        with pytest.raises(SchemaError) as err:
            bulk_load(settings, "note_tags", path)
        assert str(err.value).startswith(message), str(err.value)
    assert clean.dbsize() == 0


def test_layout_drift_is_caught(redis_run, clean, tmp_path, monkeypatch):
    settings, _ = redis_run
    src = tmp_path / "rows.parquet"
    pq.write_table(note_tags_rows(0, 50), src)
    real = bulk_online._encode_column

    def off_by_one(w: Any, name: str, vt: int, column: pa.Array) -> list[bytes]:
        out = real(w, name, vt, column)
        return [b + b"\x00" for b in out] if name == "n_tags" else out

    monkeypatch.setattr(bulk_online, "_encode_column", off_by_one)
    with pytest.raises(LayoutDriftError, match=r"note_tags\.n_tags"):
        bulk_load(settings, "note_tags", src)
    assert clean.dbsize() == 0  # verified before writing


def test_cli_help_is_fast_and_needs_redis(tmp_path):
    r = CliRunner().invoke(features_cli, ["bulk-load", "--help"])
    assert r.exit_code == 0 and "--chunk-rows" in r.output and "--workers" in r.output
    r = CliRunner().invoke(
        features_cli, ["bulk-load", "--run", str(tmp_path), "--source", str(Path(__file__))]
    )
    assert r.exit_code == 2 and "--redis" in r.output
