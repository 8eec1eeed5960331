"""Atomic writes: an interrupted write never leaves a partial file or table folder."""

from __future__ import annotations

import pandas as pd
import pytest

from features.errors import NotFoundError
from features.io import RunDir, atomic_path, write_json, write_parquet


class Boom(RuntimeError):
    pass


def test_interrupted_write_leaves_previous_file(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pd.DataFrame({"a": [1, 2]}), target)
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_bytes(b"half a parquet file")
        raise Boom
    assert pd.read_parquet(target)["a"].tolist() == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_interrupted_first_write_leaves_nothing(tmp_path, monkeypatch):
    def explode(self, path, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"PAR1 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", explode)
    with pytest.raises(KeyboardInterrupt):
        write_parquet(pd.DataFrame({"a": [1]}), tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


def test_write_tables_is_all_or_nothing(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.write_tables({"a": pd.DataFrame({"x": [1]}), "b": pd.DataFrame({"x": [2]})})
    calls = {"n": 0}
    real = pd.DataFrame.to_parquet

    def second_fails(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Boom("disk full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", second_fails)
    with pytest.raises(Boom):
        run.write_tables({"a": pd.DataFrame({"x": [10]}), "b": pd.DataFrame({"x": [20]})})
    monkeypatch.undo()
    # the previous tables are intact and no staging folder is left behind
    assert pd.read_parquet(run.table_path("a"))["x"].tolist() == [1]
    assert pd.read_parquet(run.table_path("b"))["x"].tolist() == [2]
    assert sorted(p.name for p in run.path.iterdir()) == ["tables"]


def test_summary_sections_merge(tmp_path):
    run = RunDir(tmp_path)
    run.update_summary("data", {"rows": 3})
    run.update_summary("teacher", {"f1": 0.5})
    assert run.summary() == {"data": {"rows": 3}, "teacher": {"f1": 0.5}}
    write_json({"x": 1}, tmp_path / "y.json")
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_run_and_table_are_not_found(tmp_path):
    with pytest.raises(NotFoundError, match=r"not a prepared run directory.*tagllm data prepare"):
        RunDir(tmp_path / "nope").require()
    run = RunDir(tmp_path)
    run.write_tables({"notes": pd.DataFrame({"x": [1]})})
    with pytest.raises(NotFoundError, match=r"table 'users' not found.*present: notes"):
        run.read_table("users")


def test_feast_yaml_files_name_the_run_paths_rundir_names(tmp_path) -> None:
    """The stock `feast` CLI reads feature_repo/feature_store*.yaml, which cannot ask RunDir: the
    paths they spell must be RunDir's (registry and SQLite online store of each flavour)."""
    import yaml

    from features.feast_repo import FEATURE_REPO

    run = RunDir(tmp_path)
    for name, online in (("feature_store.yaml", "sqlite"), ("feature_store.redis.yaml", "redis")):
        raw = yaml.safe_load((FEATURE_REPO / name).read_text(encoding="utf-8"))
        expand = lambda p: p.replace("${TAGLLM_RUN_DIR}", str(tmp_path))  # noqa: E731
        assert expand(raw["registry"]["path"]) == str(run.feast_registry_for(online)), name
        if online == "sqlite":
            assert expand(raw["online_store"]["path"]) == str(run.feast_online_store), name
