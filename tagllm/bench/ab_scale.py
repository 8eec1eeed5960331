"""Benchmark: A/B statistics over a large event log on disk — SQL in duckdb vs in-memory vs tea-tasting.

``python -m tagllm.bench.ab_scale --events 100000000 --users 2000000 --out /tmp/ab_scale --json``

1. Generates ``--events`` events of ``--users`` assigned users as parquet files under ``OUT/events`` in
   chunks (never the whole log in memory; reused when ``OUT/manifest.json`` says the same parameters):
   an impression per exposure, a click on ~10 % of them (2 % more in treatment, 30 % more on cold-start
   notes) with a lognormal dwell time, an interaction on 30 % of clicks; 0.5 % of events come from
   unassigned users and ~half of a user's events fall before their ``assigned_at`` (both dropped).
2. Measures three paths on the same files, each in a fresh subprocess (peak RSS per path from
   ``os.wait4``; a path whose RSS passes ``--rss-ceiling-gib`` is stopped and reported as such):
   ``sql`` (:func:`ab_analysis.sql.analyze_sql`, duckdb over the parquet glob), ``memory``
   (:func:`ab_analysis.analysis.analyze_events` over the files' record batches, chunked) and
   ``tea_tasting`` (``tea_tasting.Experiment`` over an Ibis table on duckdb that aggregates per user in
   SQL, capping by an Ibis quantile). The paper's four default metrics, no segments.
3. Prints one JSON: per path wall time and peak RSS, ratios to the SQL path, and the largest relative
   difference of the lift estimates (absolute and relative lift, p-value) of each path against SQL.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["generate", "main", "run"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z in microseconds
DAY_US = 86_400_000_000
N_NOTES, COLD_NOTES = 200_000, 10_000
CLICK_P, LIFT, COLD_BOOST, ACT_P, STRAY_P = 0.10, 0.02, 1.3, 0.3, 0.005
EVENT_NAMES = ("impression", "click", "like", "collect", "comment", "share")
PATHS = ("sql", "memory", "tea_tasting")


# ------------------------------------------------------------------------------------------- generation


def _users(n_users: int, seed: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng([seed, 0])
    w = rng.lognormal(0.0, 1.0, n_users)
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    return {
        "treat": rng.random(n_users) < 0.5,
        "assigned_us": T0_US + rng.integers(0, 7 * DAY_US, n_users),
        "new": rng.random(n_users) < 0.3,
        "cdf": cdf,
    }


def _chunk(target: int, users: dict[str, Any], rng: Any) -> Any:
    """Exactly ``target`` events: impressions, their clicks, the clicks' interactions."""
    import numpy as np
    import pyarrow as pa

    n_users = len(users["treat"])
    m = int(target / (1 + CLICK_P * (1 + ACT_P))) + 1000
    while True:
        uid = np.minimum(np.searchsorted(users["cdf"], rng.random(m), side="right"), n_users - 1)
        stray = rng.random(m) < STRAY_P
        treat = users["treat"][uid] & ~stray
        uid = np.where(stray, n_users + rng.integers(0, n_users // 10 + 1, m), uid).astype(np.int64)
        note = rng.integers(0, N_NOTES, m, dtype=np.int32)
        cold = note < COLD_NOTES
        ts = T0_US + rng.integers(0, 14 * DAY_US, m)
        p = CLICK_P * np.where(treat, 1 + LIFT, 1.0) * np.where(cold, COLD_BOOST, 1.0)
        clicked = rng.random(m) < p
        acted = clicked & (rng.random(m) < ACT_P)
        total = m + int(clicked.sum()) + int(acted.sum())
        if total >= target:
            break
        m = int(m * 1.05) + 1000
    keep = np.ones(m, dtype=bool)  # drop surplus impressions without a click: every click keeps its view
    keep[np.flatnonzero(~clicked)[: total - target]] = False
    parts = [keep, clicked, acted]
    codes = np.concatenate(
        [
            np.zeros(int(keep.sum()), np.int8),
            np.ones(int(clicked.sum()), np.int8),
            rng.integers(2, 6, int(acted.sum()), dtype=np.int8),
        ]
    )
    dwell = np.concatenate(
        [
            np.full(int(keep.sum()), np.nan),
            rng.lognormal(3.0, 1.2, int(clicked.sum())),
            np.full(int(acted.sum()), np.nan),
        ]
    )
    events = _labels(codes, list(EVENT_NAMES))
    return pa.table(
        {
            "user_id": pa.array(np.concatenate([uid[k] for k in parts])),
            "note_id": pa.array(np.concatenate([note[k] for k in parts])),
            "ts": pa.array(np.concatenate([ts[k] for k in parts]), pa.timestamp("us", tz="UTC")),
            "event": events,
            "dwell_seconds": pa.array(dwell, from_pandas=True),
            "is_cold_start": pa.array(np.concatenate([cold[k] for k in parts])),
        }
    )


def _labels(codes: Any, names: list[str]) -> Any:
    """A string column from small integer codes (built in Arrow, no Python strings per row)."""
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(codes), pa.array(names)).cast(pa.string())


def _write_assignments(path: Path, users: dict[str, Any]) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(users["treat"])
    table = pa.table(
        {
            "user_id": pa.array(np.arange(n, dtype=np.int64)),
            "experiment": _labels(np.zeros(n, np.int8), ["ab_scale"]),
            "variant": _labels(users["treat"].astype(np.int8), ["control", "treatment"]),
            "assigned_at": pa.array(users["assigned_us"], pa.timestamp("us", tz="UTC")),
            "user_type": _labels(users["new"].astype(np.int8), ["returning", "new"]),
        }
    )
    pq.write_table(table, path)


def _manifest_params(n_events: int, n_users: int, seed: int, chunk_events: int) -> dict[str, int]:
    return {
        "version": FORMAT_VERSION,
        "events": n_events,
        "users": n_users,
        "seed": seed,
        "chunk_events": chunk_events,
    }


def generate(
    out: Path, n_events: int, n_users: int, seed: int = 0, chunk_events: int = 4_000_000
) -> dict[str, Any]:
    """Write (or reuse) the event log and the assignments under ``out``; returns the manifest.

    The log is written chunk by chunk (``chunk_events`` rows per parquet file, row groups of 1M rows);
    a previous log with the same parameters is reused, another one is replaced file by file (only the
    files the old manifest lists are removed).
    """
    import numpy as np
    import pyarrow.parquet as pq
    from tqdm import tqdm

    params = _manifest_params(n_events, n_users, seed, chunk_events)
    mpath = out / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if {k: old.get(k) for k in params} == params and all((out / f).exists() for f in old["files"]):
            log.info("reusing %s (%d events, %d files)", out, n_events, len(old["files"]))
            return dict(old, reused=True)
        for f in old.get("files", []):
            (out / f).unlink(missing_ok=True)
        mpath.unlink()
    (out / "events").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    users = _users(n_users, seed)
    _write_assignments(out / "assignments.parquet", users)
    files: list[str] = []
    n_chunks = math.ceil(n_events / chunk_events)
    for c in tqdm(range(n_chunks), desc="generating events", unit="file", file=sys.stderr):
        rng = np.random.default_rng([seed, 1, c])
        table = _chunk(min(chunk_events, n_events - c * chunk_events), users, rng)
        name = f"events/part-{c:05d}.parquet"
        pq.write_table(table, out / name, row_group_size=1_000_000)
        files.append(name)
    size = sum((out / f).stat().st_size for f in files)
    manifest = params | {
        "files": [*files, "assignments.parquet"],
        "bytes": size,
        "generate_s": round(time.perf_counter() - t0, 1),
    }
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    return dict(manifest, reused=False)


# ---------------------------------------------------------------------------------------------- workers


def _lifts_from_report(report: Any) -> dict[str, dict[str, float]]:
    return {
        r.metric: {
            "control": r.result.control_mean,
            "treatment": r.result.treatment_mean,
            "abs_lift": r.result.abs_lift,
            "rel_lift": r.result.rel_lift,
            "p_value": r.result.p_value,
        }
        for r in report.results
        if r.segment is None
    }


def _worker_sql(data: Path, threads: int, memory_limit: str) -> dict[str, Any]:
    from ab_analysis.sql import EngineConfig, analyze_sql

    cfg = EngineConfig(
        "duckdb", threads=threads, memory_limit=memory_limit, temp_directory=str(data / "duckdb-tmp")
    )
    rep = analyze_sql(str(data / "events" / "*.parquet"), str(data / "assignments.parquet"), engine=cfg)
    meta = rep.metadata or {}
    return {"lifts": _lifts_from_report(rep), "dropped_events": meta.get("dropped_events")}


def _worker_memory(data: Path, chunk: int) -> dict[str, Any]:
    import pandas as pd
    import pyarrow.parquet as pq

    from ab_analysis.analysis import analyze_events

    files = sorted((data / "events").glob("*.parquet"))

    def chunks() -> Any:
        for f in files:
            yield from (b.to_pandas() for b in pq.ParquetFile(f).iter_batches(batch_size=chunk))

    rep = analyze_events(chunks(), pd.read_parquet(data / "assignments.parquet"), None, chunk_size=chunk)
    meta = rep.metadata or {}
    return {"lifts": _lifts_from_report(rep), "dropped_events": meta.get("dropped_events")}


def _worker_tea(data: Path, threads: int, memory_limit: str) -> dict[str, Any]:
    import ibis
    import tea_tasting as tt

    con = ibis.duckdb.connect(
        threads=threads, memory_limit=memory_limit, temp_directory=str(data / "duckdb-tmp")
    )
    ev = con.read_parquet(str(data / "events" / "*.parquet"))
    asg = con.read_parquet(str(data / "assignments.parquet"))
    j = ev.join(asg, ev.user_id == asg.user_id).filter(ev.ts >= asg.assigned_at)
    click, imp = j.event == "click", j.event == "impression"
    act = j.event.isin(["like", "collect", "comment", "share"])

    def count(cond: Any) -> Any:
        return ibis.ifelse(cond, 1.0, 0.0).sum()

    per_user = j.group_by("user_id").aggregate(
        view_duration=ibis.ifelse(click, j.dwell_seconds.fill_null(0.0), 0.0).sum(),
        interactions=count(act),
        clicks=count(click),
        impressions=count(imp),
        cold_start_clicks=count(click & j.is_cold_start),
        cold_start_impressions=count(imp & j.is_cold_start),
    )
    cols = [
        "view_duration",
        "interactions",
        "clicks",
        "impressions",
        "cold_start_clicks",
        "cold_start_impressions",
    ]
    users = asg.left_join(per_user, asg.user_id == per_user.user_id).select(
        asg.variant, *[per_user[c].fill_null(0.0).name(c) for c in cols]
    )
    cap = users.view_duration.quantile(0.999).as_scalar()
    users = users.mutate(view_duration_capped=ibis.least(users.view_duration, cap))
    exp = tt.Experiment(
        view_duration_per_user=tt.Mean("view_duration_capped"),
        interactions_per_user=tt.Mean("interactions"),
        pv_ctr=tt.RatioOfMeans("clicks", "impressions"),
        pv_ctr_cold_start=tt.RatioOfMeans("cold_start_clicks", "cold_start_impressions"),
        variant="variant",
    )
    res = exp.analyze(users, control="control")
    lifts = {
        name: {
            "control": float(r.control),
            "treatment": float(r.treatment),
            "abs_lift": float(r.effect_size),
            "rel_lift": float(r.rel_effect_size),
            "p_value": float(r.pvalue),
        }
        for name, r in res.items()
    }
    return {"lifts": lifts, "dropped_events": None}


def _worker(path: str, data: Path, a: argparse.Namespace) -> dict[str, Any]:
    import resource

    t0 = time.perf_counter()
    if path == "sql":
        out = _worker_sql(data, a.threads, a.memory_limit)
    elif path == "memory":
        out = _worker_memory(data, a.memory_chunk)
    else:
        out = _worker_tea(data, a.threads, a.memory_limit)
    out["analysis_s"] = round(time.perf_counter() - t0, 2)
    out["self_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


# ----------------------------------------------------------------------------------------------- parent


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _measure(path: str, a: argparse.Namespace, data: Path) -> dict[str, Any]:
    """Run one path in a fresh process; its wall time, peak RSS (``wait4``) and what it printed."""
    cmd = [sys.executable, "-m", "tagllm.bench.ab_scale", "--worker", path, "--data", str(data)]
    cmd += [
        "--threads",
        str(a.threads),
        "--memory-limit",
        a.memory_limit,
        "--memory-chunk",
        str(a.memory_chunk),
    ]
    ceiling = a.rss_ceiling_gib * 1024
    log.info("measuring %s", path)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        killed = False
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if not killed and _rss_mib(proc.pid) > ceiling:
                log.warning("%s passed %.0f MiB RSS: stopping it", path, ceiling)
                proc.kill()
                killed = True
            time.sleep(0.25)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
        err.seek(0)
        errors = err.read().decode(errors="replace")
        sys.stderr.write(errors)
    res: dict[str, Any] = {
        "wall_s": round(wall, 2),
        # CPU seconds (user + system, all threads): the figure other jobs on a shared box move least
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
        "peak_rss_mib": round(ru.ru_maxrss / 1024, 1),
        "exit": proc.returncode,
    }
    if killed:
        res["stopped"] = f"RSS above --rss-ceiling-gib {a.rss_ceiling_gib}"
    if proc.returncode == 0:
        res |= json.loads(text[text.index("{") :])
    else:
        res["error"] = (errors.strip().splitlines() or ["(no stderr)"])[-1][:500]
    return res


def _max_rel_diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> float:
    worst = 0.0
    for metric, fig in b.items():
        for k in ("abs_lift", "rel_lift", "p_value"):
            x, y = a[metric][k], fig[k]
            worst = max(worst, abs(x - y) / abs(y) if y != 0 else abs(x))
    return worst


def run(a: argparse.Namespace) -> dict[str, Any]:
    """Generate (or reuse) the data, measure the paths, compare; returns the JSON-ready figures."""
    out = Path(a.out)
    manifest = generate(out, a.events, a.users, a.seed, a.chunk_events)
    paths = {p: _measure(p, a, out) for p in a.paths}
    sql = paths.get("sql", {})
    ratios: dict[str, float | None] = {}
    agreement: dict[str, float | None] = {}
    for p, fig in paths.items():
        if p == "sql" or "lifts" not in fig or "lifts" not in sql:
            continue
        ratios[f"{p}_over_sql_wall"] = round(fig["wall_s"] / sql["wall_s"], 2)
        ratios[f"{p}_over_sql_cpu"] = round(fig["cpu_s"] / sql["cpu_s"], 2)
        ratios[f"{p}_over_sql_peak_rss"] = round(fig["peak_rss_mib"] / sql["peak_rss_mib"], 2)
        agreement[f"max_rel_diff_{p}_vs_sql"] = _max_rel_diff(fig["lifts"], sql["lifts"])
    return {
        "benchmark": "ab_scale",
        "events": a.events,
        "users": a.users,
        "files": len(manifest["files"]) - 1,
        "data_gib": round(manifest["bytes"] / 2**30, 2),
        "generate_s": manifest.get("generate_s"),
        "data_reused": manifest.get("reused"),
        "settings": {
            "threads": a.threads,
            "duckdb_memory_limit": a.memory_limit,
            "memory_chunk": a.memory_chunk,
        },
        "paths": paths,
        "ratios": ratios,
        "agreement": agreement,
        "agreement_fields": ["abs_lift", "rel_lift", "p_value"],
        "sql_peak_rss_goal_2gib_met": bool(sql.get("peak_rss_mib", math.inf) <= 2048),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "mem_gib": _mem_gib(),
            "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        },
    }


def _mem_gib() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return math.nan


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``python -m tagllm.bench.ab_scale``)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--events", type=int, default=100_000_000, help="events to generate (default 100M)")
    p.add_argument("--users", type=int, default=2_000_000, help="assigned users (default 2M)")
    p.add_argument("--out", default="/tmp/ab_scale", help="data and result directory (default /tmp/ab_scale)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk-events", type=int, default=4_000_000, help="events per generated parquet file")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {','.join(PATHS)}")
    p.add_argument("--threads", type=int, default=2, help="duckdb threads (SQL and tea-tasting paths)")
    p.add_argument("--memory-limit", default="1500MB", help="duckdb memory_limit (spills beyond it)")
    p.add_argument("--memory-chunk", type=int, default=1_000_000, help="rows per chunk of the in-memory path")
    p.add_argument("--rss-ceiling-gib", type=float, default=14.0, help="stop a path whose RSS passes this")
    p.add_argument("--json", action="store_true", help="print the JSON only (logs go to stderr)")
    p.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    if a.worker:
        sys.stdout.write(json.dumps(_worker(a.worker, Path(a.data), a)) + "\n")
        return 0
    a.paths = [x.strip() for x in a.paths.split(",") if x.strip()]
    bad = [x for x in a.paths if x not in PATHS]
    if bad or not a.paths:
        p.error(f"--paths {bad or a.paths}: expected a comma-separated subset of {list(PATHS)}")
    if a.events < 1000 or a.users < 100 or a.chunk_events < 1000:
        p.error("--events >= 1000, --users >= 100 and --chunk-events >= 1000 expected")
    res = run(a)
    Path(a.out, f"result-{a.events}.json").write_text(json.dumps(res, indent=2) + "\n")
    text = json.dumps(res, indent=None if a.json else 2)
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
