"""Batch tagging on Ray Data: the student in an actor pool, partitioned parquet in and out, resumable.

``tagllm tag apply --engine ray`` cuts the run's notes into partitions (contiguous, in table order, at
multiples of :func:`~tagging.student.apply_chunk` so every ``tagger.tag`` call sees exactly the notes
the single-process path gives it: the tags are then identical, not merely close). Each pending
partition is one row of a Ray dataset; ``map_batches`` hands it to an actor (which loaded the student
once) that reads the partition's notes parquet, tags it and writes the partition's tags parquet
(tmp + rename), then a marker ``part-NNNNN.done.json`` with the row count and the input fingerprint.

Resuming: a partition whose marker names the same fingerprint (the notes' content, the model's
weights hash, the handbook's bytes, batch size, beams and device) and row count, and whose tags file
holds that many rows, is skipped; every other partition is redone. A killed job therefore redoes only
unfinished partitions. The final ``tags`` table is the partitions concatenated in order.

Layout under ``RUN_DIR/student/ray_apply/``: ``notes/part-NNNNN.parquet`` (inputs, written for
pending partitions) and ``tags/part-NNNNN.parquet`` + ``tags/part-NNNNN.done.json``.

``ray`` is imported only inside the functions that need it (``pip install 'tagllm[ray]'``). On a
remote cluster (``--ray-address``) the workers need this package installed (same version).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from features.errors import ConfigError, MissingDependencyError
from features.io import RunDir, read_json, write_json, write_parquet
from tagging.student import apply_chunk

if TYPE_CHECKING:
    from types import ModuleType

    from tagging.types import NoteInput

__all__ = [
    "DELAY_ENV",
    "PartitionPaths",
    "RayApplyConfig",
    "RayApplyFigures",
    "plan_partitions",
    "ray_parts_dir",
    "ray_tag_table",
    "require_ray",
]

log = logging.getLogger(__name__)

# test-only: seconds each actor waits before writing a partition, so a kill lands mid-job
DELAY_ENV = "TAGLLM_RAY_APPLY_DELAY_S"
NOTES_PER_PARTITION = 5120  # the default partition size: ~1 min of one CPU, the unit of redone work
_PART_RE = re.compile(r"^part-(\d{5})\.(parquet|done\.json)$")


@dataclass(frozen=True)
class RayApplyConfig:
    """How ``--engine ray`` runs.

    Args:
        address: ``--ray-address`` of a running cluster; None starts a local one (or reuses the
            cluster this process is already connected to).
        partitions: ``--partitions``; 0 = about one per 5,120 notes, at least two per actor.
        actors: ``--actors``: the size of the actor pool.
        cpus_per_actor: Ray CPUs (and torch threads) per actor.
        gpus_per_actor: Ray GPUs per actor; None = 1 when the cluster has GPUs, else 0.
        local_cpus: ``num_cpus`` of a started local cluster (default: actors × cpus_per_actor).
        batch_size: notes per forward pass (as ``--batch-size``).
        num_beams: seq2seq beams (as ``--num-beams``).
    """

    address: str | None = None
    partitions: int = 0
    actors: int = 2
    cpus_per_actor: float = 1.0
    gpus_per_actor: float | None = None
    local_cpus: int | None = None
    batch_size: int = 64
    num_beams: int = 1

    def __post_init__(self) -> None:
        for name, value, low in (
            ("--partitions", self.partitions, 0),
            ("--actors", self.actors, 1),
            ("--batch-size", self.batch_size, 1),
            ("--num-beams", self.num_beams, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.cpus_per_actor <= 0:
            raise ConfigError(f"cpus_per_actor must be > 0, got {self.cpus_per_actor!r}")
        if self.gpus_per_actor is not None and self.gpus_per_actor < 0:
            raise ConfigError(f"gpus_per_actor must be >= 0 or None (auto), got {self.gpus_per_actor!r}")


@dataclass(frozen=True)
class RayApplyFigures:
    """What a Ray apply did: partitions planned, skipped (complete from an earlier run) and tagged."""

    partitions: int
    skipped: tuple[int, ...]
    tagged: tuple[int, ...]
    actors: int
    cpus_per_actor: float
    gpus_per_actor: float
    device: str
    address: str
    seconds: float
    tag_seconds: float

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["skipped"], d["tagged"] = list(self.skipped), list(self.tagged)
        return d


@dataclass(frozen=True)
class PartitionPaths:
    """The files of partition ``index`` under ``root`` (``RUN_DIR/student/ray_apply``)."""

    root: Path
    index: int

    @property
    def notes(self) -> Path:
        return self.root / "notes" / f"part-{self.index:05d}.parquet"

    @property
    def tags(self) -> Path:
        return self.root / "tags" / f"part-{self.index:05d}.parquet"

    @property
    def marker(self) -> Path:
        return self.root / "tags" / f"part-{self.index:05d}.done.json"


def ray_parts_dir(run: RunDir) -> Path:
    """Where ``--engine ray`` keeps its partitions and markers."""
    return run.student_dir / "ray_apply"


def require_ray() -> ModuleType:
    """``import ray`` (with Ray Data), or a MissingDependencyError naming ``--engine ray`` and the extra."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray", "--engine ray (batch tagging on Ray Data)") from exc
    return ray


def plan_partitions(n_notes: int, partitions: int, actors: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n_notes)`` in order, cut at multiples of the apply chunk.

    ``partitions`` = 0 picks about one per :data:`NOTES_PER_PARTITION` notes (at least two per actor);
    fewer partitions come out when the notes cannot fill that many chunks.
    """
    if n_notes == 0:
        return []
    chunk = apply_chunk(batch_size)
    want = partitions or max(2 * actors, math.ceil(n_notes / NOTES_PER_PARTITION))
    size = math.ceil(math.ceil(n_notes / want) / chunk) * chunk
    return [(s, min(s + size, n_notes)) for s in range(0, n_notes, size)]


def _file_sha(path: Path | None) -> str:
    if path is None:
        return "none"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _fingerprint(inputs: Sequence[NoteInput], key: str) -> str:
    h = hashlib.sha256(key.encode())
    for note in inputs:
        h.update(repr(note).encode())
    return h.hexdigest()[:24]


def _is_complete(paths: PartitionPaths, rows: int, fingerprint: str) -> bool:
    import pyarrow.parquet as pq

    if not (paths.marker.exists() and paths.tags.exists()):
        return False
    try:
        marker = read_json(paths.marker)
        on_disk = pq.ParquetFile(paths.tags).metadata.num_rows
    except (OSError, ValueError) as exc:
        log.warning("partition %d: unreadable output (%s); redoing it", paths.index, exc)
        return False
    return marker.get("fingerprint") == fingerprint and marker.get("rows") == rows == on_disk


class PartitionTagger:
    """The Ray Data actor: loads the student once, then tags one partition per row it is given.

    Each input row names a partition (``index``, ``notes``, ``tags``, ``marker``, ``fingerprint``);
    the output row reports ``index``, ``rows`` and ``seconds``.
    """

    def __init__(
        self,
        model_dir: str,
        handbook_path: str | None,
        batch_size: int,
        num_beams: int,
        device: str,
        threads: int,
        delay_s: float = 0.0,
    ) -> None:
        import torch

        from tagging.handbook_model import load_handbook
        from tagging.student import load_student

        torch.set_num_threads(threads)
        hb = load_handbook(handbook_path) if handbook_path else None
        self.tagger = load_student(
            model_dir, handbook=hb, batch_size=batch_size, num_beams=num_beams, device=device, threads=threads
        )
        self.batch_size, self.delay_s = batch_size, delay_s

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"index": [], "rows": [], "seconds": []}
        for i in range(len(batch["index"])):
            rows, seconds = self._one({k: v[i] for k, v in batch.items()})
            out["index"].append(int(batch["index"][i]))
            out["rows"].append(rows)
            out["seconds"].append(seconds)
        return out

    def _one(self, item: dict[str, Any]) -> tuple[int, float]:
        from tagging.student import tag_in_chunks
        from tagging.types import notes_from_frame, results_to_tags_table

        t0 = time.perf_counter()
        inputs = notes_from_frame(pd.read_parquet(str(item["notes"])))
        results = tag_in_chunks(self.tagger, inputs, self.batch_size)
        table = results_to_tags_table(results, tagger=self.tagger.name, version=self.tagger.version)
        seconds = time.perf_counter() - t0
        if self.delay_s:
            time.sleep(self.delay_s)
        write_parquet(table, str(item["tags"]))
        marker = {
            "partition": int(item["index"]),
            "rows": len(table),
            "fingerprint": str(item["fingerprint"]),
            "tagger_version": self.tagger.version,
            "seconds": round(seconds, 3),
        }
        write_json(marker, str(item["marker"]))
        return len(table), seconds


@contextlib.contextmanager
def _ray_session(cfg: RayApplyConfig) -> Iterator[ModuleType]:
    """Connect to ``cfg.address``, reuse this process's cluster, or start (and later stop) a local one."""
    ray = require_ray()
    started = False
    if cfg.address is not None:
        ray.init(address=cfg.address, logging_level=logging.WARNING, log_to_driver=False)
        started = True
    elif not ray.is_initialized():
        cpus = cfg.local_cpus or math.ceil(cfg.actors * cfg.cpus_per_actor)
        ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        started = True
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _prepare(
    run: RunDir, notes: pd.DataFrame, key: str, cfg: RayApplyConfig
) -> tuple[list[PartitionPaths], list[dict[str, Any]], list[int]]:
    """Plan the partitions; write the notes of pending ones; return (all paths, pending rows, skipped)."""
    from tagging.types import notes_from_frame

    root = ray_parts_dir(run)
    plan = plan_partitions(len(notes), cfg.partitions, cfg.actors, cfg.batch_size)
    inputs = notes_from_frame(notes)
    parts, pending, skipped = [], [], []
    for i, (start, stop) in enumerate(plan):
        paths = PartitionPaths(root, i)
        parts.append(paths)
        fp = _fingerprint(inputs[start:stop], key)
        if _is_complete(paths, stop - start, fp):
            skipped.append(i)
            continue
        paths.marker.unlink(missing_ok=True)
        write_parquet(notes.iloc[start:stop], paths.notes)
        pending.append(
            {"index": i, "notes": str(paths.notes), "tags": str(paths.tags), "marker": str(paths.marker)}
            | {"fingerprint": fp}
        )
    _drop_stale(root, len(plan))
    return parts, pending, skipped


def _drop_stale(root: Path, count: int) -> None:
    """Remove partition files numbered past ``count`` (left by a run with more partitions)."""
    for sub in ("notes", "tags"):
        for path in (root / sub).glob("part-*"):
            m = _PART_RE.match(path.name)
            if m and int(m.group(1)) >= count:
                path.unlink(missing_ok=True)


def _resources(ray: ModuleType, cfg: RayApplyConfig) -> tuple[float, str]:
    """(GPUs per actor, device): one GPU each when the cluster has GPUs and none were asked for."""
    gpus = cfg.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
    return gpus, "cuda" if gpus > 0 else "cpu"


def ray_tag_table(
    run: RunDir,
    notes: pd.DataFrame,
    model_dir: Path,
    handbook_path: Path | None,
    cfg: RayApplyConfig,
) -> tuple[pd.DataFrame, RayApplyFigures]:
    """Tag ``notes`` (the run's notes table, in order) on Ray; returns the tags table and figures.

    Raises:
        MissingDependencyError: ray is not installed. ConfigError: bad options.
    """
    from tagging.student.apply import model_version

    t0 = time.perf_counter()
    with _ray_session(cfg) as ray:
        gpus, device = _resources(ray, cfg)
        key = "|".join(
            (
                model_version(model_dir),
                _file_sha(handbook_path),
                str(cfg.batch_size),
                str(cfg.num_beams),
                device,
            )
        )
        parts, pending, skipped = _prepare(run, notes, key, cfg)
        log.info("ray apply: %d partitions, %d complete, %d to tag", len(parts), len(skipped), len(pending))
        t1 = time.perf_counter()
        if pending:
            _run_pool(ray, pending, model_dir, handbook_path, cfg, gpus, device)
        tag_seconds = time.perf_counter() - t1
        address = str(ray.get_runtime_context().gcs_address)
    frames = [pd.read_parquet(p.tags) for p in parts]
    table = pd.concat(frames, ignore_index=True) if frames else _empty_table()
    figures = RayApplyFigures(
        partitions=len(parts),
        skipped=tuple(skipped),
        tagged=tuple(int(p["index"]) for p in pending),
        actors=cfg.actors,
        cpus_per_actor=cfg.cpus_per_actor,
        gpus_per_actor=gpus,
        device=device,
        address=address,
        seconds=round(time.perf_counter() - t0, 2),
        tag_seconds=round(tag_seconds, 2),
    )
    return table, figures


def _empty_table() -> pd.DataFrame:
    from tagging.types import results_to_tags_table

    return results_to_tags_table([], tagger="student", version="student")


def _run_pool(
    ray: ModuleType,
    pending: list[dict[str, Any]],
    model_dir: Path,
    handbook_path: Path | None,
    cfg: RayApplyConfig,
    gpus: float,
    device: str,
) -> None:
    """One ``map_batches`` over the pending partitions with a fixed pool of ``cfg.actors`` actors."""
    delay = float(os.environ.get(DELAY_ENV, "0") or 0)
    ds = ray.data.from_items(pending, override_num_blocks=len(pending))
    out = ds.map_batches(
        PartitionTagger,
        fn_constructor_kwargs={
            "model_dir": str(model_dir),
            "handbook_path": str(handbook_path) if handbook_path is not None else None,
            "batch_size": cfg.batch_size,
            "num_beams": cfg.num_beams,
            "device": device,
            "threads": max(1, int(cfg.cpus_per_actor)),
            "delay_s": delay,
        },
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=cfg.actors),
        num_cpus=cfg.cpus_per_actor,
        num_gpus=gpus,
    )
    for done, row in enumerate(out.iter_rows(), start=1):
        log.info(
            "ray apply: partition %d tagged (%d rows, %.1fs); %d/%d",
            row["index"],
            row["rows"],
            row["seconds"],
            done,
            len(pending),
        )
