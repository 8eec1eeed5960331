"""The in-memory recommend pipeline: retrieval + ranker + reasons + the cold-start path."""

from __future__ import annotations

import numpy as np
import pytest

from features.errors import ConfigError, NotFoundError
from ranking.recommend import Filters
from tagging.types import Tag


@pytest.fixture
def rec(trained):
    from ranking.recommend import Recommender
    from ranking.retrieval.train import RetrievalModel

    model, ranker = trained
    # The recommender owns what it changes: the trained model's data and encoder stay as they were.
    m = RetrievalModel(model.model, model.encoder, model.data, model.config)
    return Recommender(m, ranker)


def test_recommend_returns_k_unseen_sorted_with_reasons(rec):
    user = str(rec.user_ids()[0])
    out = rec.recommend(user, k=10)
    assert len(out) == 10
    scores = [r.score for r in out]
    assert scores == sorted(scores, reverse=True)
    u = rec.users.row(user)
    seen = {str(rec.catalog.note_ids[n]) for n in rec.users.seen[u]}
    assert not seen & {r.note_id for r in out}
    prof = rec.users.profile(u, rec.catalog)
    for r in out:  # every reason is a tag of the note that the user has weight on
        tags = {t.text for t in rec.note_tags(r.note_id)}
        assert set(r.reasons) <= tags
        assert all(rec.catalog.vocab[t] in prof for t in r.reasons)


def test_ranker_scores_match_offline_features(rec, trained):
    """Serving features (live counts, cached history) equal the offline point-in-time features."""
    from ranking.data import user_states
    from ranking.ranker import ranker_features

    user = str(rec.user_ids()[3])
    notes = [str(n) for n in rec.catalog.note_ids[:25]]
    got = {r.note_id: r.score for r in rec.rank(user, notes)}
    u = rec.users.row(user)
    idx = np.arange(25)
    ex = user_states(rec.data, np.full(25, u), np.full(25, rec.now_s), history_len=rec.history_len, note=idx)
    frame = ranker_features(rec.data, ex, rec.model)
    want = trained[1].predict(frame)
    np.testing.assert_allclose([got[n] for n in notes], want, rtol=1e-5, atol=1e-6)


def test_filters(rec):
    user = str(rec.user_ids()[1])
    out = rec.recommend(user, k=5, filters=Filters(categories=("b",)))
    assert out and all(r.category == "b" for r in out)
    cold = rec.recommend(user, k=5, filters=Filters(cold_start_only=True))
    assert cold and all(r.cold_start for r in cold)
    first = rec.recommend(user, k=3)
    again = rec.recommend(user, k=3, filters=Filters(exclude_note_ids=tuple(r.note_id for r in first)))
    assert not {r.note_id for r in first} & {r.note_id for r in again}
    with pytest.raises(NotFoundError, match=r"filters\.categories"):
        rec.recommend(user, k=3, filters=Filters(categories=("nope",)))


def test_bad_arguments_name_the_field(rec):
    with pytest.raises(NotFoundError, match="user_id"):
        rec.recommend("nobody", k=5)
    with pytest.raises(ConfigError, match="k:"):
        rec.recommend(str(rec.user_ids()[0]), k=0)
    with pytest.raises(NotFoundError, match="note_ids: 2 unknown"):
        rec.rank(str(rec.user_ids()[0]), ["n0001", "x1", "x2"])
    with pytest.raises(NotFoundError, match="category"):
        rec.add_note("new", "zzz", [])


def test_new_note_is_retrievable_at_once(rec):
    """A brand-new note carrying a user's favourite tags reaches that user's top list immediately."""
    user = str(rec.user_ids()[2])
    interests, _ = rec.user_interests(user, top_k=3)
    tags = [Tag(t, d, 1.0) for t, d, _ in interests] + [Tag("never-seen-tag", "d1", 0.5)]
    cat = rec.catalog.categories[0]
    before = len(rec.index)
    added = rec.add_note("fresh-1", cat, tags)
    assert added.index_size == before + 1 and not added.replaced
    assert added.unknown_tags == ("never-seen-tag",)
    assert rec.note_tags("fresh-1")[-1].text == "never-seen-tag"
    top = rec.recommend(user, k=10, filters=Filters(cold_start_only=True))
    assert "fresh-1" in [r.note_id for r in top]
    hit = next(r for r in top if r.note_id == "fresh-1")
    assert hit.cold_start and set(hit.reasons) <= {t for t, _, _ in interests}
    # Re-tagging replaces rather than duplicates.
    again = rec.add_note("fresh-1", cat, tags[:1])
    assert again.replaced and len(rec.index) == before + 1


def test_observe_updates_history_and_counts(rec):
    user = str(rec.user_ids()[4])
    note = str(rec.catalog.note_ids[7])
    u = rec.users.row(user)
    state = rec.users.states[u]
    n_hist = len(state.hist_note)
    clicks = rec.live.note_stats[1][7]
    rec.observe(user, note, "click")
    assert rec.live.note_stats[1][7] == clicks + 1
    assert state.embedding is None and len(state.hist_note) == min(n_hist + 1, rec.history_len)
    assert note not in [r.note_id for r in rec.recommend(user, k=50)]


def test_cold_start_channel_adds_cold_candidates(rec):
    """cold_candidates: extra candidates from cold notes the main search missed; state untouched."""
    user = rec.user_ids()[5]
    main, _ = rec.retrieve(user, 10)
    cold_before = rec.live.cold.copy()
    rec.cold_candidates = 5
    try:
        notes, scores = rec.retrieve(user, 10)
    finally:
        rec.cold_candidates = 0
    assert np.array_equal(notes[:10], main)
    extra = notes[10:]
    assert 0 < len(extra) <= 5
    assert rec.live.cold[extra].all() and not set(extra) & set(main)
    assert np.all(np.diff(scores[10:]) <= 1e-6)  # the channel's own order: best first
    assert np.array_equal(rec.live.cold, cold_before)
    # Only cold notes asked for: the channel adds nothing (the main search is already cold-only).
    rec.cold_candidates = 5
    try:
        only, _ = rec.retrieve(user, 10, Filters(cold_start_only=True))
    finally:
        rec.cold_candidates = 0
    assert len(only) <= 10


def test_cold_candidates_must_be_a_count(trained):
    from ranking.recommend import Recommender

    with pytest.raises(ConfigError, match="cold_candidates"):
        Recommender(trained[0], None, cold_candidates=-1)
    with pytest.raises(ConfigError, match="cold_slot_every"):
        Recommender(trained[0], None, cold_slot_every=-2)


def test_cold_slots_put_cold_notes_at_every_nth_position(rec):
    """cold_slot_every=3: slots 3, 6, 9 hold cold notes in the ranker's order; the rest is unchanged."""
    user = rec.user_ids()[6]
    plain = rec.recommend(user, k=12)
    rec.cold_candidates = 20
    try:
        ranked = rec.recommend(user, k=1000)  # the ranker's whole order over the same candidates
        rec.cold_slot_every = 3
        slotted = rec.recommend(user, k=12)
    finally:
        rec.cold_candidates, rec.cold_slot_every = 0, 0
    assert len(slotted) == 12 and len({r.note_id for r in slotted}) == 12
    assert all(slotted[i].cold_start for i in (2, 5, 8, 11))
    cold_in_order = [r.note_id for r in ranked if r.cold_start]
    fixed = [slotted[i].note_id for i in (2, 5, 8, 11)]
    # each cold slot takes the best-scored cold candidate not already listed above it
    rest = [r.note_id for i, r in enumerate(slotted) if i not in (2, 5, 8, 11)]
    assert [n for n in cold_in_order if n not in rest][:4] == fixed
    assert rest == [r.note_id for r in ranked if r.note_id not in fixed][:8]
    assert plain[0].note_id == slotted[0].note_id


def test_trained_model_is_left_as_it_was(rec, trained):
    """add_note grows the recommender's own catalog, not the model's data or encoder."""
    model = trained[0]
    notes, note_map = model.data.catalog.num_notes, model.encoder.note_map.copy()
    rec.add_note("fresh-own", rec.catalog.categories[0], [Tag("a", "d1", 1.0)])
    assert model.data.catalog.num_notes == notes and model.encoder.catalog is model.data.catalog
    assert np.array_equal(model.encoder.note_map, note_map)
    assert rec.num_notes == notes + 1 and rec.data.catalog.num_notes == notes + 1


def test_adding_notes_one_by_one_is_amortized(rec):
    """N notes added one at a time reallocate each buffer O(log N) times (capacity doubles), not N."""
    live = rec.live
    before, cat = live.reallocations, rec.catalog.categories[0]
    n = 200
    for j in range(n):
        rec.add_note(f"bulk-{j}", cat, [Tag("a", "d1", 1.0)])
    grown = live.reallocations - before
    buffers = len(live._buffers())
    assert grown <= buffers * (np.log2(n) + 1), grown
    assert live._items.capacity >= live.num_notes and live._items.capacity < 2 * live.num_notes + 2
    assert [r.note_id for r in rec.rank(rec.user_ids()[0], ["bulk-0", f"bulk-{n - 1}"])]


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_retag_updates_the_index_in_place(trained, kind, monkeypatch):
    """A re-tag replaces the note's vector in the index; the index is not rebuilt."""
    from ranking.recommend import Recommender
    from ranking.retrieval.index import NoteIndex

    rec = Recommender(trained[0], trained[1], index_kind=kind)
    index, size = rec.index, len(rec.index)
    cat = rec.catalog.categories[0]
    old = str(rec.catalog.note_ids[3])
    tags = [Tag(t, "d1", 1.0) for t in list(rec.catalog.vocab)[:3]]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the index was rebuilt")

    monkeypatch.setattr(NoteIndex, "build", no_rebuild)
    rec.add_note("fresh-x", cat, tags[:1])
    added = rec.add_note(old, cat, tags)
    assert added.replaced and rec.index is index and len(rec.index) == size + 1
    i = int(rec.live.rows([old])[0])
    q = rec.items[i]
    assert np.allclose(q, rec.towers.notes(np.array([i]))[0])
    _, ids = rec.index.search(q[None, :], 1)  # the note's new vector is found under its own id
    assert ids[0][0] == old
    assert [t.text for t in rec.note_tags(old)] == [t.text for t in tags]


def test_growable_array_doubles_and_splices():
    from ranking.recommend.buffer import GrowableArray

    a = GrowableArray(np.arange(3))
    for v in range(3, 100):
        a.extend([v])
    assert a.view().tolist() == list(range(100)) and a.reallocations <= 6 and a.capacity == 192
    assert a.splice(1, 3, [7, 8, 9]) == 1 and a.view()[:6].tolist() == [0, 7, 8, 9, 3, 4]
    assert a.splice(0, 4, []) == -4 and a.view()[:2].tolist() == [3, 4] and a.size == 97
