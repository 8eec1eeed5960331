"""Retrieval training from Feast point-in-time training sets (``feature_source="feast"``).

One tiny hand-made run (tests/features/conftest.py) whose tag vocabulary (RUN/tag_vocab.json) orders
the tags differently from the catalog, so the Feast -> catalog id mapping is exercised; the store is
built by the demo's own ``features`` stage (compute + apply + materialize).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from features.compute import FeatureConfig, note_tags_table, user_interests_table
from features.errors import ConfigError, NotFoundError
from features.io import RunDir
from features.vocab import TagVocabulary
from ranking.data import load_run_data
from ranking.feast_data import FeastInterests, feast_training_examples
from tests.features.conftest import make_tiny_run
from tests.ranking.conftest import make_tiny_data

torch.set_num_threads(1)

# Feast ids in another order than the catalog's sorted vocabulary, plus a text no note carries.
_TOKENS = ["<pad>", "trail", "unused-tag", "tent", "spicy", "ramen", "matcha", "hiking"]


@pytest.fixture(scope="module")
def feast_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from features.feast_repo import feature_stage

    run = make_tiny_run(tmp_path_factory.mktemp("feast_train") / "run")
    (run.path / "tag_vocab.json").write_text(json.dumps({"version": 1, "tokens": _TOKENS}))
    feature_stage(run.path)
    return run.path


@pytest.fixture(scope="module")
def feast_examples(feast_run: Path):
    data = load_run_data(RunDir(feast_run), "teacher")
    return data, feast_training_examples(RunDir(feast_run), data)


def _pit_row(table: pd.DataFrame, user: str, t: pd.Timestamp) -> pd.Series | None:
    """The latest row of ``user`` with event_timestamp <= t within the view's 30-day TTL."""
    rows = table[
        (table["user_id"] == user)
        & (table["event_timestamp"] <= t)
        & (table["event_timestamp"] >= t - pd.Timedelta(days=30))
    ]
    return None if rows.empty else rows.sort_values("event_timestamp").iloc[-1]


def _label_time(ts: float) -> pd.Timestamp:
    return pd.Timestamp(int(np.floor(ts * 1e6)), unit="us", tz="UTC")


def test_feast_bag_equals_the_pit_row(feast_run: Path, feast_examples) -> None:
    data, ex = feast_examples
    assert ex.user_tags is not None and len(ex.user_tags) == len(ex)
    # The Feast and catalog vocabularies differ: the mapping goes through the texts.
    feast_vocab = TagVocabulary.load(feast_run / "features" / "tag_vocab.json")
    assert any(feast_vocab[t] != i for t, i in data.catalog.vocab.items())
    table = pd.read_parquet(feast_run / "features" / "user_interests.parquet")
    checked = nonempty = 0
    for i in range(len(ex)):
        row = _pit_row(table, data.user_ids[ex.user[i]], _label_time(ex.ts[i]))
        lo, hi = ex.user_tags.ptr[i], ex.user_tags.ptr[i + 1]
        got = dict(zip(ex.user_tags.vals[lo:hi].tolist(), ex.user_tags.weight[lo:hi].tolist(), strict=True))
        want = (
            {}
            if row is None
            else {
                data.catalog.vocab[t]: w for t, w in zip(row["top_tags"], row["top_tag_weights"], strict=True)
            }
        )
        assert got.keys() == want.keys(), i
        assert np.allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-5), i
        checked += 1
        nonempty += bool(want)
    assert checked == len(ex) and nonempty > len(ex) // 2


def test_feast_bag_is_point_in_time(feast_run: Path, feast_examples) -> None:
    """Recompute the profiles from engagements strictly before each label time only: same bag, so
    nothing at or after ``t`` (the positive itself included) leaks into it."""
    data, ex = feast_examples
    run = RunDir(feast_run)
    notes, inter = run.read_table("notes"), run.read_table("interactions")
    tags = run.read_table("teacher_tags", check=False)
    vocab = TagVocabulary.load(feast_run / "tag_vocab.json")
    nt = note_tags_table(notes, tags, vocab)
    inv = {i: t for t, i in data.catalog.vocab.items()}
    full = pd.read_parquet(feast_run / "features" / "user_interests.parquet")
    leaky = 0
    for i in range(0, len(ex), max(1, len(ex) // 12)):
        user, t = data.user_ids[ex.user[i]], _label_time(ex.ts[i])
        before = inter[(inter["user_id"] == user) & (inter["ts"] < t)]
        lo, hi = ex.user_tags.ptr[i], ex.user_tags.ptr[i + 1]
        got = {inv[v]: w for v, w in zip(ex.user_tags.vals[lo:hi], ex.user_tags.weight[lo:hi], strict=True)}
        past = user_interests_table(before, nt, vocab, FeatureConfig()) if len(before) else None
        row = None if past is None or past.empty else _pit_row(past, user, t)
        want = {} if row is None else dict(zip(row["top_tags"], row["top_tag_weights"], strict=True))
        assert got.keys() == want.keys(), (i, got, want)
        assert np.allclose([got[k] for k in want], [want[k] for k in want], rtol=1e-5)
        # And the bag only holds tags of notes the user engaged with before t.
        engaged = before.loc[before["event"] != "impression", "note_id"]
        seen = {t for ts in nt.loc[nt["note_id"].isin(engaged), "tag_texts"] for t in ts}
        assert set(got) <= seen
        # The snapshot stamped at the end of t's own day (which includes the positive) differs.
        day_end = t.floor("D") + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
        late = _pit_row(full, user, day_end)
        leaky += late is not None and dict(zip(late["top_tags"], late["top_tag_weights"], strict=True)) != got
    assert leaky > 0  # the check above would catch a one-day leak


def test_encoder_uses_the_feast_bag(feast_examples) -> None:
    from ranking.retrieval.model import FeatureEncoder

    data, ex = feast_examples
    enc = FeatureEncoder(data, "tags", ex.user, ex.note)
    i = int(np.argmax(np.diff(ex.user_tags.ptr)))
    kjt = enc.encode(ex.take(np.array([i])))
    bag = kjt["u_tags"]
    lo, hi = ex.user_tags.ptr[i], ex.user_tags.ptr[i + 1]
    assert bag.values().tolist() == ex.user_tags.vals[lo:hi].tolist()
    w = ex.user_tags.weight[lo:hi]
    assert np.allclose(bag.weights().numpy(), w / w.sum(), rtol=1e-5)
    # Without the bag the encoder falls back to the history notes' tags (a different bag here).
    kjt_hist = enc.encode(ex.with_user_tags(None).take(np.array([i])))
    assert kjt_hist["u_tags"].values().tolist() != bag.values().tolist()


def test_train_from_feast_a_few_steps(feast_run: Path, feast_examples) -> None:
    from ranking.feast_data import feast_user_interests
    from ranking.retrieval.train import TrainConfig, train

    data, ex = feast_examples
    result = train(data, ex, TrainConfig(epochs=3, batch_size=8, max_steps=4))
    assert len(result.losses) == 4 and np.isfinite(result.losses).all()
    users = np.unique(ex.user)
    at_cutoff = feast_user_interests(RunDir(feast_run), data, users, np.full(len(users), data.cutoff_s))
    bags, figures = at_cutoff.bags(data.catalog)
    emb = result.user_embeddings(users, data.cutoff_s, user_tags=bags)
    assert emb.shape == (len(users), result.model.config.vector_dim) and np.isfinite(emb).all()
    assert figures["dropped_not_in_catalog"] == 0 and figures["tag_entries"] > 0


def test_retrieval_stage_feast(feast_run: Path) -> None:
    from ranking.pipeline import retrieval_stage
    from ranking.retrieval.train import TrainConfig

    fig = retrieval_stage(
        feast_run,
        tag_sources=["teacher"],
        config=TrainConfig(epochs=1, batch_size=8),
        peers=False,
        feature_source="feast",
    )
    assert fig["feature_source"] == "feast" and fig["main_model"] == "tags:teacher"
    assert fig["feast"]["train_rows"] == fig["examples"]
    assert fig["feast"]["mapping"]["tags:teacher"]["dropped_not_in_catalog"] == 0
    assert "cold_recall@50_all" in fig


def test_bags_map_by_text_and_drop_unknown_ids() -> None:
    catalog = make_tiny_data().catalog  # vocab t1..t30 -> 1..30
    fi = FeastInterests(
        ptr=np.array([0, 3, 3, 5]),
        ids=np.array([1, 2, 3, 2, 9]),
        weight=np.array([0.5, 0.3, 0.2, 1.0, 0.4], np.float32),
        feast_texts={1: "t7", 2: "not-in-catalog", 3: "t1", 9: "t30"},
        rows_without_snapshot=1,
        seconds=0.0,
    )
    bags, fig = fi.bags(catalog)
    assert bags.ptr.tolist() == [0, 2, 2, 3]
    assert bags.vals.tolist() == [7, 1, 30]
    assert np.allclose(bags.weight, [0.5, 0.2, 0.4])
    assert fig == {"tag_entries": 5, "dropped_not_in_catalog": 2, "rows_without_snapshot": 1, "empty_bags": 1}


def test_run_without_store_names_it(tmp_path: Path) -> None:
    from ranking.cli import train as train_group
    from ranking.pipeline import retrieval_stage

    run = make_tiny_run(tmp_path / "run")
    with pytest.raises(NotFoundError, match=r"feast/registry\.db.*tagllm features apply --run"):
        feast_training_examples(run, load_run_data(run, "teacher"))
    with pytest.raises(NotFoundError, match="no Feast store"):
        retrieval_stage(run.path, tag_sources=["teacher"], feature_source="feast")
    res = CliRunner().invoke(train_group, ["retrieval", str(run.path), "--feature-source", "feast"])
    assert isinstance(res.exception, NotFoundError) and "registry.db" in str(res.exception)
    res = CliRunner().invoke(train_group, ["retrieval", str(run.path), "--feature-source", "redis"])
    assert res.exit_code == 2 and "parquet" in res.output
    with pytest.raises(ConfigError, match="feature_source"):
        retrieval_stage(run.path, tag_sources=["teacher"], feature_source="online")
