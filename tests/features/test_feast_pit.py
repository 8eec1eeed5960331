"""Point-in-time training sets: hand-built timelines where features change after the label time."""

from __future__ import annotations

import pandas as pd
import pytest

from features.client import FeatureClient
from features.feast_repo import FeastSettings, apply
from features.io import RunDir


def ts(s: str) -> pd.Timestamp:
    return pd.Timestamp(s, tz="UTC")


def _stats(rows):
    return pd.DataFrame(
        [
            {
                "note_id": n,
                "event_timestamp": ts(t),
                "impressions": imp,
                "clicks": imp // 2,
                "engagements": 0,
                "ctr": 0.5,
                "age_days": 1.0,
                "created_at_s": 0,
                "is_cold_start": False,
            }
            for n, t, imp in rows
        ]
    )


def _tags(rows):
    return pd.DataFrame(
        [
            {
                "note_id": n,
                "event_timestamp": ts(t),
                "created": ts(t),
                "tag_texts": [version],
                "tag_ids": [1],
                "tag_dimensions": ["d"],
                "tag_confidences": [0.9],
                "tagger_version": version,
                "n_tags": 1,
            }
            for n, t, version in rows
        ]
    )


def _interests(rows):
    return pd.DataFrame(
        [
            {
                "user_id": u,
                "event_timestamp": ts(t),
                "top_tags": [tag],
                "top_tag_ids": [1],
                "top_tag_weights": [1.0],
                "top_dimensions": ["d"],
                "top_dimension_weights": [1.0],
                "n_engagements": n,
            }
            for u, t, tag, n in rows
        ]
    )


@pytest.fixture(scope="module")
def pit_client(tmp_path_factory):
    run = RunDir(tmp_path_factory.mktemp("pit") / "run")
    run.write_manifest({"source": "hand-built"})
    settings = FeastSettings(run.path)
    settings.features_dir.mkdir(parents=True)
    _stats([("n1", "2026-01-01", 1), ("n1", "2026-01-10", 10), ("n1", "2026-03-01", 100)]).to_parquet(
        settings.features_dir / "note_stats.parquet"
    )
    _tags([("n1", "2026-01-03", "v1"), ("n1", "2026-01-20", "v2"), ("n2", "2026-01-01", "w1")]).to_parquet(
        settings.features_dir / "note_tags.parquet"
    )
    _interests([("u1", "2026-01-02", "a", 1), ("u1", "2026-01-08", "b", 2)]).to_parquet(
        settings.features_dir / "user_interests.parquet"
    )
    apply(settings, compute=False)
    with FeatureClient(run.path) as client:
        yield client


LABELS = [
    # note, user, label time, expected impressions, expected tagger_version, expected top_tags
    ("n1", "u1", "2025-12-31", None, None, None),  # before any feature row: nulls
    ("n1", "u1", "2026-01-05", 1, "v1", ["a"]),  # later rows (Jan 10, Jan 20, Jan 8) are in the future
    ("n1", "u1", "2026-01-09T23:59:59", 1, "v1", ["b"]),
    ("n1", "u1", "2026-01-10", 10, "v1", ["b"]),  # a row valid exactly at label time counts
    ("n1", "u1", "2026-01-25", 10, "v2", ["b"]),
    ("n1", "u1", "2026-02-25", None, "v2", None),  # stats/interests older than their 30-day TTL: expired
    ("n1", "u9", "2026-03-02", 100, "v2", None),  # unknown user: nulls, row kept
    ("n9", "u1", "2026-01-05", None, None, ["a"]),  # unknown note
    ("n2", "u1", "2026-01-05", None, "w1", ["a"]),  # tags never expire (ttl 0)
    ("n1", "u1", "2026-01-05", 1, "v1", ["a"]),  # duplicate label row: kept
]


def _labels() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "note_id": [r[0] for r in LABELS],
            "user_id": [r[1] for r in LABELS],
            "label_time": [ts(r[2]) for r in LABELS],
            "label": range(len(LABELS)),
        }
    )


def _none(v):
    return (
        None
        if v is None or (not isinstance(v, list | tuple) and not hasattr(v, "__len__") and pd.isna(v))
        else v
    )


def test_training_set_never_contains_future_values(pit_client):
    out = pit_client.training_set(_labels(), service="ranking", timestamp_column="label_time")
    assert len(out) == len(LABELS)
    assert out["label"].tolist() == list(range(len(LABELS)))  # input order, nothing dropped
    for i, (_, _, when, imp, version, top) in enumerate(LABELS):
        row = out.iloc[i]
        got_imp = _none(row["impressions"])
        assert (None if got_imp is None else int(got_imp)) == imp, (when, "impressions", row["impressions"])
        assert _none(row["tagger_version"]) == version, (when, "tagger_version")
        got_top = _none(row["top_tags"])
        assert (None if got_top is None else list(got_top)) == top, (when, "top_tags", got_top)


def test_training_set_with_feature_refs(pit_client):
    df = _labels().rename(columns={"label_time": "event_timestamp"})
    out = pit_client.training_set(df, features=["note_stats:impressions", "note_tags:tag_texts"])
    assert len(out) == len(LABELS) and "tag_texts" in out.columns and "top_tags" not in out.columns
    assert out["event_timestamp"].tolist() == [ts(r[2]) for r in LABELS]
