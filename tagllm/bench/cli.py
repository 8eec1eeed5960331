"""`tagllm bench ...`: benchmarks that print JSON.

Each benchmark is a function returning a JSON-able dict of figures (medians over repeats; ratios to
peers measured in the same run where a peer exists). ``bench all`` runs them all and writes one JSON
file per benchmark into ``--out``.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

Bench = Callable[[dict[str, Any]], dict[str, Any]]


def _machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}


def bench_data(opts: dict[str, Any]) -> dict[str, Any]:
    """Synthetic generation, validation and atomic write throughput for one size."""
    from features.datasets import load_source
    from features.io import RunDir
    from features.schemas import validate_tables

    size = opts.get("size", "small")
    gen, val, write = [], [], []
    rows = 0
    for _ in range(opts.get("repeats", 3)):
        t0 = time.perf_counter()
        ds = load_source("synthetic", size=size, seed=0)
        t1 = time.perf_counter()
        tables = validate_tables(ds.tables)
        t2 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            RunDir(tmp).write_tables(tables)
        t3 = time.perf_counter()
        gen.append(t1 - t0)
        val.append(t2 - t1)
        write.append(t3 - t2)
        rows = sum(len(df) for df in tables.values())
    return {
        "benchmark": "data",
        "size": size,
        "rows": rows,
        "generate_s_median": round(statistics.median(gen), 3),
        "validate_s_median": round(statistics.median(val), 3),
        "write_s_median": round(statistics.median(write), 3),
        "validate_rows_per_s": round(rows / statistics.median(val)),
        "machine": _machine(),
    }


BENCHMARKS: dict[str, Bench] = {"data": bench_data}


@click.group("bench")
def bench() -> None:
    """Benchmarks that print JSON (medians; ratios to peers measured in the same run)."""


@bench.command("data")
@click.option("--size", type=click.Choice(["tiny", "small", "medium", "large"]), default="small")
@click.option("--repeats", type=click.IntRange(1, 50), default=3, show_default=True)
def bench_data_cmd(size: str, repeats: int) -> None:
    """Synthetic community generation + validation + atomic write throughput."""
    click.echo(json.dumps(bench_data({"size": size, "repeats": repeats}), indent=2))


def _module_benchmarks(run: str, scratch: str) -> dict[str, list[str]]:
    """The per-package benchmark commands (each prints JSON) over a finished demo run.

    ``scratch`` is a copy of the run for benchmarks that write into it (serving's TagNotes pushes
    into the Feast store). The serving benchmark's Recommend-at-100k-notes part needs a large run
    that takes long to build, so it is skipped here: run it with ``--big-run`` (docs/benchmarks.md).
    """
    import shutil
    import sys

    py = sys.executable
    feats = [py, "-m", "tagllm.bench.features", "--run", run, "--json"]
    if shutil.which("redis-server"):
        feats.append("--start-redis")
    return {
        "features": feats,
        "student": [py, "-m", "tagllm.bench.student", "--run", run, "--json"],
        "ranking": [py, "-m", "tagllm.bench.ranking", run],
        "ab": [py, "-m", "tagllm.bench.ab", "--users", "1000000", "--json"],
        "ab_scale": [py, "-m", "tagllm.bench.ab_scale", "--events", "10000000", "--json"],
        "serving": [py, "-m", "tagllm.bench.serving", "--run", scratch, "--skip", "recommend", "--json"],
    }


@bench.command("all")
@click.option("--out", type=click.Path(file_okay=False), default="docs/bench-results", show_default=True)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False),
    default="runs/demo",
    show_default=True,
    help="A finished `tagllm demo` run for the feature, student and ranking benchmarks.",
)
def bench_all(out: str, run_dir: str) -> None:
    """Run every benchmark with default settings; save each one's JSON into --out.

    Benchmarks run one at a time in their own process (no cross-talk); a failing one is recorded
    with its exit status and the others still run.
    """
    import shutil
    import tempfile

    from features.io import write_json

    Path(out).mkdir(parents=True, exist_ok=True)
    if not (Path(run_dir) / "summary.json").exists():
        raise click.UsageError(
            f"--run {run_dir}: no finished demo run there; run `tagllm demo --out {run_dir}` first"
        )
    results: dict[str, Any] = {name: fn({}) for name, fn in BENCHMARKS.items()}
    scratch = tempfile.mkdtemp(prefix="tagllm-bench-run-")
    shutil.copytree(run_dir, scratch, dirs_exist_ok=True)
    try:
        _run_modules(_module_benchmarks(run_dir, scratch), results)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for name, figures in results.items():
        write_json(figures, Path(out) / f"{name}.json")
    click.echo(json.dumps(results, indent=2, default=str))


def _run_modules(commands: dict[str, list[str]], results: dict[str, Any]) -> None:
    """Run each benchmark command in its own process; keep its JSON or its exit status and stderr."""
    import subprocess

    for name, cmd in commands.items():
        click.echo(f"running {name}: {' '.join(cmd)}", err=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        try:
            results[name] = (
                json.loads(proc.stdout[proc.stdout.index("{") :]) if proc.returncode == 0 else None
            )
        except ValueError:
            results[name] = None
        if results[name] is None:
            results[name] = {"error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
