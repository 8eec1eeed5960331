"""`tagllm serve`'s exploration options: flags and YAML keys -> the recommender's policy."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from features.errors import ConfigError
from ranking.recommend import Exploration
from serving.config import ServerConfig
from tagllm.cli import cli


def test_config_keys_build_the_policy(tmp_path):
    from serving.server import load_config

    path = tmp_path / "serve.yaml"
    path.write_text(
        "run_dir: r\nexploration: ucb\nexploration-prior-impressions: 5\nexploration-ucb-beta: 2.5\n"
    )
    cfg = ServerConfig.from_mapping(load_config(path))
    assert cfg.exploration_policy() == Exploration("ucb", prior_impressions=5, ucb_beta=2.5)
    # --cold-slot-every alone stays the quota it always was
    assert ServerConfig(run_dir="r", cold_slot_every=5).exploration_policy() == Exploration(
        "quota", slot_every=5
    )
    assert ServerConfig(run_dir="r").exploration_policy() == Exploration()
    thompson = ServerConfig(run_dir="r", exploration="thompson", exploration_seed=3).exploration_policy()
    assert thompson == Exploration("thompson", seed=3)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"exploration": "greedy"},
            r"^exploration: got 'greedy'; expected one of none, quota, ucb, thompson",
        ),
        (
            {"exploration": "quota"},
            r"^cold_slot_every: got 0 with exploration 'quota'; expected an integer >= 1",
        ),
        ({"exploration": "ucb", "cold_slot_every": 5}, r"^cold_slot_every: got 5 with exploration 'ucb'"),
        (
            {"exploration": "ucb", "exploration_prior_impressions": -1},
            r"^exploration\.prior_impressions: got -1",
        ),
        ({"exploration": "ucb", "exploration_ucb_beta": "wide"}, r"^exploration\.ucb_beta: got 'wide'"),
    ],
)
def test_bad_exploration_options_are_config_errors(values: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message):
        ServerConfig.from_mapping({"run_dir": "r", **values})


def test_flags_are_listed_and_checked():
    runner = CliRunner()
    text = runner.invoke(cli, ["serve", "--help"]).output
    for flag in (
        "--exploration [none|quota|ucb|thompson]",
        "--exploration-prior-impressions",
        "--exploration-ucb-beta",
    ):
        assert flag in text, flag
    bad = runner.invoke(cli, ["serve", "--run", ".", "--exploration", "greedy"])
    assert bad.exit_code == 2 and "'greedy' is not one of" in bad.output


def test_the_server_hands_the_policy_to_the_recommender(monkeypatch, tmp_path):
    """serving.server._load builds the recommender with the configured policy."""
    from ranking.recommend import Recommender
    from serving import server

    seen: dict[str, Any] = {}

    class Loaded(Exception):
        pass

    def fake_from_run(run_dir, **kwargs):
        seen.update(kwargs)
        raise Loaded

    monkeypatch.setattr(Recommender, "from_run", staticmethod(fake_from_run))
    cfg = ServerConfig(run_dir=tmp_path, exploration="ucb", exploration_ucb_beta=0.5, cold_candidates=7)
    with pytest.raises(Loaded):
        server._load(cfg, None, None, None, None)  # type: ignore[arg-type]
    assert seen["exploration"] == Exploration("ucb", ucb_beta=0.5) and seen["cold_candidates"] == 7
