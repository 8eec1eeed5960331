"""The cold-start overlap term in the recommender: stored item vectors and the index leave its columns
out; cold-only searches and the cold-start channel score it sparsely from the live catalog (equal to the
dense columns) and pick cold notes by it; every returned score stays the shared query's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from features.errors import ConfigError
from ranking.recommend import Recommender
from ranking.recommend.overlap import ColdOverlap
from ranking.recommend.values import Filters
from ranking.retrieval.train import RetrievalModel


def _model(trained, weight: float, exposure: float = 0.0) -> RetrievalModel:
    model, _ = trained
    m = RetrievalModel(copy.deepcopy(model.model), model.encoder, model.data, model.config)
    m.set_cold_overlap(weight, exposure)
    return m


def _recommender(trained, weight: float, kind: str = "exact", exposure: float = 0.0) -> Recommender:
    model, ranker = trained
    m = _model(trained, weight, exposure)
    return Recommender(m, ranker, index_kind=kind, now_s=model.data.cutoff_s + 3600.0, cold_candidates=5)


def _add_copies(rec: Recommender, n: int = 30) -> None:
    notes = []
    for j in range(n):
        src = str(rec.catalog.note_ids[j % rec.num_notes])
        tags = rec.note_tags(src)
        notes.append((f"copy-{j}", rec.note_category(src), tags if j != 4 else []))  # one without tags
    rec.add_notes(notes)


def _dense_items(rec: Recommender, rows: np.ndarray) -> np.ndarray:
    """The model's full item vectors (overlap columns included) of live notes ``rows``."""
    towers = rec.towers
    towers._sync()
    with torch.no_grad():
        mass = towers.model.tag_mass(rows, towers.live.catalog)
        return towers.model.model.item_embedding(towers._encoder.encode(notes=rows), mass).numpy()


@pytest.mark.parametrize("exposure", [0.0, 0.5])
def test_sparse_cold_scores_equal_the_dense_columns_and_pick_cold_notes(trained, exposure):
    rec = _recommender(trained, 2.0, exposure=exposure)
    cfg = rec.towers.model.model.config
    assert cfg.has_cold_overlap and cfg.cold_overlap == 2.0 and cfg.shared_overlap == 0.0
    assert cfg.overlap_exposure == exposure and rec.towers.reads_exposure == (exposure > 0)
    _add_copies(rec)
    # stored vectors and the index leave the overlap columns out
    assert rec.items.shape[1] == cfg.vector_dim - cfg.overlap_dim == rec.index.index.d
    user = rec.user_ids()[0]
    u = rec.users.row(user)
    vector = rec.users.vector(u, rec.now_s)
    assert vector.shape == (cfg.vector_dim,)
    overlap = rec.towers.overlap
    rows = np.arange(rec.num_notes)
    dense = _dense_items(rec, rows)
    q_cold = cfg.query(vector, cold_only=True)
    sparse = overlap.cold_scores(rec.live, rows, vector)
    assert np.allclose(sparse, dense @ q_cold, atol=1e-4)
    assert np.allclose(rec.items @ rec.towers.query(vector), dense @ cfg.query(vector), atol=1e-5)
    id_less = rec.live.note_map == 0
    assert not np.allclose(sparse[id_less], (rec.items @ rec.towers.query(vector))[id_less])
    # cold-only: the top by the cold query, scored by the shared one
    notes, scores = rec.retrieve(user, 10, Filters(cold_start_only=True))
    cold = np.flatnonzero(rec.live.cold & ~np.isin(rows, rec.users.seen[u]))
    by_cold = cold[np.argsort(-(dense[cold] @ q_cold), kind="stable")][:10]
    assert set(notes.tolist()) == set(by_cold.tolist())
    assert np.allclose(scores, rec.items[notes] @ rec.towers.query(vector), atol=1e-5)
    # the shared search is the model's without the term; the channel adds cold notes picked by it
    main, main_scores = rec.retrieve(user, 20)
    plain = _recommender(trained, 0.0)
    _add_copies(plain)
    assert main[:20].tolist() == plain.retrieve(user, 20)[0][:20].tolist()
    extra = main[20:]
    assert len(extra) == 5 and rec.live.cold[extra].all()
    allowed = np.flatnonzero(rec.live.cold & ~np.isin(rows, [*rec.users.seen[u], *main[:20]]))
    assert set(extra.tolist()) == set(
        allowed[np.argsort(-(dense[allowed] @ q_cold), kind="stable")][:5].tolist()
    )
    assert np.allclose(main_scores, rec.items[main] @ rec.towers.query(vector), atol=1e-5)
    assert rec.recommend(user, k=5, filters=Filters(cold_start_only=True))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_narrow_vectors_survive_adds_and_retags(trained, kind):
    rec = _recommender(trained, 1.0, kind)
    _add_copies(rec, 10)
    src = str(rec.catalog.note_ids[1])
    rec.add_note("copy-3", rec.note_category(src), rec.note_tags(src))  # a re-tag: update or rebuild
    cfg = rec.towers.model.model.config
    assert rec.items.shape[1] == rec.index.index.d == cfg.vector_dim - cfg.overlap_dim
    assert len(rec.index) == rec.num_notes
    notes, _ = rec.retrieve(rec.user_ids()[0], 10)
    assert len(notes) == 15  # 10 + the cold-start channel's 5


def test_shared_overlap_is_refused_by_the_recommender(trained):
    m = _model(trained, 1.0)
    m.model.config = m.model.config.__class__(**{**m.model.config.__dict__, "shared_overlap": 0.5})
    with pytest.raises(ConfigError, match="shared_overlap"):
        ColdOverlap.of(m)
    assert ColdOverlap.of(_model(trained, 0.0)) is None


def test_impressions_move_the_cold_query_only_with_exposure(trained):
    """A model that reads what the user was shown keeps its last impressions per user (from the log,
    then live): an impression changes the cold-only query's user bag by -c b (its share), and the
    sparse cold scores follow; without exposure, impressions leave the user's vector alone."""
    rec = _recommender(trained, 2.0, exposure=0.5)
    data = rec.towers.model.data
    u = int(np.flatnonzero([len(s.shown) for s in rec.users.states])[0])
    user = rec.user_ids()[u]
    from ranking.data import last_shown

    _, shown = last_shown(data, np.array([u]), np.array([rec.now_s]))
    assert rec.users.states[u].shown.tolist() == shown.tolist()
    before = rec.users.vector(u, rec.now_s).copy()
    note = str(rec.catalog.note_ids[int(np.flatnonzero(np.diff(rec.catalog.tag_ptr) > 0)[0])])
    rec.observe(user, note, "impression")
    assert rec.users.states[u].shown[-1] == int(rec.live.rows([note])[0])
    after = rec.users.vector(u, rec.now_s)
    cfg = rec.towers.model.model.config
    tags = slice(cfg.overlap_slice.start, cfg.overlap_slice.start + cfg.num_tags)
    assert not np.allclose(before[tags], after[tags])
    keep = np.ones(cfg.vector_dim, bool)
    keep[tags] = False
    assert np.allclose(before[keep], after[keep], atol=1e-6)  # the towers and the category bag are as before
    rows = np.arange(rec.num_notes)
    dense = _dense_items(rec, rows)
    assert np.allclose(
        rec.towers.overlap.cold_scores(rec.live, rows, after),
        dense @ cfg.query(after, cold_only=True),
        atol=1e-4,
    )
    # without exposure: no impressions kept, the vector stays
    plain = _recommender(trained, 2.0)
    assert not plain.towers.reads_exposure and len(plain.users.states[u].shown) == 0
    v0 = plain.users.vector(u, plain.now_s).copy()
    plain.observe(user, note, "impression")
    assert plain.users.states[u].embedding is not None
    assert np.array_equal(plain.users.vector(u, plain.now_s), v0)
