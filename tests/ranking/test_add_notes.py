"""Recommender.add_notes (the batched cold-start add) equals add_note called note by note."""

from __future__ import annotations

import numpy as np
import pytest

from features.errors import ConfigError, NotFoundError
from tagging.types import Tag


def _fresh(trained, kind: str = "exact"):
    from ranking.recommend import Recommender
    from ranking.retrieval.train import RetrievalModel

    model, ranker = trained
    m = RetrievalModel(model.model, model.encoder, model.data, model.config)
    return Recommender(m, ranker, index_kind=kind, now_s=model.data.cutoff_s + 3600.0)


def _notes(rec, n: int = 40) -> list[tuple[str, str, list[Tag]]]:
    """Copies of existing notes' category + tags under new ids, plus a tag the model never saw and a
    note without tags."""
    out = []
    for j in range(n):
        src = str(rec.catalog.note_ids[j % rec.num_notes])
        tags = rec.note_tags(src)
        if j == 3:
            tags = [*tags, Tag("never seen", "d9", 0.4)]
        if j == 5:
            tags = []
        out.append((f"syn-{j}", rec.note_category(src), tags))
    return out


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
def test_add_notes_equals_add_note_one_by_one(trained, kind):
    one, many = _fresh(trained, kind), _fresh(trained, kind)
    notes = _notes(one)
    added_one = [one.add_note(n, c, t) for n, c, t in notes]
    added_many = many.add_notes(notes)
    assert added_many == added_one
    a, b = one.catalog, many.catalog
    for field in ("note_ids", "category", "created_s", "tag_ptr", "tag_vals", "tag_conf", "tag_dims"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.index == b.index and one.index.note_ids == many.index.note_ids
    assert np.array_equal(one.live.cold, many.live.cold)
    assert np.array_equal(one.live.note_map, many.live.note_map)
    for x, y in zip(one.live.note_stats, many.live.note_stats, strict=True):
        assert np.array_equal(x, y)
    np.testing.assert_allclose(one.items, many.items, rtol=1e-5, atol=1e-6)
    assert [one.note_tags(n) for n, _, _ in notes] == [many.note_tags(n) for n, _, _ in notes]
    for u in one.user_ids()[:10]:
        r1, r2 = one.recommend(u, 10, candidates=60), many.recommend(u, 10, candidates=60)
        assert [r.note_id for r in r1] == [r.note_id for r in r2]
        np.testing.assert_allclose([r.score for r in r1], [r.score for r in r2], rtol=1e-5, atol=1e-6)
        assert [r.reasons for r in r1] == [r.reasons for r in r2]


def test_add_notes_then_add_note_keeps_growing(trained):
    rec = _fresh(trained)
    before = rec.num_notes
    rec.add_notes(_notes(rec, 10))
    added = rec.add_note("after", rec.catalog.categories[0], [Tag("t1", "d1", 1.0)])
    assert added.index_size == before + 11 == rec.num_notes == len(rec.index)
    assert rec.add_notes([]) == [] and rec.num_notes == before + 11


def test_add_notes_refuses_present_repeated_or_bad_input_and_changes_nothing(trained):
    rec = _fresh(trained)
    n, cat = rec.num_notes, rec.catalog.categories[0]
    old = str(rec.catalog.note_ids[0])
    with pytest.raises(ConfigError, match="already present or repeated: 'n0000'"):
        rec.add_notes([("x1", cat, []), (old, cat, [])])
    with pytest.raises(ConfigError, match="'x1'"):
        rec.add_notes([("x1", cat, []), ("x1", cat, [])])
    with pytest.raises(ConfigError, match="note id ''"):
        rec.add_notes([("", cat, [])])
    with pytest.raises(NotFoundError, match="zzz"):
        rec.add_notes([("x2", cat, []), ("x3", "zzz", [])])
    assert rec.num_notes == n == len(rec.index) and not rec.has_note("x1") and not rec.has_note("x2")
