from __future__ import annotations

import json

import pytest

from features.errors import ConfigError


def test_stages_write_summary_sections(tmp_path):
    from features.io import RunDir
    from features.prepare import prepare
    from ranking.pipeline import ranker_stage, retrieval_stage
    from ranking.ranker import RankerConfig
    from ranking.retrieval.train import TrainConfig

    prepare("synthetic", tmp_path, size="tiny", seed=0)
    fig = retrieval_stage(tmp_path, tag_sources=["ground_truth"], config=TrainConfig(epochs=1))
    assert fig["main_model"] == "tags:ground_truth"
    assert (tmp_path / "retrieval" / "model.pt").exists()
    assert {"cold_recall@50_all", "cold_recall@50_segment", "cold_recall@50_quota"} <= set(fig)
    assert fig["cold_quota"] == 10
    rk = ranker_stage(tmp_path, tag_source="ground_truth", config=RankerConfig(n_estimators=10))
    assert 0 <= rk["full_auc"] <= 1
    explore = rk["variants"]["exploration"]
    assert set(explore) == {"none", "ucb", "thompson"}
    # cold-start notes have no logged impressions: the widest posterior, so UCB never shows fewer
    assert explore["ucb"]["cold_share_top10"] >= explore["none"]["cold_share_top10"]
    assert {"retrieval", "ranker"} <= set(RunDir(tmp_path).summary())

    from click.testing import CliRunner

    from ranking.cli import eval_group

    runner = CliRunner()
    for pool, want in (
        ("quota", {"quota"}),
        ("every", {"all", "segment", "quota"}),
        ("both", {"all", "segment", "quota"}),
    ):
        res = runner.invoke(eval_group, [str(tmp_path), "--pool", pool, "--json"])
        assert res.exit_code == 0, res.output
        assert {r["pool"] for r in json.loads(res.output)} == want


def test_retrieval_stage_rejects_unknown_tag_source(tmp_path):
    from features.prepare import prepare
    from ranking.pipeline import retrieval_stage

    prepare("synthetic", tmp_path, size="tiny", seed=0)
    with pytest.raises(ConfigError, match="tag_sources"):
        retrieval_stage(tmp_path, tag_sources=["bogus"])


def test_ablation_command_writes_the_table(tmp_path):
    from click.testing import CliRunner

    from features.prepare import prepare
    from ranking.cli import train

    prepare("synthetic", tmp_path, size="tiny", seed=0)
    runner = CliRunner()
    res = runner.invoke(
        train,
        [
            "ablation",
            str(tmp_path),
            "--tags",
            "ground_truth",
            "--variant",
            "before",
            "--variant",
            "full",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output[res.output.index("[") :])
    models = {r["model"] for r in rows}
    assert models == {
        "before",
        "full",
        "tag overlap heuristic (ground_truth)",
        "tag overlap heuristic, minus exposure (ground_truth)",
        "popularity",
    }
    assert {r["pool"] for r in rows} == {"all", "segment", "quota"}
    full = next(r for r in rows if r["model"] == "full" and r["pool"] == "all")
    assert full["freshness_scale"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    table = (tmp_path / "retrieval" / "ablation.md").read_text()
    assert table.startswith("| model |") and "| full |" in table
    assert (tmp_path / "retrieval" / "ablation.parquet").exists()
    bad = runner.invoke(train, ["ablation", str(tmp_path), "--variant", "bogus"])
    assert bad.exit_code != 0 and "bogus" in str(bad.exception or bad.output)
