"""Benchmark the student's tagging throughput, quiet and beside a second CPU-bound torch process.

    python -m tagllm.bench.student --run RUN_DIR [--model DIR] [--batch-size 64] [--json]

Measures notes/s (median of ``--repeats`` passes over ``--sample`` notes) for:

- the student at its default threads (half the cores), on a quiet machine;
- the same while a second process runs torch matrix products with torch's default threads (what a
  second distillation does): the slowdown this project promises to keep <= ~2x;
- the student with every core (``--threads`` = cores) beside the same second process, to show what
  oversubscription costs;
- peers on the same notes: the offline handbook teacher and KeyBERT.

Tag quality is not measured here: ``tagllm tag report`` scores the student against the teacher and
peers on the held-out notes.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

__all__ = ["bench", "main"]

log = logging.getLogger(__name__)

_BUSY = (
    "import time, torch\n"
    "a = torch.randn(768, 768)\n"
    "end = time.time() + {seconds}\n"
    "while time.time() < end:\n"
    "    a = torch.tanh(a @ a)\n"
)


def _rate(fn: Callable[[], Any], n: int, repeats: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append(n / (time.perf_counter() - t0))
    return {"notes_per_s": round(statistics.median(runs), 1), "runs": [round(r, 1) for r in runs]}


@contextmanager
def _second_process(seconds: float) -> Iterator[subprocess.Popen[bytes]]:
    """A CPU-bound torch process (default threads) for ``seconds``; stopped on exit."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.Popen([sys.executable, "-c", _BUSY.format(seconds=seconds)], env=env)
    try:
        time.sleep(2.0)  # let it import torch and start multiplying
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - defensive
            proc.kill()


def bench(
    run_dir: str,
    *,
    model_dir: str | None = None,
    sample: int = 1024,
    repeats: int = 5,
    batch_size: int = 64,
    peers: bool = True,
) -> dict[str, Any]:
    """Throughput figures (see the module docstring)."""
    import torch

    from features.io import RunDir
    from tagging.handbook_model import load_handbook
    from tagging.student import load_student
    from tagging.teachers import make_teacher
    from tagging.types import notes_from_frame

    run = RunDir(run_dir).require()
    hb_path = run.handbook
    hb = load_handbook(hb_path) if hb_path.exists() else None
    notes = notes_from_frame(run.read_table("notes"))[:sample]
    mdir = Path(model_dir) if model_dir else run.path / "student" / "model"
    student = load_student(mdir, handbook=hb, batch_size=batch_size, device="cpu")
    cores = os.cpu_count() or 1
    student.tag(notes[:batch_size])  # warm-up: caches, allocator
    out: dict[str, Any] = {
        "run": str(run.path),
        "model": str(mdir),
        "model_version": student.version,
        "arch": student.meta.get("arch", "seq2seq"),
        "cores": cores,
        "sample": len(notes),
        "repeats": repeats,
        "batch_size": batch_size,
    }
    thr: dict[str, Any] = {}
    default_threads = torch.get_num_threads()
    thr["student_quiet"] = {
        **_rate(lambda: student.tag(notes), len(notes), repeats),
        "threads": default_threads,
    }
    seconds = 10 + 3 * repeats * len(notes) / max(thr["student_quiet"]["notes_per_s"], 1.0)
    with _second_process(seconds * 3):
        thr["student_beside_torch"] = {
            **_rate(lambda: student.tag(notes), len(notes), repeats),
            "threads": default_threads,
        }
        torch.set_num_threads(cores)
        try:
            thr["student_all_cores_beside_torch"] = {
                **_rate(lambda: student.tag(notes), len(notes), repeats),
                "threads": cores,
            }
        finally:
            torch.set_num_threads(default_threads)
    quiet = thr["student_quiet"]["notes_per_s"]
    for key in ("student_beside_torch", "student_all_cores_beside_torch"):
        rate = thr[key]["notes_per_s"]
        thr[key]["slowdown_vs_quiet"] = round(quiet / rate, 2) if rate else None
    if peers:
        offline = make_teacher("offline", hb) if hb is not None else None
        if offline is not None:
            thr["offline_teacher"] = _rate(lambda: offline.tag(notes), len(notes), repeats)
        try:
            from tagging.peers import KeyBertTagger

            kb = KeyBertTagger()
            thr["keybert"] = _rate(lambda: kb.tag(notes), len(notes), max(1, repeats // 2))
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            thr["keybert"] = {"error": f"{type(exc).__name__}: {exc}"}
        for peer in ("offline_teacher", "keybert"):
            rate = thr.get(peer, {}).get("notes_per_s")
            thr[f"student_over_{peer}"] = round(quiet / rate, 2) if rate else None
    out["throughput"] = thr
    return out


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True))
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None)
@click.option("--peers/--no-peers", default=True, show_default=True)
@click.option("--sample", type=click.IntRange(min=1), default=1024, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def main(
    run_dir: str,
    model_dir: str | None,
    peers: bool,
    sample: int,
    repeats: int,
    batch_size: int,
    as_json: bool,
) -> None:
    """Student throughput: quiet, beside a second CPU-bound torch process, and peers."""
    if not as_json:
        logging.basicConfig(level=logging.INFO)
    res = bench(
        run_dir, model_dir=model_dir, sample=sample, repeats=repeats, batch_size=batch_size, peers=peers
    )
    click.echo(json.dumps(res, indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":  # pragma: no cover
    main()
