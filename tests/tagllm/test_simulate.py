"""The simulated online A/B test on a tiny synthetic run (small training settings)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.errors import ConfigError
from features.io import RunDir
from ranking.ranker import RankerConfig
from ranking.recommend import Exploration
from ranking.retrieval.train import TrainConfig
from tagging.types import Tag
from tagllm.simulate import METRIC_NAMES, SimConfig, simulate_stage
from tagllm.simulate.config import ARMS
from tagllm.simulate.engine import assign, bucket, select_users

# Fast but real: every piece runs, with little training and few sessions.
FAST = SimConfig(
    days=2,
    pre_days=1,
    users=80,
    k=5,
    candidates=20,
    sessions_per_day=1.5,
    seed=3,
    treatment_tags="ground_truth",
    retrieval=TrainConfig(epochs=1),
    ranker=RankerConfig(n_estimators=15),
    fresh_notes_per_day=12,
    cold_start_days=1.5,
    arms=("control", "treatment"),
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from features.prepare import prepare

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("sim") / "run"
    prepare("synthetic", path, size="tiny", seed=0)
    return path


# Every arm in one run; a strong quota (2 of the 5 slots) so that its effect shows on few users.
FOUR = replace(FAST, arms=ARMS, users=120, cold_slot_every=2)


@pytest.fixture(scope="module")
def stage(tiny_run: Path) -> dict:
    return simulate_stage(tiny_run, FAST)


@pytest.fixture(scope="module")
def stage4(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("four")
    return simulate_stage(tiny_run, FOUR, out=out), out


# ---- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "kwargs"),
    [
        ("days", {"days": 0}),
        ("pre_days", {"pre_days": -1}),
        ("users", {"users": 1}),
        ("k", {"k": 0}),
        ("candidates", {"k": 10, "candidates": 5}),
        ("sessions_per_day", {"sessions_per_day": 0}),
        ("seed", {"seed": -2}),
        ("treatment_tags", {"treatment_tags": "llm"}),
        ("experiment", {"experiment": " "}),
        ("batch_sessions", {"batch_sessions": 0}),
        ("fresh_notes_per_day", {"fresh_notes_per_day": -1}),
        ("fresh_notes_per_day", {"fresh_notes_per_day": 2.5}),
        ("fresh_notes_per_day", {"fresh_notes_per_day": 20_000}),
        ("cold_start_days", {"cold_start_days": 0}),
        ("cold_start_days", {"cold_start_days": "3"}),
        ("retrieval", {"retrieval": {"epochs": 1}}),
        ("cold_candidates", {"cold_candidates": -1}),
        ("cold_slot_every", {"cold_slot_every": True}),
        ("cold_slot_every", {"cold_slot_every": 0, "arms": ARMS}),
        ("cold_slot_every", {"cold_slot_every": 3, "arms": ("control", "treatment")}),  # no quota arm
        ("arms", {"arms": ("control",)}),
        ("arms", {"arms": ("control", "treatment", "tags_greedy")}),
        ("arms", {"arms": ("control", "treatment", "treatment")}),
        ("arms", {"arms": "control,treatment"}),
        ("exploration", {"exploration": Exploration("quota", slot_every=2)}),
        ("exploration", {"exploration": "ucb"}),
    ],
)
def test_bad_options_raise_config_error_naming_them(option: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError, match=rf"^{option}: got"):
        SimConfig(**kwargs)


def test_stage_rejects_non_synthetic_runs(tmp_path: Path, tiny_run: Path) -> None:
    run = RunDir(tmp_path / "other")
    manifest = RunDir(tiny_run).manifest() | {"source": "movielens"}
    run.write_manifest(manifest)
    with pytest.raises(ConfigError, match=r"^run: .*synthetic"):
        simulate_stage(run.path, FAST)
    with pytest.raises(ConfigError, match=r"^config: "):
        simulate_stage(tiny_run, {"days": 2})  # type: ignore[arg-type]


# ---- assignment ---------------------------------------------------------------------------------


def test_assignment_is_a_salted_5050_hash() -> None:
    ids = [f"u{i:06d}" for i in range(20_000)]
    at = pd.Timestamp("2026-03-04", tz="UTC")
    a = assign(ids, "exp", 0, at)
    share = float((a["variant"] == "treatment").mean())
    assert abs(share - 0.5) < 0.015
    assert a.equals(assign(ids, "exp", 0, at))
    other = assign(ids, "exp", 1, at)  # another seed (salt) reshuffles
    assert 0.4 < float((other["variant"] != a["variant"]).mean()) < 0.6
    assert list(a.columns) == ["user_id", "experiment", "variant", "assigned_at"]
    assert bucket("s", "u1") == bucket("s", "u1") and 0 <= bucket("s", "u1") < 10_000


def test_multi_arm_assignment_is_even_and_keeps_the_two_arm_split() -> None:
    ids = [f"u{i:06d}" for i in range(20_000)]
    at = pd.Timestamp("2026-03-04", tz="UTC")
    four = assign(ids, "exp", 0, at, ARMS)
    shares = four["variant"].value_counts(normalize=True)
    assert set(shares.index) == set(ARMS) and (abs(shares - 0.25) < 0.015).all()
    two = assign(ids, "exp", 0, at)
    # the two-arm split is the old rule: bucket < 5,000 is control
    assert (two["variant"] == "control").tolist() == [bucket("exp:0", u) < 5_000 for u in ids]
    # control's users in the four-arm split are the lowest quarter of the buckets
    assert (four["variant"] == "control").tolist() == [bucket("exp:0", u) < 2_500 for u in ids]
    assert SimConfig().arms == ARMS  # the demo's experiment: every arm
    assert SimConfig(arms=("tags_quota", "treatment", "control")).arms == (
        "control",
        "treatment",
        "tags_quota",
    )


def test_user_cap_is_a_seeded_subset() -> None:
    ids = [f"u{i:04d}" for i in range(500)]
    sub = select_users(ids, 100, 0)
    assert len(sub) == 100 and sub == sorted(sub) and set(sub) <= set(ids)
    assert sub == select_users(ids, 100, 0) and sub != select_users(ids, 100, 1)
    assert sub != ids[:100]  # not simply the first ids
    assert select_users(ids, None, 0) == ids


# ---- the response model -------------------------------------------------------------------------


def test_truth_is_the_generators_click_model(tiny_run: Path) -> None:
    """Applied to the run's own impressions, the regenerated response model predicts the observed
    click rate (the data were drawn from it)."""
    from tagllm.simulate.truth import load_truth

    truth = load_truth(RunDir(tiny_run))
    inter = RunDir(tiny_run).read_table("interactions")
    imp = inter[inter["event"] == "impression"]
    rng = np.random.default_rng(0)
    p = np.concatenate(
        [
            truth.respond(int(truth.user([u])[0]), truth.note(g["note_id"].to_numpy()), rng).p_click
            for u, g in imp.groupby("user_id")
        ]
    )
    observed = float((inter["event"] == "click").sum() / len(imp))  # one click at most per impression
    assert abs(p.mean() - observed) < 0.02, (p.mean(), observed)


# ---- serving ------------------------------------------------------------------------------------


def test_batched_recommend_equals_single_requests(tiny_run: Path) -> None:
    from ranking.recommend import Filters
    from tagllm.simulate.arms import train_arms

    arms = train_arms(RunDir(tiny_run), replace(FAST, treatment_tags="ground_truth"))
    rec = arms["treatment"].recommender
    users = list(rec.user_ids()[:12])
    filters = [Filters(exclude_note_ids=tuple(rec.catalog.note_ids[: i * 3])) for i in range(len(users))]
    batch = rec.recommend_many(users, 5, candidates=30, filters=filters)
    for u, f, got in zip(users, filters, batch, strict=True):
        single = rec.recommend(u, 5, candidates=30, filters=f)
        assert [r.note_id for r in got] == [r.note_id for r in single]
        np.testing.assert_allclose([r.score for r in got], [r.score for r in single], rtol=1e-6)
        assert not set(f.exclude_note_ids) & {r.note_id for r in got}
    with pytest.raises(ConfigError, match=r"^k: "):
        rec.recommend_many(users, 0)
    # ... and after notes are published live (as the simulator adds fresh notes)
    cat = rec.catalog.categories[0]
    tags = [Tag(t, "x", 1.0) for t in list(rec.catalog.vocab)[:3]]
    for i in range(5):
        rec.add_note(f"sim-test-{i}", cat, tags[: i % 4], created_s=rec.now_s + i)
    batch = rec.recommend_many(users, 5, candidates=rec.num_notes)
    for u, got in zip(users, batch, strict=True):
        single = rec.recommend(u, 5, candidates=rec.num_notes)
        assert [r.note_id for r in got] == [r.note_id for r in single]


def test_treatment_falls_back_from_missing_student_tags(
    tiny_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tagllm.simulate.arms import resolve_treatment_tags

    with caplog.at_level(logging.WARNING):
        assert resolve_treatment_tags(RunDir(tiny_run), "student") == "ground_truth"
    assert "no student tags" in caplog.text
    assert resolve_treatment_tags(RunDir(tiny_run), "ground_truth") == "ground_truth"


# ---- fresh notes --------------------------------------------------------------------------------


def test_fresh_notes_are_drawn_like_the_generators(tiny_run: Path) -> None:
    from tagllm.simulate.fresh import Publisher, truth_tags
    from tagllm.simulate.truth import load_truth

    truth = load_truth(RunDir(tiny_run))
    n0 = len(truth.note_index)
    pub = Publisher(truth, truth_tags, FAST, start_s=1.77e9)
    day1 = pub.draw(1)
    assert len(day1) == FAST.fresh_notes_per_day and len(truth.note_index) == n0 + len(day1)
    assert [f.created_s for f in day1] == sorted(f.created_s for f in day1)
    assert all(1.77e9 + 86_400 <= f.created_s < 1.77e9 + 2 * 86_400 for f in day1)
    assert all(f.tags and all(":" in t.text for t in f.tags) for f in day1)
    rows = truth.notes.notes.iloc[n0:]
    assert rows["title"].str.len().gt(0).all() and rows["body"].str.len().gt(20).all()
    assert set(rows["category"]) <= set(truth.taxonomy.category_names)
    assert (truth.note([f.note_id for f in day1]) == [f.truth_index for f in day1]).all()
    # the response model answers them like catalog notes
    p = truth.respond(0, np.array([f.truth_index for f in day1]), np.random.default_rng(0)).p_click
    assert ((p > 0) & (p < 1)).all()
    # deterministic by (seed, day)
    again = Publisher(load_truth(RunDir(tiny_run)), truth_tags, FAST, start_s=1.77e9).draw(1)
    assert again == day1


def test_fresh_tags_come_from_the_tagger_on_the_text(
    tiny_run: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tagging.types import TagResult
    from tagllm.simulate.fresh import fresh_tag_source, tagger_tags

    class TitleTagger:  # a test double: the first title word as a tag
        name, version = "title", "0"

        def __init__(self) -> None:
            self.calls = 0

        def tag(self, notes: list) -> list[TagResult]:
            self.calls += 1
            return [TagResult(n.note_id, (Tag(n.title.split()[0].lower(), "word", 0.5),)) for n in notes]

    notes = RunDir(tiny_run).read_table("notes").head(4)
    double = TitleTagger()
    got = tagger_tags(double)(notes, pd.DataFrame())
    assert double.calls == 1 and got == [[Tag(t.split()[0].lower(), "word", 0.5)] for t in notes["title"]]
    with caplog.at_level(logging.WARNING):
        source, _ = fresh_tag_source(RunDir(tiny_run), "student")  # the tiny run has no student
    assert source.startswith("ground_truth (fallback") and "no student model" in caplog.text


def test_fresh_notes_reach_slates_and_the_cold_start_segment(tiny_run: Path, stage: dict) -> None:
    ev = pd.read_parquet(tiny_run / "ab_sim" / "events.parquet")
    fresh = ev["note_id"].str.startswith("sim")
    imp = ev["event"] == "impression"
    assert (fresh & imp).any() and (fresh & (ev["event"] == "click")).any()
    assert set(ev.loc[fresh, "served_by"]) == {"control", "treatment"}
    # cold start = a fresh note shown < cold_start_days after its publication
    day = ev.loc[fresh, "note_id"].str.slice(3, 6).astype(int)
    start = pd.Timestamp(json.loads((tiny_run / "ab_sim" / "manifest.json").read_text())["days"]["start"])
    age_days = (ev.loc[fresh, "ts"] - start).dt.total_seconds() / 86_400 - day
    assert (age_days >= 0).all()
    assert ev.loc[~fresh, "is_cold_start"].sum() == 0
    old = age_days >= FAST.cold_start_days + 1  # published on or after its day's start
    assert not ev.loc[fresh, "is_cold_start"][old].any()
    assert ev.loc[fresh, "is_cold_start"][age_days < FAST.cold_start_days - 1].all()
    assert stage["fresh_notes"]["published"] == FAST.fresh_notes_per_day * (FAST.days + FAST.pre_days)
    assert stage["fresh_notes"]["treatment_tags"] == "ground_truth"
    assert 0 < stage["fresh_impression_share"] < 1


def test_without_fresh_notes_cold_start_is_the_catalogs(tiny_run: Path, tmp_path: Path) -> None:
    figures = simulate_stage(tiny_run, replace(FAST, fresh_notes_per_day=0, days=1), out=tmp_path / "none")
    ev = pd.read_parquet(tmp_path / "none" / "events.parquet")
    assert not ev["note_id"].str.startswith("sim").any() and ev["is_cold_start"].any()
    assert figures["fresh_notes"]["per_day"] == 0


def test_four_arms_in_one_run_share_users_days_and_fresh_notes(stage4: tuple[dict, Path]) -> None:
    figures, out = stage4
    a = pd.read_parquet(out / "assignments.parquet")
    assert set(a["variant"]) == set(ARMS) and len(a) == FOUR.users
    ev = pd.read_parquet(out / "events.parquet")
    exp = ev[ev["ts"] >= a["assigned_at"].min()].merge(a[["user_id", "variant"]], on="user_id")
    assert (exp["served_by"] == exp["variant"]).all()
    fresh = exp["note_id"].str.startswith("sim")
    assert set(exp.loc[fresh, "served_by"]) == set(ARMS)  # the same fresh notes reach every arm
    manifest = json.loads((out / "manifest.json").read_text())
    arms = manifest["arms"]
    assert list(arms) == list(ARMS)
    assert arms["tags_explore"]["exploration"] == {
        "policy": "ucb",
        "prior_impressions": 20.0,
        "ucb_beta": 1.0,
    }
    assert arms["tags_quota"]["exploration"] == {"policy": "quota", "slot_every": 2}
    assert arms["treatment"]["exploration"] == {"policy": "none"} == arms["control"]["exploration"]
    assert all(arms[x]["cold_candidates"] == FOUR.cold_candidates for x in ARMS)
    assert arms["tags_quota"]["two_tower_feature_set"] == "tags" and "train_seconds" not in arms["tags_quota"]
    # the primary report stays treatment vs control, with the same summary keys
    report = json.loads((out / "report.json").read_text())
    assert (report["control"], report["treatment"]) == ("control", "treatment")
    assert figures["users"]["control"] + figures["users"]["treatment"] == sum(
        a["variant"].isin(["control", "treatment"])
    )
    assert sum(figures["users"][x] for x in ARMS) == figures["users"]["total"] == FOUR.users


def test_quota_arm_gives_every_nth_slot_to_a_cold_note(tiny_run: Path, stage4: tuple[dict, Path]) -> None:
    """tags_quota: slots 2 and 4 of 5 hold cold-start notes (published after the training cutoff or
    during the simulation); treatment, with the same model and candidates, has no such rule."""
    from ranking.data import load_run_data

    figures, out = stage4
    data = load_run_data(RunDir(tiny_run), "none")
    cold = set(map(str, data.catalog.note_ids[data.cold]))
    ev = pd.read_parquet(out / "events.parquet")
    imp = ev[(ev["event"] == "impression") & (ev["ts"] >= pd.Timestamp(figures_start(out)))]
    is_cold = imp["note_id"].str.startswith("sim") | imp["note_id"].isin(cold)
    slots = imp["position"].isin([1, 3])
    by_arm = is_cold[slots].groupby(imp.loc[slots, "served_by"]).mean()
    assert by_arm["tags_quota"] == 1.0 and by_arm["treatment"] < 0.9, by_arm.to_dict()
    per_arm = figures["per_arm"]
    fresh = imp["note_id"].str.startswith("sim").groupby(imp["served_by"]).mean()
    share = imp.groupby("served_by")["is_cold_start"].mean()
    for arm in ARMS:
        assert per_arm[arm]["fresh_share"]["value"] == pytest.approx(fresh[arm], abs=1e-6)
        lo, hi = per_arm[arm]["fresh_share"]["ci"]
        assert lo < fresh[arm] < hi
        assert per_arm[arm]["cold_start_share"] == pytest.approx(share[arm], abs=1e-6)


def figures_start(out: Path) -> str:
    return json.loads((out / "manifest.json").read_text())["days"]["assigned_at"]


def test_every_arm_is_compared_with_control_and_the_policy_arms_with_treatment(
    stage4: tuple[dict, Path],
) -> None:
    figures, out = stage4
    pairs = figures["comparisons"]
    assert list(pairs) == [
        "treatment_vs_control",
        "tags_explore_vs_control",
        "tags_quota_vs_control",
        "tags_explore_vs_treatment",
        "tags_quota_vs_treatment",
    ]
    a = pd.read_parquet(out / "assignments.parquet")
    for name, c in pairs.items():
        arm, base = name.split("_vs_")
        assert (c["treatment"], c["control"]) == (arm, base)
        assert c["users"] == [int((a["variant"] == base).sum()), int((a["variant"] == arm).sum())]
        warm = c["metrics"]["pv_ctr_warm"]
        assert {"lift", "ci", "p_value", "p_adjusted", "control_mean", "treatment_mean"} <= set(warm)
        assert warm["cuped"] is True
        assert (out / "compare" / f"{name}.json").exists()
    # treatment vs control in the comparisons is the primary report's analysis (same table, same metrics)
    primary = figures["metrics"]["pv_ctr"]
    assert pairs["treatment_vs_control"]["metrics"]["pv_ctr"]["lift"] == pytest.approx(
        primary["lift"], abs=1e-6
    )
    # the warm CTR means are clicks / impressions on non-cold impressions of each arm
    ev = pd.read_parquet(out / "events.parquet")
    exp = ev[(ev["ts"] >= a["assigned_at"].min()) & ~ev["is_cold_start"]]
    for arm in ARMS:
        mine = exp[exp["served_by"] == arm]
        ctr = (mine["event"] == "click").sum() / (mine["event"] == "impression").sum()
        assert figures["per_arm"][arm]["warm_ctr"]["value"] == pytest.approx(ctr, abs=1e-6)
    md = (out / "arms.md").read_text()
    assert "SIMULATION" in md
    for arm in ARMS:
        assert f"| {arm} |" in md
    for name in pairs:
        assert "| {} vs {} |".format(*name.split("_vs_")) in md


def test_each_arm_keeps_its_own_serving_state(tiny_run: Path) -> None:
    """Experiment events reach only the serving arm's recommender; the pre-period reaches all."""
    from tagllm.simulate.arms import train_arms
    from tagllm.simulate.engine import run_sessions
    from tagllm.simulate.fresh import Publisher, truth_tags
    from tagllm.simulate.truth import load_truth

    cfg = replace(FOUR, users=40, days=1, pre_days=1)
    arms = train_arms(RunDir(tiny_run), cfg)
    recs = [arm.recommender for arm in arms.values()]
    assert len({id(r) for r in recs}) == 4 and len({id(r.live) for r in recs}) == 4
    assert arms["tags_explore"].recommender.model is arms["treatment"].recommender.model  # trained once
    users = select_users(arms["control"].recommender.user_ids(), cfg.users, cfg.seed)
    start = float(np.ceil(arms["control"].recommender.now_s / 86_400) * 86_400)
    at = pd.Timestamp((start + 86_400) * 1e9, tz="UTC")
    a = assign(users, cfg.experiment, cfg.seed, at, cfg.arms)
    variants = dict(zip(a["user_id"], a["variant"], strict=True))
    truth = load_truth(RunDir(tiny_run))
    ev = run_sessions(
        arms, truth, users, variants, cfg, start, fresh=Publisher(truth, truth_tags, cfg, start)
    )
    imp = ev[(ev["event"] == "impression") & ev["note_id"].str.startswith("sim")]
    pre = imp["ts"] < at
    for name, arm in arms.items():
        rec = arm.recommender
        counts = imp[pre | (imp["served_by"] == name)]["note_id"].value_counts()
        got = rec.live.note_stats[0][rec.live.rows(list(counts.index))]
        assert got.tolist() == counts.tolist(), name
    # fresh notes reach the tag arms with their tags, control with none
    note = str(imp["note_id"].iloc[0])
    assert arms["control"].recommender.note_tags(note) == []
    assert (
        arms["tags_quota"].recommender.note_tags(note) == arms["treatment"].recommender.note_tags(note) != []
    )


# ---- the stage ----------------------------------------------------------------------------------


def test_stage_writes_labelled_logs_in_the_analysis_format(tiny_run: Path, stage: dict) -> None:
    out = tiny_run / "ab_sim"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["simulation"] is True and manifest["seed"] == FAST.seed
    assert set(manifest["arms"]) == {"control", "treatment"}
    assert manifest["arms"]["control"]["tag_source"] == "none"
    assert manifest["arms"]["treatment"]["tag_source"] == "ground_truth"
    assert manifest["days"]["pre"] == 1 and manifest["days"]["experiment"] == 2

    a = pd.read_parquet(out / "assignments.parquet")
    assert len(a) == FAST.users and a["user_id"].is_unique
    assert set(a["variant"]) == {"control", "treatment"}
    assert {"experiment", "assigned_at", "pre_clicks", "pre_impressions"} <= set(a.columns)

    ev = pd.read_parquet(out / "events.parquet")
    assert {"user_id", "note_id", "ts", "event", "dwell_seconds", "is_cold_start"} <= set(ev.columns)
    assert set(ev["event"]) <= {"impression", "click", "like", "collect", "comment", "share"}
    assert (ev.loc[ev["event"] == "click", "dwell_seconds"] >= 1).all()
    assert ev["is_cold_start"].any()
    pre = ev[ev["ts"] < a["assigned_at"].min()]
    assert len(pre) and (pre["served_by"] == "control").all()
    exp = ev[ev["ts"] >= a["assigned_at"].min()].merge(a[["user_id", "variant"]], on="user_id")
    assert (exp["served_by"] == exp["variant"]).all()
    # no note is shown twice to a user
    imp = ev[ev["event"] == "impression"]
    assert not imp.duplicated(["user_id", "note_id"]).any()

    report = json.loads((out / "report.json").read_text())
    overall = {m["metric"]: m for m in report["metrics"] if m["segment"] is None}
    assert set(overall) == set(METRIC_NAMES) and all(m["cuped"] for m in overall.values())
    assert report["metadata"]["simulation"] is True
    assert (
        "SIMULATION" in (out / "report.html").read_text() and "SIMULATION" in (out / "report.md").read_text()
    )

    assert stage["simulation"] is True and set(stage["metrics"]) == set(METRIC_NAMES)
    assert stage["users"]["control"] + stage["users"]["treatment"] == FAST.users
    assert stage["srm"]["status"] in ("ok", "mismatch") and stage["html"].endswith("report.html")
    for m in stage["metrics"].values():
        assert {"control_mean", "treatment_mean", "lift", "ci", "p_value"} <= set(m)
    assert RunDir(tiny_run).summary()["ab"]["simulation"] is True


def test_logs_run_through_the_stock_report_command(tiny_run: Path, stage: dict, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ab_analysis.cli import ab

    out = tiny_run / "ab_sim"
    res = CliRunner().invoke(
        ab,
        [
            "report",
            "--events", str(out / "events.parquet"),
            "--assignments", str(out / "assignments.parquet"),
            "--out", str(tmp_path / "plain"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "plain" / "report.json").read_text())
    assert {m["metric"] for m in doc["metrics"]} == set(METRIC_NAMES)
    res = CliRunner().invoke(
        ab,
        [
            "report",
            "--events", str(out / "events.parquet"),
            "--assignments", str(out / "assignments.parquet"),
            "--metrics", str(out / "metrics.yaml"),
            "--out", str(tmp_path / "cuped"),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cuped = json.loads((tmp_path / "cuped" / "report.json").read_text())
    ours = json.loads((out / "report.json").read_text())
    assert [m["rel_lift"] for m in cuped["metrics"]] == pytest.approx(
        [m["rel_lift"] for m in ours["metrics"]]
    )


def test_stage_is_deterministic(tiny_run: Path, stage: dict, tmp_path: Path) -> None:
    again = simulate_stage(tiny_run, FAST, out=tmp_path / "again")
    first = pd.read_parquet(tiny_run / "ab_sim" / "events.parquet")
    second = pd.read_parquet(tmp_path / "again" / "events.parquet")
    pd.testing.assert_frame_equal(first, second)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tiny_run / "ab_sim" / "assignments.parquet"),
        pd.read_parquet(tmp_path / "again" / "assignments.parquet"),
    )
    assert again["metrics"] == stage["metrics"]


def test_cli_help_and_usage_errors(tiny_run: Path) -> None:
    from click.testing import CliRunner

    from tagllm.simulate.cli import simulate

    res = CliRunner().invoke(simulate, ["--help"])
    assert res.exit_code == 0 and "--pre-days" in res.output and "SIMULATED" in res.output
    res = CliRunner().invoke(simulate, ["--run", str(tiny_run), "--days", "0"])
    assert res.exit_code == 2 and "--days" in res.output
    res = CliRunner().invoke(simulate, ["--run", str(tiny_run), "--k", "20", "--candidates", "10"])
    assert res.exit_code == 2 and "--candidates" in res.output
    res = CliRunner().invoke(simulate, ["--help"])
    assert "--arms" in res.output and "tags_explore" in res.output and "--explore-policy" in res.output
    for arms in ("control", "control,treatment,tags_greedy", "control,treatment,treatment"):
        res = CliRunner().invoke(simulate, ["--run", str(tiny_run), "--arms", arms])
        assert res.exit_code == 2 and "--arms" in res.output and "tags_explore" in res.output, res.output
    res = CliRunner().invoke(
        simulate, ["--run", str(tiny_run), "--arms", "control,treatment", "--cold-slot-every", "3"]
    )
    assert res.exit_code == 2 and "--cold-slot-every" in res.output and "tags_quota" in res.output
    res = CliRunner().invoke(simulate, ["--run", str(tiny_run), "--explore-policy", "greedy"])
    assert res.exit_code == 2 and "--explore-policy" in res.output


def test_headline_p_values_never_print_zero():
    from tagllm.simulate.stage import _p_text

    assert _p_text(0.0) == "p < 1e-06"
    assert _p_text(3.2e-4) == "p = 0.00032"
    assert _p_text(None) == "p = n/a"


def test_simulate_help_imports_no_torch():
    import subprocess
    import sys

    code = (
        "import sys\nfrom tagllm.cli import cli\ntry:\n    cli(['ab', 'simulate', '--help'])\n"
        "except SystemExit:\n    pass\nprint([m for m in ('torch', 'lightgbm') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--arms" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]"


def test_ratio_ci_is_the_delta_method_over_users():
    from tagllm.simulate.compare import ratio_ci

    assert ratio_ci(np.array([1.0, 2.0]), np.array([0.0, 0.0]))["value"] is None
    assert ratio_ci(np.array([]), np.array([]))["n"] == 0
    one = ratio_ci(np.array([2.0]), np.array([8.0]))
    assert one["value"] == 0.25 and one["ci"] == [None, None]
    # coverage: users with Poisson impressions and a per-user click rate; the CI holds the true ratio
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        imps = rng.poisson(20, 300).astype(float)
        rate = rng.beta(2, 8, 300)
        clicks = rng.binomial(imps.astype(int), rate).astype(float)
        r = ratio_ci(clicks, imps)
        assert r["value"] == pytest.approx(clicks.sum() / imps.sum(), abs=1e-6)
        hits += r["ci"][0] <= 0.2 <= r["ci"][1]
    assert 0.92 <= hits / 400 <= 0.98, hits / 400
