"""Feature tables from canonical tables + tags (no Feast involved)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from features.compute import FeatureConfig, compute_feature_tables, user_interests_table
from features.errors import ConfigError, NotFoundError
from features.vocab import TagVocabulary
from tests.features.conftest import T0, make_tiny_run


def test_vocab_is_sorted_with_padding_zero(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    ft = compute_feature_tables(run.path)
    texts = sorted(ft.vocab)
    assert list(ft.vocab) == texts and ft.vocab.tokens[0] == "<pad>"
    assert [ft.vocab[t] for t in texts] == list(range(1, len(texts) + 1))
    first = ft.note_tags.iloc[0]
    assert first["tag_ids"] == [ft.vocab[t] for t in first["tag_texts"]]
    assert ft.figures["tags_out_of_vocab"] == 0 and ft.figures["tags_table"] == "teacher_tags"


def test_tagger_vocab_and_student_tags_win(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    student = run.read_table("teacher_tags").assign(tagger="student", tagger_version="s1")
    run.write_tables(
        {
            **{n: run.read_table(n) for n in ("notes", "users", "interactions", "teacher_tags")},
            "tags": student,
        }
    )
    # The vocabulary exactly as the tagger writes it (the contract between tagging and features).
    vocab = TagVocabulary().extend(["x1", "x2", "x3", "x4", "x5", "x6", "ramen", "x8", "hiking"])
    vocab.save(run.path / "tag_vocab.json")
    ft = compute_feature_tables(run.path)
    assert ft.tags_table == "tags" and set(ft.note_tags["tagger_version"]) == {"s1"}
    ids = dict(zip(ft.note_tags["tag_texts"].explode(), ft.note_tags["tag_ids"].explode(), strict=True))
    assert ids["ramen"] == vocab.id("ramen") == 7 and ids["hiking"] == vocab.id("hiking") == 9
    assert ids["tent"] == 0  # unknown -> padding
    assert ft.figures["tags_out_of_vocab"] > 0


def test_bad_vocab_file_names_expected_form(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps({"tokens": ["<pad>", 3]}))
    with pytest.raises(ConfigError, match="expected"):
        TagVocabulary.load(tmp_path / "v.json")


def test_missing_tags_names_both_tables(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    run.table_path("teacher_tags").unlink()
    with pytest.raises(NotFoundError, match=r"tags\.parquet.*teacher_tags\.parquet"):
        compute_feature_tables(run.path)


def test_note_stats_cumulative_at_day_end_and_cold_start(tmp_path):
    run = make_tiny_run(tmp_path / "run")
    ft = compute_feature_tables(run.path)
    st = ft.note_stats
    inter = run.read_table("interactions")
    for nid, g in st.groupby("note_id"):
        assert g["event_timestamp"].is_monotonic_increasing
        assert g["impressions"].is_monotonic_increasing and g["clicks"].is_monotonic_increasing
        last = g.iloc[-1]
        mine = inter[inter["note_id"] == nid]
        assert last["impressions"] == (mine["event"] == "impression").sum()
        assert last["clicks"] == (mine["event"] == "click").sum()
        # every count at time T only uses events at or before T (no leakage)
        for _, row in g.iterrows():
            seen = mine[mine["ts"] <= row["event_timestamp"]]
            assert row["impressions"] == (seen["event"] == "impression").sum()
    notes = run.read_table("notes").set_index("note_id")
    cold = st.drop_duplicates("note_id").set_index("note_id")["is_cold_start"]
    assert (cold == (notes.loc[cold.index, "created_at"] >= T0 + pd.Timedelta(days=5))).all()
    assert cold.any() and not cold.all()


def test_user_interest_weights_decay_exactly():
    tags = pd.DataFrame(
        {"note_id": ["a"], "tag_texts": [["x"]], "tag_dimensions": [["d"]], "tag_confidences": [[0.5]]}
    )
    day = pd.Timestamp("2026-01-01T12:00:00Z")
    inter = pd.DataFrame(
        {
            "user_id": ["u", "u", "u"],
            "note_id": ["a", "a", "a"],
            "ts": [day, day + pd.Timedelta(days=10), day + pd.Timedelta(days=10, hours=1)],
            "event": ["click", "share", "impression"],
        }
    )
    cfg = FeatureConfig(half_life_days=10.0)
    out = user_interests_table(inter, tags, TagVocabulary.sorted_of({"x"}), cfg)
    assert len(out) == 2 and out["n_engagements"].tolist() == [1, 2]
    end0 = (day.floor("D") + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)).timestamp()
    end1 = end0 + 10 * 86400
    tau = 10 * 86400 / math.log(2)
    w0 = 1.0 * 0.5 * math.exp(-(end0 - day.timestamp()) / tau)
    w1 = w0 * 0.5 + 4.0 * 0.5 * math.exp(-(end1 - (day + pd.Timedelta(days=10)).timestamp()) / tau)
    assert out["top_tag_weights"][0] == pytest.approx([w0], rel=1e-5)
    assert out["top_tag_weights"][1] == pytest.approx([w1], rel=1e-5)
    assert out["top_tag_ids"][1] == [1] and out["top_dimensions"][1] == ["d"]


@pytest.mark.parametrize(("field", "value"), [("half_life_days", 0), ("top_k_tags", 0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        FeatureConfig(**{field: value})


def test_features_package_does_not_import_feast_or_siblings():
    code = (
        "import sys, features.compute, features.feast_repo, features.client, features.features_cli\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('feast', 'tagging', 'ranking', 'tagllm')]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
