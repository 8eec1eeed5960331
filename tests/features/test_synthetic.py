"""The synthetic community: schema, determinism, multimodal attributes, noisy tags, click signal."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from features.datasets import load_source
from features.datasets.synthetic import load
from features.datasets.synthetic.phrases import BODY_FRAMES, BOILERPLATE, TITLE_TEMPLATES, generic_texts
from features.datasets.synthetic.taxonomy import build_taxonomy, check_taxonomy, form_pattern
from features.errors import ConfigError
from features.schemas import validate_tables


@pytest.fixture(scope="module")
def tiny():
    return load(size="tiny", seed=0)


def _forms(ds) -> dict[tuple[str, str, str], list[str]]:
    tax = ds.ground_truth["taxonomy"]
    return {(r.category, r.dimension, r.value): list(r.surface_forms) for r in tax.itertuples()}


def _mentions(text: str, forms: list[str]) -> bool:
    return any(form_pattern(f).search(text) for f in forms)


def test_tables_validate_and_ground_truth_is_complete(tiny):
    tables = validate_tables(tiny.tables)
    assert set(tables) == {"notes", "users", "interactions"}
    assert set(tiny.ground_truth) >= {"taxonomy", "note_attributes", "user_preferences", "boilerplate"}
    assert {"seed", "size", "n_notes", "n_users", "days", "cold_start_cutoff", "generator_version"} <= set(
        tiny.info
    )
    assert len(tables["notes"]) == tiny.info["n_notes"] == 300
    assert len(tables["users"]) == tiny.info["n_users"] == 120
    assert 10_000 <= len(tables["interactions"]) <= 20_000
    # every true value is in the taxonomy; every note has 2-4 attributes, at most one per dimension
    attrs = tiny.ground_truth["note_attributes"]
    known = set(_forms(tiny))
    assert all((r.category, r.dimension, r.value) in known for r in attrs.itertuples())
    per_note = attrs.groupby("note_id").size()
    assert per_note.between(2, 4).all() and len(per_note) == 300
    assert not attrs.duplicated(["note_id", "dimension"]).any()
    # ground truth never leaks into the tables
    assert "channel" not in tables["notes"].columns and "weight" not in tables["users"].columns


def test_load_source_registry_reaches_the_generator():
    ds = load_source("synthetic", size="tiny", seed=0, n_notes=40, n_users=15)
    assert len(ds.tables["notes"]) == 40 and len(ds.tables["users"]) == 15


def test_same_seed_gives_identical_tables_and_other_seeds_differ():
    a, b, c = load(size="tiny", seed=7), load(size="tiny", seed=7), load(size="tiny", seed=8)
    for name in ("notes", "users", "interactions"):
        assert a.tables[name].equals(b.tables[name]), name
        assert not a.tables[name].equals(c.tables[name]), name
    for name in a.ground_truth:
        assert a.ground_truth[name].equals(b.ground_truth[name]), name
    assert a.info["cold_start_cutoff"] == b.info["cold_start_cutoff"]


def test_image_only_attributes_are_only_in_captions(tiny):
    notes = tiny.tables["notes"].set_index("note_id")
    attrs = tiny.ground_truth["note_attributes"]
    forms = _forms(tiny)
    assert 0.15 <= (attrs["channel"] == "image").mean() <= 0.35
    for r in attrs[attrs["channel"] == "image"].itertuples():
        text = notes.at[r.note_id, "title"] + "\n" + notes.at[r.note_id, "body"]
        assert not _mentions(text, forms[(r.category, r.dimension, r.value)]), (r.note_id, r.value, text)
    # image-visible attributes are shown in the captions, text-visible ones (bar typos) in the text
    for r in attrs[attrs["channel"] != "text"].itertuples():
        assert _mentions(
            " | ".join(notes.at[r.note_id, "image_captions"]), forms[(r.category, r.dimension, r.value)]
        )
    visible = attrs[attrs["channel"] != "image"]
    found = [
        _mentions(
            notes.at[r.note_id, "title"] + " " + notes.at[r.note_id, "body"],
            forms[(r.category, r.dimension, r.value)],
        )
        for r in visible.itertuples()
    ]
    assert np.mean(found) > 0.95


def test_text_is_varied_and_noisy(tiny):
    notes = tiny.tables["notes"]
    assert len(BODY_FRAMES) >= 15 and len(TITLE_TEMPLATES) >= 8
    assert notes["title"].nunique() > 0.9 * len(notes)
    assert notes["body"].nunique() == len(notes)
    assert notes["image_captions"].map(len).between(1, 3).all()
    assert (notes["title"].str.len() > 0).all() and (notes["body"].str.len() > 0).all()


def test_boilerplate_hashtags_span_categories(tiny):
    notes = tiny.tables["notes"]
    boiler = set(tiny.ground_truth["boilerplate"]["hashtag"])
    assert boiler == set(BOILERPLATE)
    has = notes["reference_tags"].map(lambda tags: any(t in boiler for t in tags))
    assert has.mean() > 0.8
    assert notes.loc[has, "category"].nunique() == notes["category"].nunique() >= 8
    assert not notes["reference_tags"].map(lambda tags: any(t.startswith("#") or not t for t in tags)).any()
    # creators also tag some true attributes
    assert notes["reference_tags"].map(lambda tags: any(t not in boiler for t in tags)).mean() > 0.5


def test_taxonomy_is_fine_grained_and_unambiguous():
    taxonomy = build_taxonomy()
    assert check_taxonomy(taxonomy, generic_texts()) == []
    assert len(taxonomy.categories) >= 8
    assert all(1 <= len(v.forms) <= 3 for v in taxonomy.values)
    assert any(len(v.forms) > 1 for v in taxonomy.values)


def test_clicks_follow_the_fine_grained_match_within_a_category(tiny):
    it = tiny.tables["interactions"]
    notes = tiny.tables["notes"][["note_id", "category"]]
    gt = tiny.ground_truth
    pairs = it.loc[it["event"] == "impression", ["user_id", "note_id"]].drop_duplicates()
    clicked = it.loc[it["event"] == "click", ["user_id", "note_id"]].drop_duplicates().assign(clicked=1)
    pairs = pairs.merge(clicked, how="left").fillna({"clicked": 0}).merge(notes)
    hits = gt["note_attributes"].merge(gt["user_preferences"], on=["category", "dimension", "value"])
    hits = hits[["user_id", "note_id"]].drop_duplicates().assign(match=1)
    pairs = pairs.merge(hits, how="left").fillna({"match": 0})
    preferred = gt["user_categories"][["user_id", "category"]]
    pairs = pairs.merge(preferred)  # only impressions in the user's own categories
    rates = pairs.groupby("match")["clicked"].mean()
    assert rates[1] > 2 * rates[0], rates
    by_cat = pairs.groupby(["category", "match"])["clicked"].agg(["mean", "size"]).unstack()
    enough = by_cat[(by_cat["size"] >= 30).all(axis=1)]
    assert len(enough) >= 5
    assert (enough["mean"][1] > enough["mean"][0]).all()


def test_cold_start_notes_and_timestamps(tiny):
    notes, it = tiny.tables["notes"], tiny.tables["interactions"]
    cutoff = pd.Timestamp(tiny.info["cold_start_cutoff"])
    cold = notes.loc[notes["created_at"] > cutoff, "note_id"]
    assert 0.05 < len(cold) / len(notes) < 0.25
    assert it["note_id"].isin(cold).sum() > 0
    joined = it.merge(notes[["note_id", "created_at"]], on="note_id")
    assert (joined["ts"] >= joined["created_at"]).all()
    assert (it["ts"] <= pd.Timestamp(tiny.info["end"])).all()
    users = tiny.tables["users"]
    new = users["segment"] == "new"
    assert new.any() and (users.loc[new, "created_at"] > pd.Timestamp(tiny.info["start"])).all()


def test_dwell_only_on_clicks(tiny):
    it = tiny.tables["interactions"]
    is_click = it["event"] == "click"
    assert it.loc[is_click, "dwell_seconds"].notna().all()
    assert (it.loc[is_click, "dwell_seconds"] >= 0).all()
    assert it.loc[~is_click, "dwell_seconds"].isna().all()
    assert set(it["event"]) == {"impression", "click", "like", "collect", "comment", "share"}


def test_overrides_and_tiny_counts_work():
    ds = load(size="tiny", n_notes=3, n_users=2, days=2, seed=1)
    tables = validate_tables(ds.tables)
    assert len(tables["notes"]) == 3 and len(tables["users"]) == 2 and ds.info["days"] == 2


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"size": "huge"}, "size"),
        ({"n_notes": 0}, "n_notes"),
        ({"n_users": -5}, "n_users"),
        ({"days": 0}, "days"),
        ({"n_notes": 2.5}, "n_notes"),
        ({"seed": -1}, "seed"),
        ({"seed": "abc"}, "seed"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_options_raise_config_error_naming_the_option(options, named):
    with pytest.raises(ConfigError, match=named) as err:
        load(**options)
    if named == "size":
        assert "tiny" in str(err.value) and "large" in str(err.value)


def test_a_path_is_refused():
    with pytest.raises(ConfigError, match="path"):
        load("/tmp/somewhere", size="tiny")


@pytest.mark.slow
def test_small_is_the_default_and_fast_enough():
    began = time.perf_counter()
    ds = load()
    elapsed = time.perf_counter() - began
    assert elapsed < 60
    assert ds.info["size"] == "small" and len(ds.tables["notes"]) == 4_000
    assert 200_000 <= len(ds.tables["interactions"]) <= 300_000
    validate_tables(ds.tables)
