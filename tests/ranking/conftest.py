"""Tiny in-memory runs for the ranking tests (no run directory needed)."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.data import ENGAGEMENT_WEIGHTS, Interactions, NoteCatalog, RunData


def make_tiny_data(
    seed: int = 0, n_users: int = 40, n_notes: int = 120, n_tags: int = 30, n_events: int = 3000
) -> RunData:
    """Users prefer a few tags; they click notes carrying them. Notes created over 30 days; cutoff day 24."""
    rng = np.random.default_rng(seed)
    day = 86400.0
    n_tag_per_note = rng.integers(1, 4, n_notes)
    ptr = np.concatenate([[0], np.cumsum(n_tag_per_note)])
    vals = rng.integers(1, n_tags + 1, int(ptr[-1]))
    category = (vals[ptr[:-1]] % 4) + 1
    created = np.sort(rng.uniform(0, 30 * day, n_notes))
    catalog = NoteCatalog(
        note_ids=np.array([f"n{i:04d}" for i in range(n_notes)]),
        category=category.astype(np.int64),
        created_s=created,
        tag_ptr=ptr.astype(np.int64),
        tag_vals=vals.astype(np.int64),
        tag_conf=rng.uniform(0.5, 1.0, len(vals)).astype(np.float32),
        tag_dims=((vals % 5) + 1).astype(np.int64),
        vocab={f"t{i}": i for i in range(1, n_tags + 1)},
        categories=["a", "b", "c", "d"],
        dimensions=["d1", "d2", "d3", "d4", "d5"],
        tag_source="teacher",
        index={f"n{i:04d}": i for i in range(n_notes)},
    )
    likes = [set(rng.choice(np.arange(1, n_tags + 1), 4, replace=False).tolist()) for _ in range(n_users)]
    users, notes, ts, events = [], [], [], []
    for _ in range(n_events):
        u = int(rng.integers(n_users))
        t = float(rng.uniform(0, 30 * day))
        avail = np.flatnonzero(created <= t)
        if not len(avail):
            continue
        n = int(rng.choice(avail))
        users.append(u)
        notes.append(n)
        ts.append(t)
        events.append("impression")
        tags = set(vals[ptr[n] : ptr[n + 1]].tolist())
        if tags & likes[u] and rng.random() < 0.8:
            users.append(u)
            notes.append(n)
            ts.append(t + 5.0)
            events.append("click" if rng.random() < 0.7 else "like")
    u_arr, n_arr, t_arr, e_arr = (
        np.array(users),
        np.array(notes),
        np.array(ts),
        np.array(events, dtype=object),
    )
    order = np.lexsort((t_arr, u_arr))
    w = np.array([ENGAGEMENT_WEIGHTS.get(e, 0.0) for e in e_arr], dtype=np.float32)
    inter = Interactions(u_arr[order], n_arr[order], t_arr[order], e_arr[order], w[order])
    return RunData(catalog, np.array([f"u{i:03d}" for i in range(n_users)]), inter, 24 * day, "tiny")


@pytest.fixture
def tiny_data() -> RunData:
    return make_tiny_data()


@pytest.fixture(scope="module")
def trained():
    """(two-tower model, ranker) trained on the tiny run: the recommender tests' models, once per module."""
    from ranking.data import build_training_examples
    from ranking.ranker import RankerConfig, ranker_features, ranking_examples, train_ranker
    from ranking.retrieval.train import TrainConfig, train

    data = make_tiny_data()
    ex = build_training_examples(data)
    model = train(data, ex, TrainConfig(feature_set="tags", epochs=3, batch_size=64))
    rex = ranking_examples(data, 0.0, data.cutoff_s, RankerConfig(n_estimators=20))
    ranker = train_ranker(ranker_features(data, rex, model), rex, RankerConfig(n_estimators=20))
    return model, ranker
