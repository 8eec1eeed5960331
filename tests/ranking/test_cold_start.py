"""The cold-start recipe of issue 16: the freshness bias, its calibration, the wide tag term."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from features.errors import ConfigError
from ranking.data import build_training_examples, user_states
from ranking.retrieval.calibrate import EXPOSURES, OVERLAPS, SCALES, calibrate_freshness
from ranking.retrieval.model import (
    AGE_EDGES_DAYS,
    FeatureEncoder,
    TwoTower,
    TwoTowerConfig,
    age_bucket,
    in_batch_softmax_loss,
)
from ranking.retrieval.peers import TagOverlapScorer
from ranking.retrieval.train import TrainConfig, id_dropout, train

DAY = 86400.0


def test_age_bucket_edges():
    ages = np.array([-5.0, 0.0, 0.99, 1.0, 2.9, 3.0, 6.9, 7.0, 13.9, 14.0, 29.9, 30.0, 400.0]) * DAY
    assert age_bucket(ages).tolist() == [1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert age_bucket(np.array([1e9])).max() == len(AGE_EDGES_DAYS) + 1


def test_pair_bias_lookup_equals_exact_buckets():
    model = TwoTower(TwoTowerConfig(num_users=3, num_notes=3, num_tags=3, num_categories=2, freshness=True))
    with torch.no_grad():
        model.age_bias.weight[:, 0] = torch.arange(7.0) * 10
    ages = np.random.default_rng(0).uniform(-DAY, 45 * DAY, 5000)
    got = model.pair_bias(torch.from_numpy(ages.astype(np.float32))).detach().numpy()
    assert np.array_equal(got, age_bucket(ages) * 10.0)
    plain = TwoTower(TwoTowerConfig(num_users=3, num_notes=3, num_tags=3, num_categories=2))
    assert plain.pair_bias(torch.zeros(2, 2)) == 0.0


def test_pair_bias_masks_unpublished_and_backprops_like_index():
    model = TwoTower(TwoTowerConfig(num_users=3, num_notes=3, num_tags=3, num_categories=2, freshness=True))
    with torch.no_grad():
        model.age_bias.weight[:, 0] = torch.arange(7.0) * 0.1
    ages = torch.tensor([[-10.0, 3 * DAY, -2 * DAY], [0.5 * DAY, -1.0, 40 * DAY], [2 * DAY, 8 * DAY, -DAY]])
    b = model.pair_bias(ages.clone(), mask_unpublished=True)
    expect = torch.from_numpy(age_bucket(ages.numpy()) * 0.1).float()
    off = ~torch.eye(3, dtype=torch.bool)
    neg = (ages < 0) & off
    assert torch.isneginf(b[neg]).all()
    assert torch.allclose(b[~neg], expect[~neg])  # diagonal kept even at a negative age
    # backward (bincount) equals autograd's own gather backward
    g = torch.randn(3, 3)
    (b[~neg] * g[~neg]).sum().backward()
    ours = model.age_bias.weight.grad[:, 0].clone()
    ref = torch.zeros(7).index_add_(0, torch.from_numpy(age_bucket(ages.numpy()))[~neg], g[~neg])
    assert torch.allclose(ours, ref, atol=1e-6)


def test_valid_mask_removes_unpublished_candidates():
    users = torch.eye(3)
    items = torch.eye(3)
    note = torch.arange(3)
    log_q = torch.zeros(3)
    open_ = in_batch_softmax_loss(users, items, log_q, note, 1.0)
    valid = torch.tensor([[True, False, False], [True, True, False], [True, True, True]])
    masked = in_batch_softmax_loss(users, items, log_q, note, 1.0, valid=valid)
    assert masked < open_  # fewer negatives in rows 0 and 1
    # the diagonal stays even when marked invalid
    assert torch.isfinite(
        in_batch_softmax_loss(users, items, log_q, note, 1.0, valid=~torch.eye(3, dtype=bool))
    )


def test_vectors_carry_cosine_wide_and_bias(tiny_data):
    ex = build_training_examples(tiny_data)
    cfg = TrainConfig(epochs=1, freshness=True, wide_dim=16, calibrate_days=0.0)
    result = train(tiny_data, ex, cfg)
    mcfg = result.model.config
    assert mcfg.vector_dim == mcfg.out_dim + 16 + 1
    notes = np.arange(tiny_data.catalog.num_notes)
    items = result.item_embeddings(notes)
    users = result.user_embeddings(np.arange(3), tiny_data.cutoff_s)
    assert items.shape == (len(notes), mcfg.vector_dim) and users.shape == (3, mcfg.vector_dim)
    assert np.allclose(users[:, -1], 1.0)
    # the last item entry is T x scale x bias of the note's age bucket at the cutoff
    bias = result.model.age_bias.weight[:, 0].detach().numpy()
    bucket = age_bucket(tiny_data.cutoff_s - tiny_data.catalog.created_s)
    assert np.allclose(items[:, -1], mcfg.temperature * bias[bucket], atol=1e-6)
    assert np.allclose(np.linalg.norm(items[:, : mcfg.out_dim], axis=1), 1.0, atol=1e-5)
    # ages taken at another time change only the bias entry
    later = result.item_embeddings(notes, at_s=tiny_data.cutoff_s + 40 * DAY)
    assert np.allclose(later[:, :-1], items[:, :-1], atol=1e-6)
    assert np.allclose(later[:, -1], mcfg.temperature * bias[len(AGE_EDGES_DAYS) + 1], atol=1e-6)


def test_age_bias_learns_that_fresh_notes_are_clicked_more(tiny_data):
    """Clicks only on notes younger than a day at click time: the youngest bucket's bias must end
    highest (with the open batch the age carries no signal, so this fails without the per-row ages)."""
    inter = tiny_data.interactions
    age = inter.ts - tiny_data.catalog.created_s[inter.note]
    keep = (inter.event != "click") | (age < DAY)
    data = replace(tiny_data, interactions=inter.select(keep))
    ex = build_training_examples(data)
    cfg = TrainConfig(epochs=8, freshness=True, calibrate_days=0.0, batch_size=64, lr=0.02)
    result = train(data, ex, cfg)
    bias = result.model.age_bias.weight[1:, 0].detach().numpy()
    # buckets 2..5 (1-30 days) hold the candidates a young positive competes with; the last bucket
    # (30+ days) never occurs in 30 days of data. Zero biases (nothing learned) fail here.
    assert bias[0] > bias[1:5].max() + 0.2, bias


def test_calibration_picks_a_grid_scale_and_falls_back(tiny_data):
    ex = build_training_examples(tiny_data)
    cfg = TrainConfig(epochs=1, freshness=True, calibrate_days=5.0)
    cal = calibrate_freshness(tiny_data, ex, cfg, min_users=1)
    assert cal.scale in SCALES and [g["scale"] for g in cal.grid] == list(SCALES)
    # the smallest scale within 0.5 % of the best, and none smaller is
    top = max(g["recall@50"] for g in cal.grid)
    within = [g["scale"] for g in cal.grid if g["recall@50"] >= 0.995 * top]
    assert cal.scale == min(within)
    loose = calibrate_freshness(tiny_data, ex, cfg, min_users=1, tolerance=1.0)
    assert loose.scale == 0.0  # everything is "within 100 %": the smallest scale
    assert cal.window[1] - cal.window[0] == pytest.approx(5 * DAY)
    assert 0 < cal.train_examples < len(ex)
    result = train(tiny_data, ex, cfg)
    assert result.model.config.freshness_scale == result.calibration["scale"]
    # a horizon longer than the data: nothing to train on before it -> scale 0 and the reason
    far = calibrate_freshness(tiny_data, ex, replace(cfg, calibrate_days=400.0))
    assert far.scale == 0.0 and "fewer than 2" in far.reason
    # too few users in the window to judge (tiny data has 40 users) -> scale 0 and the reason
    thin = calibrate_freshness(tiny_data, ex, cfg)
    assert thin.scale == 0.0 and "fewer than 100" in thin.reason and thin.grid == []


def test_fresh_days_hides_ids_of_young_notes(tiny_data):
    ex = build_training_examples(tiny_data)
    p = id_dropout(tiny_data, ex, TrainConfig(note_dropout=0.25, fresh_days=2.0))
    young = (ex.ts - tiny_data.catalog.created_s[ex.note]) < 2 * DAY
    assert young.any() and (~young).any()
    assert np.all(p[young] == 1.0) and np.all(p[~young] == 0.25)


def test_new_options_are_validated():
    with pytest.raises(ConfigError, match="calibrate_days"):
        TrainConfig(calibrate_days=-1)
    with pytest.raises(ConfigError, match="fresh_days"):
        TrainConfig(fresh_days=float("nan"))
    with pytest.raises(ConfigError, match="wide_dim"):
        TrainConfig(wide_dim=-3)


def test_wide_part_only_with_tags(tiny_data):
    for feature_set, wide in (("tags", True), ("category", False), ("ids", False)):
        enc = FeatureEncoder(tiny_data, feature_set, np.arange(3), np.arange(5))
        cfg = enc.config(wide_dim=8)
        assert cfg.has_wide is wide
        model = TwoTower(cfg)
        items = model.item_embedding(enc.encode(notes=np.arange(4)))
        assert items.shape == (4, cfg.out_dim + (8 if wide else 0)) == (4, cfg.vector_dim)
        if wide:  # one tag table, embedding_dim + wide_dim columns
            assert model.ebc.embedding_bags["tag"].weight.shape[1] == cfg.embedding_dim + 8


def test_loss_equals_the_dense_mask_formulation():
    """addmm + masking only the repeated notes' pairs == the B x B comparison it replaced."""
    g = torch.Generator().manual_seed(0)
    users = torch.nn.functional.normalize(torch.randn(64, 8, generator=g), dim=1).requires_grad_()
    items = torch.nn.functional.normalize(torch.randn(64, 8, generator=g), dim=1).requires_grad_()
    note = torch.randint(0, 20, (64,), generator=g)  # many repeats
    log_q = torch.randn(64, generator=g)
    bias = torch.randn(64, 64, generator=g)
    bias[torch.rand(64, 64, generator=g) < 0.2] = float("-inf")
    bias.fill_diagonal_(0.0)
    ours = in_batch_softmax_loss(users, items, log_q, note, 0.1, bias)
    ours.backward()
    got = (users.grad.clone(), items.grad.clone())
    users.grad = items.grad = None
    logits = users @ items.T / 0.1 - log_q[None, :] + bias
    same = note[:, None] == note[None, :]
    same.fill_diagonal_(False)
    ref = torch.nn.functional.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(64))
    ref.backward()
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(got[0], users.grad, atol=1e-6) and torch.allclose(got[1], items.grad, atol=1e-6)


def test_exact_tag_overlap_in_training_equals_the_vectors(tiny_data):
    """The sparse (row, in-batch note) overlap term of training is what the vectors' exact part
    gives an inner-product index: u . i / T over those columns."""
    ex = build_training_examples(tiny_data)
    cfg = TrainConfig(epochs=1, freshness=False, wide_dim=0, exact_tags=True, calibrate_days=0.0)
    result = train(tiny_data, ex, cfg)
    model, mcfg = result.model, result.model.config
    assert mcfg.vector_dim == mcfg.out_dim + mcfg.num_tags
    assert not torch.allclose(model.tag_weight, torch.ones(mcfg.num_tags))  # learned
    batch = ex.take(np.arange(12))
    kjt = result.encoder.encode(batch)
    with torch.no_grad():
        overlap = model.tag_overlap(kjt).numpy()
        users = model.user_embedding(kjt).numpy()[:, mcfg.out_dim :]
        items = model.item_embedding(kjt).numpy()[:, mcfg.out_dim :]
    assert np.allclose(users @ items.T / mcfg.temperature, overlap, atol=1e-5)
    assert (overlap > 0).any()
    # without the flag there is no term and no extra columns
    plain = TwoTower(replace(mcfg, exact_tags=False))
    assert plain.tag_overlap(kjt) == 0.0 and plain.config.vector_dim == mcfg.out_dim


def test_cold_overlap_adds_the_heuristic_to_id_less_notes_only(tiny_data):
    """With weight c, a note without an id scores towers + c x (the tag-overlap heuristic's own score
    (tag bags + category shares) minus the user's overlap with the catalog's mean note); a note with
    an id scores exactly as without the term; the centre is saved with the weights."""
    ex = build_training_examples(tiny_data)
    result = train(tiny_data, ex, TrainConfig(epochs=1, calibrate_days=0.0))
    mcfg = result.model.config
    assert mcfg.cold_overlap == 0.0 and mcfg.overlap_dim == 0  # no calibration -> off
    users = np.arange(tiny_data.num_users)
    notes = np.arange(tiny_data.catalog.num_notes)
    plain_u = result.user_embeddings(users, tiny_data.cutoff_s)
    plain_i = result.item_embeddings(notes)
    result.set_cold_overlap(0.7)
    assert result.model.config.vector_dim == mcfg.vector_dim + mcfg.num_tags + mcfg.num_categories
    u = result.user_embeddings(users, tiny_data.cutoff_s, cold_only=True)
    i = result.item_embeddings(notes)
    assert u.shape[1] == i.shape[1] == result.model.config.vector_dim
    shared = result.user_embeddings(users, tiny_data.cutoff_s)
    # the query over every note ignores the term (shared_overlap = 0): scores as without it
    assert np.allclose(shared @ i.T, plain_u @ plain_i.T, atol=1e-5)
    id_less = result.encoder.note_map[notes] == 0
    assert id_less.any() and (~id_less).any()
    # the note side holds the tag confidences (overlap_confidence), as the heuristic does
    assert result.model.config.overlap_confidence
    heur = TagOverlapScorer(tiny_data)
    # centred: minus the user's overlap with the catalog's mean note (one number per user)
    center = result.model.get_buffer("overlap_center").numpy()
    user_bags = u[:, result.model.config.overlap_slice] / 0.7
    assert user_bags.shape[1] == mcfg.num_tags + mcfg.num_categories
    per_user = (user_bags @ center)[:, None]
    want = plain_u @ plain_i.T + 0.7 * (heur.scores(users, notes) - per_user) * id_less[None, :]
    got = u @ i.T
    assert np.allclose(got, want, atol=1e-4)
    assert np.allclose(got[:, ~id_less], (plain_u @ plain_i.T)[:, ~id_less], atol=1e-5)
    # a cached weight-1 vector becomes either query (what the recommender does)
    states = user_states(tiny_data, users, np.full(len(users), tiny_data.cutoff_s))
    with torch.no_grad():
        ones = result.model.user_embedding(result.encoder.encode(states), overlap_weight=1.0).numpy()
    assert np.allclose(result.model.config.query(ones, cold_only=True), u, atol=1e-6)
    assert np.allclose(result.model.config.query(ones), shared, atol=1e-6)
    # the freshness entry stays last (the calibration scales it)
    assert np.allclose(i[:, -1], plain_i[:, -1])
    # the centre is the mean note bag, and it round-trips through save / load
    mass = result.tag_mass(notes).numpy()
    assert center.sum() == pytest.approx(mass.mean() + 1.0, abs=1e-4)  # tag confidences + category one-hot
    clone = TwoTower(result.model.config)
    clone.load_state_dict(result.model.state_dict())
    assert torch.equal(clone.get_buffer("overlap_center"), result.model.get_buffer("overlap_center"))
    # with exposure b, the user's tag bag there is minus b x what it was shown: the heuristic's exposure form
    result.set_cold_overlap(0.7, 0.5)
    u_b = result.user_embeddings(users, tiny_data.cutoff_s, cold_only=True)
    heur_b = TagOverlapScorer(tiny_data, exposure=0.5)
    assert not np.allclose(heur_b.scores(users, notes), heur.scores(users, notes))
    bags_b = u_b[:, result.model.config.overlap_slice] / 0.7
    want_b = (
        plain_u @ plain_i.T
        + 0.7 * (heur_b.scores(users, notes) - (bags_b @ center)[:, None]) * id_less[None, :]
    )
    assert np.allclose(u_b @ result.item_embeddings(notes).T, want_b, atol=1e-4)
    result.set_cold_overlap(0.0)
    assert "overlap_center" not in dict(result.model.named_buffers())
    assert result.item_embeddings(notes).shape == plain_i.shape


def test_cold_overlap_weight_is_calibrated_on_the_window(tiny_data):
    ex = build_training_examples(tiny_data)
    cfg = TrainConfig(epochs=1, freshness=True, calibrate_days=5.0)
    cal = calibrate_freshness(tiny_data, ex, cfg, min_users=1)
    # c x b, with c = 0 once (it does not depend on b)
    pairs = [(g["cold_overlap"], g["overlap_exposure"]) for g in cal.overlap_grid]
    assert pairs == [(c, 0.0) for c in OVERLAPS] + [(c, b) for b in EXPOSURES[1:] for c in OVERLAPS[1:]]
    top = max(g["cold_recall@50"] for g in cal.overlap_grid)
    within = [
        (g["overlap_exposure"], g["cold_overlap"])
        for g in cal.overlap_grid
        if g["cold_recall@50"] >= 0.995 * top
    ]
    b, c = min(within)
    assert (cal.cold_overlap, cal.overlap_exposure) == (c, b if c else 0.0)
    assert cal.as_dict()["cold_overlap"] == cal.cold_overlap
    assert cal.as_dict()["overlap_exposure"] == cal.overlap_exposure
    # without the exposure flag, b stays 0 and only c is searched
    no_b = calibrate_freshness(tiny_data, ex, replace(cfg, overlap_exposure=False), min_users=1)
    assert [g["overlap_exposure"] for g in no_b.overlap_grid] == [0.0] * len(OVERLAPS)
    assert no_b.overlap_exposure == 0.0
    result = train(tiny_data, ex, cfg)
    assert result.model.config.cold_overlap == result.calibration["cold_overlap"]
    assert result.model.config.overlap_exposure == result.calibration["overlap_exposure"]
    # off by flag, and off (with the reason) when the window has too few cold users
    off = calibrate_freshness(tiny_data, ex, replace(cfg, cold_overlap=False), min_users=1)
    assert off.cold_overlap == 0.0 and off.overlap_grid == [] and off.overlap_reason == "off"
    thin = calibrate_freshness(tiny_data, ex, cfg, min_users=1_000_000)
    assert thin.cold_overlap == 0.0


def test_cold_overlap_is_validated():
    with pytest.raises(ConfigError, match="cold_overlap"):
        TwoTowerConfig(num_users=2, num_notes=2, num_tags=2, num_categories=2, cold_overlap=-1.0)
    with pytest.raises(ConfigError, match="shared_overlap"):
        TwoTowerConfig(num_users=2, num_notes=2, num_tags=2, num_categories=2, shared_overlap=float("nan"))
    with pytest.raises(ConfigError, match="overlap_exposure"):
        TwoTowerConfig(num_users=2, num_notes=2, num_tags=2, num_categories=2, overlap_exposure=-0.5)
    ids = TwoTowerConfig(
        num_users=2, num_notes=2, num_tags=2, num_categories=2, feature_set="ids", cold_overlap=1.0
    )
    assert not ids.has_cold_overlap and ids.overlap_dim == 0
