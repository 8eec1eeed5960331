"""Benchmark ``tag apply --engine ray`` (a local Ray cluster) against the single-process path.

    python -m tagllm.bench.ray_tagging --run RUN_DIR [--sample N] [--repeats 2] [--actors 2] [--json]

Copies what tagging needs from RUN_DIR (notes, handbook, student, teacher tags, ground truth) into a
scratch folder (``--sample N``: only the notes table's first N notes), then alternates ``apply_run``
with ``engine="local"`` and ``engine="ray"`` for ``--repeats`` rounds (interleaved, so a noisy
neighbour hits both alike). Every Ray round starts from an empty partition folder (nothing is skipped).
notes/s is the whole ``apply_run`` call (model load, tagging, table and vocabulary writes, held-out
scoring) for both engines; the Ray cluster (``--actors`` CPUs, one CPU and one torch thread per actor)
is started once, before the rounds, and its start-up time is reported apart. The single process uses
its default threads (half the cores). The last rounds' tables are compared (identical tags expected).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import pandas as pd

__all__ = ["bench", "main"]

log = logging.getLogger(__name__)

_COPY = ("tables", "ground_truth", "handbook.yaml", "manifest.json", "student/model", "student/split.parquet")


def _scratch_run(src: Path, dst: Path, sample: int | None) -> Path:
    """The parts of a run that ``tag apply`` reads, copied under ``dst`` (notes cut to ``sample``)."""
    for rel in _COPY:
        s = src / rel
        if s.is_dir():
            shutil.copytree(s, dst / rel)
        elif s.exists():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, dst / rel)
    (dst / "tables" / "tags.parquet").unlink(missing_ok=True)
    if sample is not None:
        notes = dst / "tables" / "notes.parquet"
        pd.read_parquet(notes).head(sample).to_parquet(notes, index=False)
    return dst


def _same_tags(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    a, b = (t.sort_values("note_id").reset_index(drop=True) for t in (a, b))
    if len(a) != len(b) or list(a["note_id"]) != list(b["note_id"]):
        return False
    for x, y in zip(a["tags"], b["tags"], strict=True):
        if [(t["text"], t["dimension"]) for t in x] != [(t["text"], t["dimension"]) for t in y]:
            return False
        if any(abs(t["confidence"] - u["confidence"]) > 1e-6 for t, u in zip(x, y, strict=True)):
            return False
    return True


def _round(run: Path, engine: str, batch_size: int, actors: int, n: int) -> tuple[float, dict[str, Any]]:
    from tagging.pipeline import apply_run
    from tagging.ray_apply import RayApplyConfig

    cfg = RayApplyConfig(actors=actors) if engine == "ray" else None
    shutil.rmtree(run / "student" / "ray_apply", ignore_errors=True)
    t0 = time.perf_counter()
    figs = apply_run(run, batch_size=batch_size, engine=engine, ray_config=cfg, progress=False, device="cpu")
    rate = n / (time.perf_counter() - t0)
    log.info("%s: %.1f notes/s", engine, rate)
    return rate, figs["apply"]


def bench(
    run_dir: str, *, sample: int | None = None, repeats: int = 2, actors: int = 2, batch_size: int = 64
) -> dict[str, Any]:
    """notes/s of both engines, medians over interleaved rounds, and their ratio."""
    import ray

    from features.io import RunDir

    RunDir(run_dir).require()
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    applied: dict[str, dict[str, Any]] = {}
    tables: dict[str, pd.DataFrame] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        run = _scratch_run(Path(run_dir), Path(tmp) / "run", sample)
        notes = len(pd.read_parquet(run / "tables" / "notes.parquet"))
        t0 = time.perf_counter()
        ray.init(num_cpus=actors, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        cluster_s = time.perf_counter() - t0
        try:
            for _ in range(repeats):
                for engine in ("local", "ray"):
                    rate, applied[engine] = _round(run, engine, batch_size, actors, notes)
                    rates[engine].append(rate)
                    tables[engine] = pd.read_parquet(run / "tables" / "tags.parquet")
        finally:
            ray.shutdown()
    med = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "run": str(run_dir),
        "notes": notes,
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "repeats": repeats,
        "batch_size": batch_size,
        "local": {
            "notes_per_s": round(med["local"], 1),
            "runs": [round(r, 1) for r in rates["local"]],
            "threads": applied["local"].get("threads"),
        },
        "ray": {
            "notes_per_s": round(med["ray"], 1),
            "runs": [round(r, 1) for r in rates["ray"]],
            "actors": actors,
            "cpus_per_actor": 1,
            "partitions": applied["ray"]["ray"]["partitions"],
            "cluster_start_s": round(cluster_s, 1),
        },
        "ray_over_local": round(med["ray"] / med["local"], 2),
        "identical_tags": _same_tags(tables["local"], tables["ray"]),
    }


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--sample", type=click.IntRange(min=1), default=None, help="Only the first N notes [default: all]."
)
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--actors", type=click.IntRange(min=1), default=2, show_default=True, help="= cluster CPUs.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def main(run_dir: str, sample: int | None, repeats: int, actors: int, batch_size: int, as_json: bool) -> None:
    """Tagging notes/s: Ray Data (local cluster) vs the single process, in the same run."""
    if not as_json:
        logging.basicConfig(level=logging.INFO)
    res = bench(run_dir, sample=sample, repeats=repeats, actors=actors, batch_size=batch_size)
    click.echo(json.dumps(res, indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
