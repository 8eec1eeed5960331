from __future__ import annotations

import numpy as np
import pytest

from features.errors import ConfigError
from ranking.data import build_training_examples, user_states
from ranking.retrieval.evaluate import (
    EmbeddingScorer,
    auc,
    evaluate_retrieval,
    gauc,
    group_ndcg,
    retrieval_test_set,
)


def test_history_is_strictly_before_example(tiny_data):
    data, ex = tiny_data, build_training_examples(tiny_data)
    inter = data.interactions
    for i in range(0, len(ex), max(1, len(ex) // 25)):
        h = ex.hist_note[ex.hist_ptr[i] : ex.hist_ptr[i + 1]]
        m = (inter.user == ex.user[i]) & (inter.ts < ex.ts[i]) & (inter.weight > 0)
        assert h.tolist() == inter.note[m][-30:].tolist()
    assert (ex.ts < data.cutoff_s).all()


def test_user_states_rejects_bad_history_len(tiny_data):
    with pytest.raises(ConfigError, match="history_len"):
        user_states(tiny_data, np.array([0]), np.array([1.0]), history_len=0)


def test_train_embeds_every_note_including_cold(tiny_data):
    from ranking.retrieval.train import TrainConfig, train

    data, ex = tiny_data, build_training_examples(tiny_data)
    result = train(data, ex, TrainConfig(epochs=3, batch_size=64, embedding_dim=8, hidden_dim=16, out_dim=8))
    assert result.losses[-1] < result.losses[0]
    items = result.item_embeddings()
    # 8 tower dims + 64 wide tag dims + 1 freshness bias (the default recipe)
    assert (
        items.shape
        == (data.catalog.num_notes, 8 + 64 + 1)
        == (data.catalog.num_notes, result.model.config.vector_dim)
    )
    cold = data.cold
    assert cold.any()
    # Cold notes embed from their tags: different tags, different vectors.
    assert np.unique(items[cold].round(4), axis=0).shape[0] > 1
    test = retrieval_test_set(data)
    m = evaluate_retrieval(
        EmbeddingScorer(result.user_embeddings(test.users, data.cutoff_s), test.users, items), test
    )
    assert 0 <= m["cold_recall@50"] <= 1


def test_train_config_errors_name_the_option():
    from ranking.retrieval.train import TrainConfig

    with pytest.raises(ConfigError, match="note_dropout"):
        TrainConfig(note_dropout=1.5)
    from ranking.retrieval.model import TwoTowerConfig

    with pytest.raises(ConfigError, match="feature_set"):
        TwoTowerConfig(num_users=1, num_notes=1, num_tags=1, num_categories=1, feature_set="bogus")


def test_metrics_small_cases():
    y = np.array([1, 0, 1, 0])
    assert auc(y, np.array([0.9, 0.1, 0.8, 0.2])) == 1.0
    assert auc(y, np.array([0.1, 0.9, 0.2, 0.8])) == 0.0
    assert np.isnan(auc(np.ones(3), np.arange(3)))
    g = np.array([0, 0, 1, 1])
    assert gauc(y, np.array([0.9, 0.1, 0.2, 0.8]), np.array([0, 0, 1, 1])) == 0.5
    assert group_ndcg(np.array([1.0, 0, 0, 1]), np.array([0.9, 0.1, 0.2, 0.8]), g) == 1.0


def test_index_exact_hnsw_ivf_agree_on_top1():
    from ranking.retrieval.index import NoteIndex

    rng = np.random.default_rng(0)
    v = rng.normal(size=(500, 16)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = [f"n{i}" for i in range(500)]
    q = v[:10]
    for kind in ("exact", "hnsw", "ivf"):
        index = NoteIndex.build(v, ids, kind=kind, nprobe=64)
        _, top = index.search(q, 5)
        assert [t[0] for t in top] == ids[:10]
    index = NoteIndex.build(v, ids)
    index.add(v[:1] * 1.0, ["new"])
    assert len(index) == 501
    with pytest.raises(ConfigError, match="kind"):
        NoteIndex.build(v, ids, kind="lsh")


def test_peers_score_shapes(tiny_data):
    from ranking.retrieval.peers import ALSScorer, PopularityScorer, TagOverlapScorer

    users = np.arange(3)
    notes = np.arange(10)
    for scorer in (
        PopularityScorer(tiny_data),
        ALSScorer(tiny_data, factors=4, iterations=2),
        TagOverlapScorer(tiny_data),
    ):
        assert scorer.scores(users, notes).shape == (3, 10)


def test_content_skip_scores_cold_notes_from_tags():
    """With the id dropped (0), a note embeds from category + tags alone, through the shared skip."""
    import torch
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    from ranking.retrieval.model import TwoTower, TwoTowerConfig

    torch.manual_seed(0)
    cfg = TwoTowerConfig(
        num_users=5, num_notes=9, num_tags=12, num_categories=3, embedding_dim=8, out_dim=8, content_skip=True
    )
    model = TwoTower(cfg).eval()
    assert model.content_proj is not None and model.content_proj.in_features == 2 * 8
    ids_only = TwoTower(
        TwoTowerConfig(
            num_users=5, num_notes=9, num_tags=12, num_categories=3, feature_set="ids", content_skip=True
        )
    )
    assert ids_only.content_proj is None

    def items(note_ids: list[int], tags: list[list[int]]) -> torch.Tensor:
        n = len(note_ids)
        keys = list(cfg.keys)
        bags = {"note_id": ([*note_ids], [1] * n), "i_cat": ([1] * n, [1] * n)}
        bags["i_tags"] = ([t for ts in tags for t in ts], [len(ts) for ts in tags])
        vals, lens = [], []
        for k in keys:
            v, ln = bags.get(k, ([], [0] * n))
            vals += v
            lens += ln
        kjt = KeyedJaggedTensor(
            keys=keys,
            values=torch.tensor(vals, dtype=torch.int64),
            weights=torch.cat([torch.full((sum(bags[k][1]) if k in bags else 0,), 1.0) for k in keys]),
            lengths=torch.tensor(lens, dtype=torch.int64),
        )
        with torch.no_grad():
            return model.item_embedding(kjt)

    # Two cold notes (id 0) with the same tags embed the same; different tags move the embedding.
    e = items([0, 0, 0], [[3], [3], [7]])
    assert torch.allclose(e[0], e[1])
    assert not torch.allclose(e[0], e[2])
    # The skip is part of the score: zeroing it changes the cold note's embedding.
    with torch.no_grad():
        model.content_proj.weight.zero_()
    assert not torch.allclose(items([0], [[3]])[0], e[0])


def test_with_cold_slots_merges_every_kth_slot():
    from ranking.retrieval.evaluate import with_cold_slots

    top = np.array([[0, 1, 2, 3, 4, 5]])
    cold_top = np.array([[9, 8, 7]])
    # every 3rd slot (indices 2 and 5) takes the next cold note; the others keep the model's order
    assert with_cold_slots(top, cold_top, 3).tolist() == [[0, 1, 9, 2, 3, 8]]
    # a cold note the model already ranked is not listed twice; the slot takes the next one
    assert with_cold_slots(np.array([[7, 0, 1, 2]]), np.array([[7, 6]]), 2).tolist() == [[7, 6, 0, 1]]
    # too few cold candidates: the slot falls back to the model's order
    assert with_cold_slots(np.array([[0, 1, 2, 3]]), np.array([[5]]), 1).tolist() == [[5, 0, 1, 2]]
    assert with_cold_slots(top, cold_top, 0).tolist() == top.tolist()


def test_quota_pool_lifts_cold_recall_of_a_warm_biased_scorer(tiny_data):
    data = tiny_data
    cold = data.cold

    class WarmFirst:
        """Scores every warm note above every cold one; among cold notes, the true positives first."""

        def __init__(self, test):
            self.pos = {
                int(u): set(p.tolist()) for u, p in zip(test.users, test.positives["cold"], strict=True)
            }

        def scores(self, users, notes):
            s = np.where(cold[notes], 0.0, 10.0)[None, :].repeat(len(users), axis=0)
            for j, u in enumerate(users):
                s[j, [i for i, n in enumerate(notes) if n in self.pos[int(u)]]] += 1.0
            return s

    shared = retrieval_test_set(data, pool="all")
    quota = retrieval_test_set(data, pool="quota", cold_quota=10)
    scorer = WarmFirst(shared)
    m_all = evaluate_retrieval(scorer, shared, ks=(50,))
    m_quota = evaluate_retrieval(scorer, quota, ks=(50,))
    assert m_quota["cold_users"] > 0
    assert m_all["cold_recall@50"] < m_quota["cold_recall@50"]
    assert m_quota["warm_recall@50"] <= m_all["warm_recall@50"]
    with pytest.raises(ConfigError, match="cold_quota"):
        retrieval_test_set(data, pool="quota", cold_quota=0)
    with pytest.raises(ConfigError, match="pool"):
        retrieval_test_set(data, pool="cold")


def test_evaluate_split_takes_cold_metrics_from_the_cold_scorer(tiny_data):
    from ranking.retrieval.evaluate import evaluate_split
    from ranking.retrieval.peers import PopularityScorer, TagOverlapScorer

    data = tiny_data
    test = retrieval_test_set(data, pool="segment")
    warm, cold = PopularityScorer(data), TagOverlapScorer(data)
    split = evaluate_split(warm, cold, test, ks=(10,))
    w, c = evaluate_retrieval(warm, test, ks=(10,)), evaluate_retrieval(cold, test, ks=(10,))
    assert set(split) == set(w)
    assert all(split[k] == (c[k] if k.startswith("cold_") else w[k]) for k in split)
    assert any(w[k] != c[k] for k in w if k.startswith("cold_recall"))  # the two differ: the test can fail


def test_user_exposure_is_the_last_impressions_strictly_before(tiny_data):
    """The exposure bag: each of the last k notes shown (impressions before ts) weighs the same, its
    tags by their share of its confidences; engagements are not impressions."""
    from ranking.data import EXPOSURE_LEN, exposure_bags, last_shown, tag_mass, user_exposure

    inter = tiny_data.interactions
    shown = inter.event == "impression"
    users = np.unique(inter.user[shown])[:5]
    ts = np.full(len(users), tiny_data.cutoff_s)
    ptr, notes = last_shown(tiny_data, users, ts, k=3)
    for i, u in enumerate(users):
        mine = shown & (inter.user == u) & (inter.ts < tiny_data.cutoff_s)
        assert notes[ptr[i] : ptr[i + 1]].tolist() == inter.note[mine][-3:].tolist()
    bags = user_exposure(tiny_data, users, ts, k=3)
    assert len(bags) == len(users)
    dense = bags.dense(tiny_data.catalog.num_tags)
    has = np.diff(ptr) > 0
    assert np.allclose(dense[has].sum(axis=1), 1.0) and np.all(dense[~has] == 0)
    # by hand for the first user: mean over its notes of conf / note mass
    c = tiny_data.catalog
    want = np.zeros(c.num_tags)
    for n in notes[ptr[0] : ptr[1]]:
        lo, hi = c.tag_ptr[n], c.tag_ptr[n + 1]
        np.add.at(want, c.tag_vals[lo:hi], c.tag_conf[lo:hi] / c.tag_conf[lo:hi].sum())
    assert np.allclose(dense[0], want / want.sum(), atol=1e-6)
    # empty rows, k validated, the default k, and the masses
    empty = exposure_bags(c, np.array([0, 0, 0]), np.zeros(0, np.int64))
    assert len(empty) == 2 and not empty.dense(c.num_tags).any()
    with pytest.raises(ConfigError, match="k: got 0"):
        last_shown(tiny_data, users, ts, k=0)
    assert np.all(np.diff(last_shown(tiny_data, users, ts)[0]) <= EXPOSURE_LEN)
    assert np.allclose(
        tag_mass(c, np.arange(3)), [c.tag_conf[c.tag_ptr[i] : c.tag_ptr[i + 1]].sum() for i in range(3)]
    )
