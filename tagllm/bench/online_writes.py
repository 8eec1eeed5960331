"""Benchmark: bulk online writes into Redis vs Feast's own ``materialize``, on the same rows.

``python -m tagllm.bench.online_writes --rows 1000000 --json``

1. Generates ``--rows`` rows of the ``note_tags`` feature view (0-8 tags per note: texts, ids,
   dimensions, float32 confidences; tagger version; event and created times) as the view's offline
   source parquet in a throwaway run directory, and applies the repo's Redis flavour there.
2. Starts a dedicated ``redis-server`` (Debian package; free port, ``--save '' --appendonly no``),
   stopped by pid at the end; nothing else writes to it.
3. Into an empty keyspace: (a) :func:`features.bulk_online.bulk_load` of the parquet file; ``INFO
   memory``; equality of ``get_online_features`` with the written rows on a random sample; FLUSHDB.
   (b) ``FeatureStore.materialize`` of the same view over the same file; memory; the same equality check.
4. Prints one JSON: rows/s of both, the ratio, Redis memory, and the 10M-row time of each projected
   linearly when fewer rows were measured (labelled ``projected``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["generate", "main", "note_tags_rows", "run"]

log = logging.getLogger(__name__)

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
SPAN_US = 30 * 86_400_000_000
TARGET_ROWS = 10_000_000
N_VOCAB, DIMENSIONS = 5000, ("dish", "place", "activity", "gear", "flavor", "drink", "style", "mood")


def note_tags_rows(start: int, n: int, seed: int = 0) -> pa.Table:
    """``n`` rows of the ``note_tags`` view (note ids ``n{start:010d}`` ...), deterministic in ``seed``.

    Columns: note_id, event_timestamp (µs, UTC), created, tag_texts, tag_ids, tag_dimensions,
    tag_confidences (float32), tagger_version, n_tags — the view's schema plus its source's times.
    """
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng([seed, start])
    lens = rng.integers(0, 9, n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
    total = int(lens.sum())
    ids = rng.integers(1, N_VOCAB, total)
    vocab = pa.array([f"tag-{i:04d}" for i in range(N_VOCAB)])
    dims = pa.array(list(DIMENSIONS))
    event_us = T0_US + rng.integers(0, SPAN_US, n)
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "note_id": pa.array([f"n{i:010d}" for i in range(start, start + n)]),
            "event_timestamp": pa.array(event_us, ts),
            "created": pa.array(event_us + 1_000_000, ts),
            "tag_texts": pa.ListArray.from_arrays(offsets, vocab.take(pa.array(ids))),
            "tag_ids": pa.ListArray.from_arrays(offsets, pa.array(ids, pa.int64())),
            "tag_dimensions": pa.ListArray.from_arrays(offsets, dims.take(pa.array(ids % len(DIMENSIONS)))),
            "tag_confidences": pa.ListArray.from_arrays(
                offsets, pa.array(rng.random(total).astype(np.float32), pa.float32())
            ),
            "tagger_version": pa.array(["student-v1"] * n),
            "n_tags": pa.array(lens, pa.int64()),
        }
    )


def _empty_sources(features_dir: Path) -> None:
    """The two other views' sources, empty but typed, so the repo applies as declared."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ts = pa.timestamp("us", tz="UTC")
    f32, i64, s = pa.list_(pa.float32()), pa.list_(pa.int64()), pa.list_(pa.string())
    counts = [(c, pa.int64()) for c in ("impressions", "clicks", "engagements", "created_at_s")]
    schemas = {
        "note_stats": [
            ("note_id", pa.string()),
            ("event_timestamp", ts),
            *counts,
            ("ctr", pa.float64()),
            ("age_days", pa.float64()),
            ("is_cold_start", pa.bool_()),
        ],
        "user_interests": [
            ("user_id", pa.string()),
            ("event_timestamp", ts),
            ("top_tags", s),
            ("top_tag_ids", i64),
            ("top_tag_weights", f32),
            ("top_dimensions", s),
            ("top_dimension_weights", f32),
            ("n_engagements", pa.int64()),
        ],
    }
    for name, fields in schemas.items():
        pq.write_table(pa.schema(fields).empty_table(), features_dir / f"{name}.parquet")


def generate(run_dir: Path, rows: int, seed: int, chunk: int = 250_000) -> Path:
    """Write ``rows`` note_tags rows as RUN_DIR/features/note_tags.parquet (+ empty sources, manifest)."""
    import pyarrow.parquet as pq

    from features.io import RunDir

    run = RunDir(run_dir)
    run.features_dir.mkdir(parents=True, exist_ok=True)
    run.write_manifest({"source": "bench.online_writes", "tables": {}})
    _empty_sources(run.features_dir)
    path = run.feature_table("note_tags")
    writer = None
    for start in range(0, rows, chunk):
        table = note_tags_rows(start, min(chunk, rows - start), seed)
        writer = writer or pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=100_000)
    if writer is not None:
        writer.close()
    return path


def _sample(path: Path, k: int, seed: int) -> pa.Table:
    import pyarrow.parquet as pq

    from features.bulk_online import sample_ids

    table = pq.read_table(path)
    return table.take(sample_ids(table.num_rows, k, seed))


def _keyspace(client: Any) -> int:
    return int(client.dbsize())


def _measure(name: str, fn: Any, rows: int, client: Any, addr: str, check: Any) -> dict[str, Any]:
    from features.bulk_online import redis_memory

    if _keyspace(client):
        raise RuntimeError(f"{name}: the benchmark's Redis is not empty before the run")
    t0 = time.perf_counter()
    extra = fn()
    seconds = time.perf_counter() - t0
    mem = redis_memory(addr)
    keys = _keyspace(client)
    mismatches = check()
    log.info("%s: %d rows in %.1f s (%.0f rows/s), %d keys", name, rows, seconds, rows / seconds, keys)
    out = {
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds, 1),
        "redis_keys": keys,
        "redis_used_memory_mib": round(mem["used_memory"] / 2**20, 1),
        "redis_rss_mib": round(mem["used_memory_rss"] / 2**20, 1),
        "sample_checked": None,
        "sample_mismatches": len(mismatches),
        "first_mismatches": mismatches[:3],
        **(extra or {}),
    }
    client.flushdb()  # our own redis-server: the keyspace is ours alone
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Generate, start Redis, measure bulk load and materialize; the JSON figures."""
    import redis

    from features.bulk_online import BulkLoadConfig, bulk_load, compare_online
    from features.feast_repo import FeastSettings, apply, materialize, open_store
    from tagllm.bench.procs import redis_server

    out = Path(a.out or tempfile.mkdtemp(prefix="online_writes_"))
    run_dir = (out / "run").resolve()
    t0 = time.perf_counter()
    path = generate(run_dir, a.rows, a.seed)
    gen_s = time.perf_counter() - t0
    log.info("generated %d rows in %.1f s (%s, %.0f MiB)", a.rows, gen_s, path, path.stat().st_size / 2**20)
    sample = _sample(path, a.sample, a.seed)
    load_before = os.getloadavg()
    with redis_server() as addr:
        host, _, port = addr.partition(":")
        client = redis.Redis(host=host, port=int(port))
        settings = FeastSettings(run_dir, online="redis", redis=addr)
        apply(settings, compute=False)
        store = open_store(settings)

        def check() -> list[str]:
            return compare_online(store, "note_tags", sample)

        cfg = BulkLoadConfig(chunk_rows=a.chunk_rows, batch_rows=a.batch_rows, workers=a.workers)

        def bulk() -> dict[str, Any]:
            figures = bulk_load(settings, "note_tags", path, cfg, store=store)
            return {"workers": figures.workers, "verified_rows": figures.verified_rows}

        def feast() -> dict[str, Any]:
            with contextlib.redirect_stdout(sys.stderr):  # Feast prints its progress to stdout
                materialize(settings, views=["note_tags"], store=store)
            return {}

        bulk_fig = _measure("bulk_load", bulk, a.rows, client, addr, check)
        feast_fig = _measure("feast_materialize", feast, a.rows, client, addr, check)
        client.close()
    for fig in (bulk_fig, feast_fig):
        fig["sample_checked"] = sample.num_rows
    projected = a.rows < TARGET_ROWS
    return {
        "benchmark": "online_writes",
        "view": "note_tags",
        "rows_measured": a.rows,
        "generate_seconds": round(gen_s, 1),
        "bulk_load": bulk_fig,
        "feast_materialize": feast_fig,
        "speedup_bulk_over_materialize": round(bulk_fig["rows_per_s"] / feast_fig["rows_per_s"], 2),
        f"seconds_for_{TARGET_ROWS}_rows": {
            "bulk_load": round(TARGET_ROWS / bulk_fig["rows_per_s"], 1),
            "feast_materialize": round(TARGET_ROWS / feast_fig["rows_per_s"], 1),
            "projected": projected,
            "how": f"linear from {a.rows} rows" if projected else "measured",
        },
        "redis_memory_mib_for_10M_projected": round(
            bulk_fig["redis_used_memory_mib"] * TARGET_ROWS / a.rows, 0
        ),
        "config": {"chunk_rows": a.chunk_rows, "batch_rows": a.batch_rows, "workers": a.workers},
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "note": "shared with other jobs during the run",
        },
    }


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``python -m tagllm.bench.online_writes``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=1_000_000, help="note_tags rows to generate and load")
    p.add_argument("--out", help="work directory (default: a new temporary directory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", type=int, default=1000, help="entities checked with get_online_features")
    p.add_argument("--chunk-rows", type=int, default=50_000, help="bulk loader rows per chunk")
    p.add_argument("--batch-rows", type=int, default=5_000, help="bulk loader HSETs per pipeline round trip")
    p.add_argument("--workers", type=int, default=2, help="bulk loader processes")
    p.add_argument("--json", action="store_true", help="print the JSON on one line (logs go to stderr)")
    a = p.parse_args(argv)
    if a.rows < 1 or a.sample < 1 or a.chunk_rows < 1 or a.batch_rows < 1 or a.workers < 1:
        p.error("--rows, --sample, --chunk-rows, --batch-rows and --workers must be >= 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    res = run(a)
    sys.stdout.write(json.dumps(res, indent=None if a.json else 2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
