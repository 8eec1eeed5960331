"""The cold-start overlap term in the recommender: cold-only searches and the cold-start channel pick
cold notes with the cold query; every score (what the ranker reads) stays the shared query's."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from ranking.recommend import Recommender
from ranking.recommend.values import Filters
from ranking.retrieval.train import RetrievalModel


def _recommender(trained, weight: float, kind: str = "exact") -> Recommender:
    model, ranker = trained
    m = RetrievalModel(copy.deepcopy(model.model), model.encoder, model.data, model.config)
    m.set_cold_overlap(weight)
    return Recommender(m, ranker, index_kind=kind, now_s=model.data.cutoff_s + 3600.0, cold_candidates=5)


def _add_copies(rec: Recommender, n: int = 30) -> None:
    notes = []
    for j in range(n):
        src = str(rec.catalog.note_ids[j % rec.num_notes])
        notes.append((f"copy-{j}", rec.note_category(src), rec.note_tags(src)))
    rec.add_notes(notes)


def test_cold_only_search_uses_the_cold_query_and_shared_scores(trained):
    rec = _recommender(trained, 2.0)
    cfg = rec.towers.model.model.config
    assert cfg.has_cold_overlap and cfg.cold_overlap == 2.0 and cfg.shared_overlap == 0.0
    _add_copies(rec)
    user = rec.user_ids()[0]
    u = rec.users.row(user)
    vector = rec.users.vector(u, rec.now_s)
    q, q_cold = rec.towers.query(vector), rec.towers.query(vector, cold_only=True)
    assert not np.allclose(q, q_cold)
    # the index leaves the overlap columns out (the shared query multiplies them by 0)
    assert rec.index.index.d == cfg.vector_dim - cfg.overlap_dim == rec.items.shape[1] - cfg.overlap_dim
    notes, scores = rec.retrieve(user, 10, Filters(cold_start_only=True))
    cold = np.flatnonzero(rec.live.cold & ~np.isin(np.arange(rec.num_notes), rec.users.seen[u]))
    by_cold = cold[np.argsort(-(rec.items[cold] @ q_cold), kind="stable")][:10]
    assert set(notes.tolist()) == set(by_cold.tolist())
    assert np.allclose(scores, rec.items[notes] @ q, atol=1e-5)
    # the cold-start channel of a normal search: picked by the cold query, scored by the shared one
    main, main_scores = rec.retrieve(user, 20)
    plain = _recommender(trained, 0.0)
    _add_copies(plain)
    plain_main, _ = plain.retrieve(user, 20)
    assert main[:20].tolist() == plain_main[:20].tolist()  # the shared search is unchanged
    extra = main[20:]
    assert len(extra) == 5 and rec.live.cold[extra].all()
    assert np.allclose(main_scores, rec.items[main] @ q, atol=1e-5)
    # recommend works end to end with the term on
    assert rec.recommend(user, k=5, filters=Filters(cold_start_only=True))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_narrow_index_survives_adds_and_retags(trained, kind):
    rec = _recommender(trained, 1.0, kind)
    _add_copies(rec, 10)
    src = str(rec.catalog.note_ids[1])
    rec.add_note("copy-3", rec.note_category(src), rec.note_tags(src))  # a re-tag: update or rebuild
    cfg = rec.towers.model.model.config
    assert rec.index.index.d == rec.items.shape[1] - cfg.overlap_dim
    assert len(rec.index) == rec.num_notes
    notes, _ = rec.retrieve(rec.user_ids()[0], 10)
    assert len(notes) == 15  # 10 + the cold-start channel's 5
