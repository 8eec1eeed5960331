"""Feast declarations for TagLLM: entities, sources, feature views, a push source, feature services.

Declarations only. The feature tables are computed by ``features.compute`` and written to
``$TAGLLM_RUN_DIR/features/*.parquet`` by ``tagllm features apply``; sources point there by absolute
path, so ``feast plan/apply/serve/listen`` behave the same from any working directory.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, ValueType
from feast.types import Array, Bool, Float32, Float64, Int64, String

from features.io import RunDir

_run_dir = os.environ.get("TAGLLM_RUN_DIR")
if not _run_dir or not Path(_run_dir).is_absolute():
    raise RuntimeError(
        f"TAGLLM_RUN_DIR: got {_run_dir!r}; expected the absolute path of a run directory "
        "(e.g. TAGLLM_RUN_DIR=$PWD/runs/demo feast apply), prepared by `tagllm features apply --run`"
    )
_RUN = RunDir(_run_dir)

note = Entity(name="note", join_keys=["note_id"], value_type=ValueType.STRING, description="A note (post).")
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A user.")

note_tags_source = FileSource(
    name="note_tags_source",
    path=str(_RUN.feature_table("note_tags")),
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
note_stats_source = FileSource(
    name="note_stats_source",
    path=str(_RUN.feature_table("note_stats")),
    timestamp_field="event_timestamp",
)
user_interests_source = FileSource(
    name="user_interests_source",
    path=str(_RUN.feature_table("user_interests")),
    timestamp_field="event_timestamp",
)

# Fresh tags of a just-published note go straight to the online store through this source.
note_tags_push = PushSource(name="note_tags_push", batch_source=note_tags_source)

note_tags = FeatureView(
    name="note_tags",
    entities=[note],
    ttl=timedelta(0),  # tags describe immutable content: they never expire
    schema=[
        Field(name="tag_texts", dtype=Array(String)),
        Field(name="tag_ids", dtype=Array(Int64)),
        Field(name="tag_dimensions", dtype=Array(String)),
        Field(name="tag_confidences", dtype=Array(Float32)),
        Field(name="tagger_version", dtype=String),
        Field(name="n_tags", dtype=Int64),
    ],
    source=note_tags_push,
    online=True,
    description="Fine-grained tags of a note, aligned position by position; ids: 0 = padding.",
)

note_stats = FeatureView(
    name="note_stats",
    entities=[note],
    ttl=timedelta(days=30),
    schema=[
        Field(name="impressions", dtype=Int64),
        Field(name="clicks", dtype=Int64),
        Field(name="engagements", dtype=Int64),
        Field(name="ctr", dtype=Float64),
        Field(name="age_days", dtype=Float64),
        Field(name="created_at_s", dtype=Int64),
        Field(name="is_cold_start", dtype=Bool),
    ],
    source=note_stats_source,
    online=True,
    description="Cumulative counts at the end of each day with events; age at that time; cold-start flag.",
)

user_interests = FeatureView(
    name="user_interests",
    entities=[user],
    ttl=timedelta(days=30),
    schema=[
        Field(name="top_tags", dtype=Array(String)),
        Field(name="top_tag_ids", dtype=Array(Int64)),
        Field(name="top_tag_weights", dtype=Array(Float32)),
        Field(name="top_dimensions", dtype=Array(String)),
        Field(name="top_dimension_weights", dtype=Array(Float32)),
        Field(name="n_engagements", dtype=Int64),
    ],
    source=user_interests_source,
    online=True,
    description="Top tags/dimensions with time-decayed weights from the user's engagements.",
)

retrieval = FeatureService(
    name="retrieval",
    features=[
        note_tags[["tag_ids", "tag_confidences"]],
        user_interests[["top_tag_ids", "top_tag_weights"]],
    ],
    description="Two-tower retrieval: tag ids and weights for the note and user towers.",
)
ranking = FeatureService(
    name="ranking",
    features=[note_tags, note_stats, user_interests],
    description="LightGBM ranker: every tag, stats and interest feature.",
)
serving = FeatureService(
    name="serving",
    features=[note_tags, user_interests],
    description="gRPC GetNoteTags / GetUserInterests.",
)
