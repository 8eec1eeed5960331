"""SQLite online store: our fast path equals Feast's answers; push; concurrent materialize; errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from features.client import VIEW_FEATURES, FeatureClient
from features.errors import ConfigError, NotFoundError
from features.feast_repo import FeastSettings, apply, materialize
from features.io import RunDir
from features.online_read import _entity_key_v3


def _normalize(values):
    return [list(v) if isinstance(v, list | tuple) else v for v in values]


@pytest.mark.parametrize("view", list(VIEW_FEATURES))
def test_fast_path_equals_feast(sqlite_client, view):
    key = "user_id" if view == "user_interests" else "note_id"
    ids = [f"u{i}" for i in range(8)] if key == "user_id" else [f"n{i:03d}" for i in range(32)]
    ids += ["missing", ids[0]]  # unknown and duplicate ids
    ours = sqlite_client.online(view, ids)
    feast = sqlite_client.online_feast(view, ids)
    assert feast[key] == ids and ours.entity_ids == ids
    for name in VIEW_FEATURES[view]:
        assert _normalize(ours.columns[name]) == _normalize(feast[name]), name
    assert ours.found[-2] is False and ours.row(len(ids) - 2) is None
    assert sum(ours.found) >= 2


def test_entity_key_bytes_equal_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    for v in ["n001", "", "é-ü 笔记", "x" * 300]:
        ek = EntityKey(join_keys=["note_id"], entity_values=[Value(string_val=v)])
        assert _entity_key_v3("note_id", v) == serialize_entity_key(ek, entity_key_serialization_version=3)


def test_declared_views_match_client(sqlite_client):
    views = {fv.name: tuple(f.name for f in fv.features) for fv in sqlite_client.store.list_feature_views()}
    assert views == dict(VIEW_FEATURES)
    services = {s.name for s in sqlite_client.store.list_feature_services()}
    assert services == {"retrieval", "ranking", "serving"}


def test_typed_reads(sqlite_client):
    tags = sqlite_client.note_tags(["n001", "nope"])
    assert tags[1] is None and tags[0] is not None
    t = tags[0]
    assert len(t.tag_texts) == len(t.tag_ids) == len(t.tag_dimensions) == len(t.tag_confidences) > 0
    assert t.tagger_version == "v1" and all(i > 0 for i in t.tag_ids)
    ui = sqlite_client.user_interests(["u0"])[0]
    assert ui is not None and ui.n_engagements > 0
    assert ui.top_tag_weights == sorted(ui.top_tag_weights, reverse=True)


def test_pushed_note_readable_at_once(sqlite_client):
    rec = {
        "note_id": "fresh-1",
        "tags": [{"text": "ramen", "dimension": "dish", "confidence": 0.9}],
        "tagger_version": "student-1",
    }
    assert sqlite_client.note_tags(["fresh-1"]) == [None]
    sqlite_client.push_note_tags([rec])
    got = sqlite_client.note_tags(["fresh-1"])[0]
    assert got is not None and got.tag_texts == ["ramen"] and got.tagger_version == "student-1"
    assert got.tag_ids == [sqlite_client._vocab()["ramen"]]
    assert sqlite_client.online_feast("note_tags", ["fresh-1"])["tag_texts"] == [["ramen"]]


def test_errors_name_the_option(sqlite_client, tmp_path):
    with pytest.raises(ConfigError, match=r"view: got 'tags'.*note_tags"):
        sqlite_client.online("tags", ["n1"])
    with pytest.raises(ConfigError, match="'bogus' not in view 'note_tags'"):
        sqlite_client.online("note_tags", ["n1"], ["bogus"])
    with pytest.raises(ConfigError, match="exactly one of service= or features="):
        sqlite_client.training_set(pd.DataFrame({"note_id": ["n1"], "event_timestamp": [pd.Timestamp.now()]}))
    with pytest.raises(ConfigError, match="missing column 'event_timestamp'"):
        sqlite_client.training_set(pd.DataFrame({"note_id": ["n1"]}), service="ranking")
    with pytest.raises(ConfigError, match="redis: required"):
        FeastSettings(tmp_path, online="redis")
    with pytest.raises(NotFoundError, match="tagllm features apply"):
        FeatureClient(tmp_path)


def _version_tables(note_ids: list[str], version: str, n_tags: int, ts: pd.Timestamp) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "note_id": note_ids,
            "event_timestamp": ts,
            "created": ts,
            "tag_texts": [[version] * n_tags for _ in note_ids],
            "tag_ids": [[n_tags] * n_tags for _ in note_ids],
            "tag_dimensions": [[version] * n_tags for _ in note_ids],
            "tag_confidences": [[0.5] * n_tags for _ in note_ids],
            "tagger_version": version,
            "n_tags": n_tags,
        }
    )


def test_readers_during_materialize_see_whole_rows(tmp_path):
    """Readers run while materialize rewrites every note: no errors, and each row is all-old or all-new."""
    from tests.features.conftest import make_tiny_run

    run = make_tiny_run(tmp_path / "run")
    settings = FeastSettings(run.path)
    apply(settings)
    ids = [f"m{i:05d}" for i in range(3000)]
    notes_path = settings.features_dir / "note_tags.parquet"
    base = pd.Timestamp("2026-01-01T00:00:00Z")
    _version_tables(ids, "A", 3, base).to_parquet(notes_path)
    materialize(settings, views=["note_tags"])
    _version_tables(ids, "B", 5, base + pd.Timedelta(days=1)).to_parquet(notes_path)

    errors: list[BaseException] = []
    seen: dict[str, int] = {"A": 0, "B": 0, "reads": 0}
    stop = threading.Event()

    def reader() -> None:
        with FeatureClient(run.path) as client:
            while not stop.is_set():
                try:
                    rows = client.online("note_tags", ids[::30])
                    for i in range(len(rows.entity_ids)):
                        r = rows.row(i)
                        assert r is not None
                        v = r["tagger_version"]
                        assert r["tag_texts"] == [v] * r["n_tags"] == r["tag_dimensions"], r
                        assert len(r["tag_ids"]) == r["n_tags"] == (3 if v == "A" else 5), r
                        seen[v] += 1
                    seen["reads"] += 1
                except BaseException as exc:  # collected and re-raised in the test thread
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    materialize(settings, views=["note_tags"])
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[0]
    assert seen["reads"] > 0 and seen["B"] > 0
    with FeatureClient(run.path) as client:
        assert set(client.online("note_tags", ids).columns["tagger_version"]) == {"B"}


def test_feature_stage_writes_summary(applied_run: Path):
    summary = RunDir(applied_run).summary()["features"]
    assert summary["rows"]["note_tags"] == 30
    assert summary["online_entities"]["note_tags"] == 30
    assert summary["seconds"] < 60
