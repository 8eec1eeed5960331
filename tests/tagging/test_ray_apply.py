"""``tag apply --engine ray``: equal to the single-process tags table, resumable per partition after a kill.

One local Ray cluster (2 CPUs) per module; the student is a tiny scorer trained on a tiny run.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from features.errors import ConfigError, MissingDependencyError
from features.io import RunDir
from tagging.ray_apply import DELAY_ENV, PartitionPaths, RayApplyConfig, plan_partitions, ray_parts_dir
from tagging.student import apply_chunk
from tests.tagging._runs import tiny_synthetic_run

REPO = Path(__file__).resolve().parents[2]
SCORER = {"scorer": {"buckets": 1024, "dim": 8, "hidden": 8}, "epochs": 1, "batch_size": 32, "device": "cpu"}
BATCH = 8  # apply chunk 256: the tiny run's 300 notes make two partitions (256 + 44)


# --------------------------------------------------------------------------- no cluster


def test_partitions_cover_the_notes_in_order_at_chunk_multiples() -> None:
    for n, want, actors, batch in [
        (300, 0, 2, 8),
        (20_000, 0, 2, 64),
        (20_000, 7, 1, 64),
        (513, 9, 1, 8),
        (1, 3, 1, 8),
    ]:
        plan = plan_partitions(n, want, actors, batch)
        assert plan[0][0] == 0 and plan[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))  # contiguous, in order
        assert all((stop - start) % apply_chunk(batch) == 0 for start, stop in plan[:-1])
        assert len(plan) <= max(want, 1) or want == 0
    assert plan_partitions(0, 4, 2, 8) == []
    assert len(plan_partitions(20_000, 0, 2, 64)) == 4  # one per ~5k notes


def test_bad_options_name_the_flag() -> None:
    with pytest.raises(ConfigError, match="--actors"):
        RayApplyConfig(actors=0)
    with pytest.raises(ConfigError, match="--partitions"):
        RayApplyConfig(partitions=-1)


def test_missing_ray_names_the_engine_and_the_extra(monkeypatch) -> None:
    from tagging.ray_apply import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"--engine ray.*tagllm\[ray\]"):
        require_ray()


def test_gpu_actors_when_the_cluster_has_gpus() -> None:
    from types import SimpleNamespace

    from tagging.ray_apply import _resources

    def cluster(gpus: float) -> SimpleNamespace:
        return SimpleNamespace(cluster_resources=lambda: {"CPU": 16.0, "GPU": gpus})

    assert _resources(cluster(2), RayApplyConfig()) == (1.0, "cuda")
    assert _resources(cluster(0), RayApplyConfig()) == (0.0, "cpu")
    assert _resources(cluster(2), RayApplyConfig(gpus_per_actor=0)) == (0.0, "cpu")  # asked: CPU actors
    assert _resources(cluster(2), RayApplyConfig(gpus_per_actor=0.5)) == (0.5, "cuda")


def test_help_does_not_import_ray() -> None:
    code = "import sys, tagllm.cli, tagging.cli, tagging.pipeline; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- on a local cluster


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, object]:
    """A tiny run with a tiny scorer student and its single-process tags table."""
    from tagging.pipeline import apply_run, distill_run

    run = tiny_synthetic_run(tmp_path_factory, "ray_apply", teach=True)
    distill_run(run, config=SCORER, progress=False, evaluate=False)
    apply_run(run, batch_size=BATCH, progress=False, device="cpu")
    return {"run": run, "tags": pd.read_parquet(run / "tables" / "tags.parquet")}


@pytest.fixture(scope="module")
def cluster() -> object:
    import ray  # in requirements/cpu.lock: a missing ray fails here rather than skipping

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("tags.parquet", "tag_vocab.json", "summary.json"))
    return dst


def _assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got["note_id"].is_unique and len(got) == len(want)
    got, want = (t.sort_values("note_id", kind="stable").reset_index(drop=True) for t in (got, want))
    cols = ["note_id", "tagger", "tagger_version"]
    pd.testing.assert_frame_equal(got[cols], want[cols])
    for nid, a, b in zip(got["note_id"], got["tags"], want["tags"], strict=True):
        assert [(t["text"], t["dimension"]) for t in a] == [(t["text"], t["dimension"]) for t in b], nid
        assert [t["confidence"] for t in a] == pytest.approx([t["confidence"] for t in b], abs=1e-6), nid


def test_ray_equals_the_single_process_table_and_a_rerun_skips_every_partition(
    trained, cluster, tmp_path
) -> None:
    from tagging.pipeline import apply_run

    run = _copy(trained["run"], tmp_path / "run")
    figs = apply_run(run, batch_size=BATCH, engine="ray", ray_config=RayApplyConfig(actors=2), progress=False)
    ray_figs = figs["apply"]["ray"]
    assert ray_figs["partitions"] == 2 and ray_figs["tagged"] == [0, 1] and ray_figs["skipped"] == []
    assert figs["apply"]["engine"] == "ray" and figs["apply"]["notes"] == len(trained["tags"])
    _assert_same_table(pd.read_parquet(run / "tables" / "tags.parquet"), trained["tags"])

    again = apply_run(run, batch_size=BATCH, engine="ray", ray_config=RayApplyConfig(actors=2))["apply"][
        "ray"
    ]
    assert again["skipped"] == [0, 1] and again["tagged"] == []
    _assert_same_table(pd.read_parquet(run / "tables" / "tags.parquet"), trained["tags"])


def _markers(run: Path) -> dict[int, int]:
    """Partition -> its marker's mtime (ns), for the partitions that have one."""
    paths = [PartitionPaths(ray_parts_dir(RunDir(run)), i) for i in range(2)]
    return {p.index: p.marker.stat().st_mtime_ns for p in paths if p.marker.exists()}


def test_a_killed_job_redoes_only_unfinished_partitions(trained, cluster, tmp_path) -> None:
    from tagging.pipeline import apply_run

    run = _copy(trained["run"], tmp_path / "run")
    cmd = [
        sys.executable, "-m", "tagllm.cli", "tag", "apply", "--run", str(run), "--batch-size", str(BATCH),
        "--engine", "ray", "--ray-address", str(cluster), "--actors", "1", "--partitions", "2",
    ]  # fmt: skip
    # one actor, 8 s before each partition's write: the first partition done (either one: Ray Data
    # does not promise an order) leaves >= 8 s before the second
    env = {**os.environ, DELAY_ENV: "8", "PYTHONPATH": str(REPO)}
    log = tmp_path / "job.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not _markers(run) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, f"the job ended before it could be killed: {log.read_text()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(3)  # the cluster reaps the dead driver's actor
    done = _markers(run)
    assert len(done) == 1, done  # one finished, one not: the kill landed mid-job
    assert not (run / "tables" / "tags.parquet").exists()
    (finished,) = done

    figs = apply_run(run, batch_size=BATCH, engine="ray", ray_config=RayApplyConfig(actors=1, partitions=2))
    assert figs["apply"]["ray"]["skipped"] == [finished] and figs["apply"]["ray"]["tagged"] == [1 - finished]
    assert _markers(run)[finished] == done[finished]  # the finished partition was not redone
    tags = pd.read_parquet(run / "tables" / "tags.parquet")
    assert sorted(tags["note_id"]) == sorted(trained["tags"]["note_id"])  # none missing, none twice
    _assert_same_table(tags, trained["tags"])
