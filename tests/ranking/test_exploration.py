"""Exploration policies of the recommender: the fixed quota, UCB and Thompson sampling over a Beta
posterior around the ranker's click probability."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from features.errors import ConfigError
from ranking.recommend import Exploration, Filters, Recommender
from ranking.recommend.exploration import exploration_keys, posterior_sd
from tagging.types import Tag

K = 5


class SigmoidRanker:
    """A test double of :class:`~ranking.ranker.Ranker`: p̂ = sigmoid(retrieval score), so a note's
    click probability does not move with its impression counts (the real ranker's does)."""

    features = ("retrieval_score",)
    booster = SimpleNamespace(params={"objective": "binary"})
    config = SimpleNamespace(objective="binary")

    def predict_columns(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-columns["retrieval_score"]))


def _recommender(trained, ranker=None, **kwargs) -> Recommender:
    from ranking.retrieval.train import RetrievalModel

    model, real = trained
    m = RetrievalModel(model.model, model.encoder, model.data, model.config)
    return Recommender(m, real if ranker is None else ranker, cold_candidates=30, **kwargs)


def _add_fresh(rec: Recommender, n: int = 8) -> list[str]:
    """``n`` fresh notes (0 impressions), each with two of the catalog's tags."""
    vocab = list(rec.catalog.vocab)
    ids = []
    for i in range(n):
        cat = rec.catalog.categories[i % len(rec.catalog.categories)]
        tags = [Tag(vocab[(3 * i) % len(vocab)], "d1", 0.9), Tag(vocab[(3 * i + 1) % len(vocab)], "d2", 0.8)]
        rec.add_note(f"fresh-{i}", cat, tags)
        ids.append(f"fresh-{i}")
    return ids


def _mediocre_fresh(rec: Recommender, fresh: list[str]) -> tuple[str, str, Filters, list[str]]:
    """(user, fresh note, filters, that user's full ranker order under the filters): the filters keep
    the fresh note and the notes with at least 10 impressions (the catalog's little-shown notes are
    unexplored too and would compete for the bonus), and the note ranks just below the top K (between
    K + 1 and 2K): a mediocre p̂, neither good enough to be shown nor the worst."""
    imps = rec.live.note_stats[0]
    low = [str(n) for n, c in zip(rec.catalog.note_ids, imps, strict=True) if c < 10]
    for user in rec.user_ids():
        for note in fresh:
            filters = Filters(exclude_note_ids=tuple(n for n in low if n != note))
            order = [r.note_id for r in rec.recommend(user, k=1000, filters=filters)]
            if note in order and K <= order.index(note) < 2 * K:
                return user, note, filters, order
    raise AssertionError("no user ranks a fresh note just below the top K")


# ---- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"policy": "greedy"}, r"^exploration: got 'greedy'; expected one of none, quota, ucb, thompson"),
        (
            {"policy": "quota"},
            r"^exploration\.slot_every: got 0; expected an integer >= 1 with policy 'quota'",
        ),
        (
            {"policy": "ucb", "slot_every": 5},
            r"^exploration\.slot_every: got 5 with policy 'ucb'; expected 0",
        ),
        ({"policy": "quota", "slot_every": True}, r"^exploration\.slot_every: got True"),
        (
            {"policy": "ucb", "prior_impressions": 0},
            r"^exploration\.prior_impressions: got 0; expected a number > 0",
        ),
        ({"policy": "ucb", "prior_impressions": math.nan}, r"^exploration\.prior_impressions: got nan"),
        ({"policy": "ucb", "prior_impressions": "20"}, r"^exploration\.prior_impressions: got '20'"),
        ({"policy": "ucb", "ucb_beta": -0.5}, r"^exploration\.ucb_beta: got -0\.5; expected a number >= 0"),
        ({"policy": "thompson", "seed": -1}, r"^exploration\.seed: got -1; expected an integer >= 0"),
    ],
)
def test_bad_policies_name_the_field_and_the_expected_form(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Exploration(**kwargs)


def test_recommender_rejects_policies_it_cannot_run(trained):
    model, ranker = trained
    with pytest.raises(ConfigError, match=r"^exploration: got 'ucb' without a ranker"):
        Recommender(model, None, exploration="ucb")
    lambdarank = SimpleNamespace(
        booster=SimpleNamespace(params={"objective": "lambdarank"}),
        config=SimpleNamespace(objective="binary"),
    )
    with pytest.raises(ConfigError, match=r"^exploration: got 'thompson' with a 'lambdarank' ranker"):
        Recommender(model, lambdarank, exploration="thompson")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^cold_slot_every: got 3 with exploration 'ucb'; expected 0"):
        Recommender(model, ranker, exploration="ucb", cold_slot_every=3)
    with pytest.raises(ConfigError, match=r"^exploration: got int"):
        Recommender(model, ranker, exploration=5)  # type: ignore[arg-type]
    # the quota needs no probabilities; cold_slot_every is the quota
    assert Recommender(model, None, cold_slot_every=4).exploration == Exploration("quota", slot_every=4)
    assert Recommender(model, None, exploration="none").exploration.policy == "none"


def test_cold_slot_every_is_the_quota_policy(trained):
    rec = _recommender(trained)
    rec.cold_slot_every = 3
    assert rec.exploration == Exploration("quota", slot_every=3) and rec.cold_slot_every == 3
    rec.cold_slot_every = 0
    assert rec.exploration.policy == "none" and rec.cold_slot_every == 0
    rec.exploration = "ucb"
    rec.cold_slot_every = 0  # turning off a quota that is not there leaves the policy alone
    assert rec.exploration.policy == "ucb"


# ---- the posterior ------------------------------------------------------------------------------


def test_bonus_is_widest_unshown_and_shrinks_with_impressions():
    p = np.full(6, 0.2)
    imps = np.array([0, 10, 100, 1_000, 10_000, 100_000], float)
    sd = posterior_sd(p, imps, prior_impressions=20)
    assert sd[0] == pytest.approx(math.sqrt(0.2 * 0.8 / 21))
    assert np.all(np.diff(sd) < 0)
    assert sd[4] < 0.05 * sd[0]  # ten thousand impressions: almost no bonus
    policy = Exploration("ucb", prior_impressions=20, ucb_beta=2.0)
    keys = exploration_keys(policy, p, imps, np.random.default_rng(0))
    np.testing.assert_allclose(keys - p, 2.0 * sd)
    assert exploration_keys(
        Exploration("ucb", ucb_beta=0.0), p, imps, np.random.default_rng(0)
    ) == pytest.approx(p)
    quota = Exploration("quota", slot_every=2)  # acts on slots, not keys
    np.testing.assert_array_equal(exploration_keys(quota, p, imps, np.random.default_rng(0)), p)


def test_thompson_draws_follow_the_posterior():
    """Draws for a note never shown spread as the prior; for a much-shown note they sit at p̂."""
    policy = Exploration("thompson", prior_impressions=20, seed=0)
    rng = np.random.default_rng(0)
    fresh = exploration_keys(policy, np.full(20_000, 0.3), np.zeros(20_000), rng)
    shown = exploration_keys(policy, np.full(20_000, 0.3), np.full(20_000, 5_000.0), rng)
    assert fresh.mean() == pytest.approx(0.3, abs=0.005) and shown.mean() == pytest.approx(0.3, abs=0.002)
    assert fresh.std() == pytest.approx(math.sqrt(0.3 * 0.7 / 21), rel=0.05)
    assert shown.std() < 0.1 * fresh.std()


# ---- in the recommender -------------------------------------------------------------------------


def test_ucb_shows_a_fresh_note_with_a_mediocre_estimate(trained):
    """Under ``none`` the ranker keeps a mediocre fresh note out of the top K; UCB's bonus (the note
    was never shown, warm notes were) brings it in."""
    rec = _recommender(trained)
    user, note, filters, order = _mediocre_fresh(rec, _add_fresh(rec))
    assert note not in [r.note_id for r in rec.recommend(user, k=K, filters=filters)]
    rec.exploration = Exploration("ucb", prior_impressions=2, ucb_beta=2.0)
    shown = rec.recommend(user, k=K, filters=filters)
    assert note in [r.note_id for r in shown]
    # the scores stay the ranker's: the note's reported score is the one `none` reported
    rec.exploration = "none"
    plain = {r.note_id: r.score for r in rec.recommend(user, k=1000, filters=filters)}
    assert {r.note_id: r.score for r in shown}[note] == pytest.approx(plain[note])
    rec.exploration = Exploration("ucb", ucb_beta=0.0)  # no bonus: the ranker's order
    assert [r.note_id for r in rec.recommend(user, k=K, filters=filters)] == order[:K]


def test_ucb_bonus_fades_as_the_note_collects_impressions(trained):
    """With p̂ fixed (a test double), the fresh note wins a slot while unshown and loses it after
    thousands of impressions counted by ``observe``."""
    rec = _recommender(trained, ranker=SigmoidRanker())
    user, note, filters, _ = _mediocre_fresh(rec, _add_fresh(rec))
    rec.exploration = Exploration("ucb", prior_impressions=2, ucb_beta=2.0)
    assert note in [r.note_id for r in rec.recommend(user, k=K, filters=filters)]
    others = [u for u in rec.user_ids() if u != user]
    before = rec.live.note_stats[0][rec.live.rows([note])[0]]
    for i in range(3_000):
        rec.observe(others[i % len(others)], note, "impression")
    assert rec.live.note_stats[0][rec.live.rows([note])[0]] == before + 3_000
    assert note not in [r.note_id for r in rec.recommend(user, k=K, filters=filters)]


def test_thompson_is_reproducible_for_a_seed_and_explores(trained):
    rec = _recommender(trained)
    user, note, filters, _ = _mediocre_fresh(rec, _add_fresh(rec))
    users = rec.user_ids()[:15]

    def lists(seed: int) -> list[list[str]]:
        rec.exploration = Exploration("thompson", prior_impressions=2, seed=seed)
        return [[r.note_id for r in got] for got in rec.recommend_many(users, K)]

    first = lists(7)
    assert lists(7) == first
    assert lists(8) != first
    rec.exploration = Exploration("thompson", prior_impressions=2, seed=0)
    draws = [note in [r.note_id for r in rec.recommend(user, k=K, filters=filters)] for _ in range(40)]
    assert 0 < sum(draws) < 40  # sometimes shown, not always: a draw, not a fixed bonus
