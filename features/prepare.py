"""`data prepare` and `data describe`: a dataset source -> validated tables in a run directory."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from features.datasets import load_source
from features.io import RunDir
from features.schemas import validate_tables

__all__ = ["COLD_START_QUANTILE", "describe", "prepare"]

log = logging.getLogger(__name__)

# Without a source-defined cutoff, notes created in the last 10% of notes (by time) are cold-start.
COLD_START_QUANTILE = 0.9


def prepare(source: str, out: str | Path, *, path: str | None = None, **options: Any) -> dict[str, Any]:
    """Load ``source``, validate every table, and write them into the run directory ``out``.

    Tables and ground truth are swapped in all-or-nothing, and manifest.json is written last, so an
    interrupted prepare never leaves a half-written run that looks complete.

    Returns:
        The manifest written (source, options, counts, cold-start cutoff, elapsed seconds).

    Raises:
        ConfigError: unknown source or bad options. DataSourceError: unreadable input.
        SchemaError: the source produced a table that violates its schema.
    """
    t0 = time.perf_counter()
    log.info("loading source %r%s", source, f" from {path}" if path else "")
    dataset = load_source(source, path, **options)
    tables = validate_tables(dataset.tables)
    notes = tables["notes"]
    cutoff = dataset.info.get("cold_start_cutoff")
    if cutoff is None:
        cutoff = notes["created_at"].quantile(COLD_START_QUANTILE)
    cutoff_ts = pd.Timestamp(cutoff)
    cutoff_ts = cutoff_ts.tz_localize("UTC") if cutoff_ts.tzinfo is None else cutoff_ts.tz_convert("UTC")
    run = RunDir(out)
    run.manifest_path.unlink(missing_ok=True)  # the run is incomplete until the new manifest lands
    run.write_tables(tables)
    run.write_tables(dataset.ground_truth, subdir="ground_truth")
    manifest = {
        "source": source,
        "path": str(path) if path else None,
        "options": {k: v for k, v in options.items() if k != "progress"},
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "cold_start_cutoff": cutoff_ts.isoformat(),
        "tables": {name: len(df) for name, df in tables.items()},
        "ground_truth": sorted(dataset.ground_truth),
        "info": dataset.info,
        "prepare_seconds": round(time.perf_counter() - t0, 3),
    }
    run.write_manifest(manifest)
    log.info("prepared %s: %s", out, ", ".join(f"{k}={v:,}" for k, v in manifest["tables"].items()))
    return manifest


def _date_range(s: pd.Series) -> dict[str, str | None]:
    return {"min": s.min().isoformat() if len(s) else None, "max": s.max().isoformat() if len(s) else None}


def describe(run_dir: str | Path) -> dict[str, Any]:
    """Counts per table, date ranges, cold-start share and per-category statistics of a run.

    Raises:
        NotFoundError: ``run_dir`` is not a prepared run directory.
    """
    run = RunDir(run_dir).require()
    manifest = run.manifest()
    cutoff = pd.Timestamp(manifest["cold_start_cutoff"])
    notes = run.read_table("notes", check=False)
    out: dict[str, Any] = {
        "run_dir": str(run.path),
        "source": manifest.get("source"),
        "cold_start_cutoff": cutoff.isoformat(),
        "tables": {},
    }
    cold = notes["created_at"] > cutoff
    out["tables"]["notes"] = {
        "rows": len(notes),
        "created_at": _date_range(notes["created_at"]),
        "categories": int(notes["category"].nunique()),
        "with_reference_tags": int(notes["reference_tags"].map(lambda v: v is not None and len(v) > 0).sum())
        if "reference_tags" in notes.columns
        else 0,
        "with_image_captions": int(notes["image_captions"].map(len).gt(0).sum()),
    }
    out["cold_start"] = {"notes": int(cold.sum()), "note_share": round(float(cold.mean()), 4)}
    per_cat = notes.groupby("category").size().rename("notes").to_frame()
    per_cat["cold_start_notes"] = notes[cold].groupby("category").size()
    if run.has_table("users"):
        users = run.read_table("users", check=False)
        out["tables"]["users"] = {"rows": len(users), "created_at": _date_range(users["created_at"])}
    if run.has_table("interactions"):
        inter = run.read_table("interactions", check=False)
        events = inter["event"].value_counts()
        out["tables"]["interactions"] = {
            "rows": len(inter),
            "ts": _date_range(inter["ts"]),
            "events": {str(k): int(v) for k, v in events.items()},
            "users": int(inter["user_id"].nunique()),
            "notes": int(inter["note_id"].nunique()),
        }
        cat_of = notes.set_index("note_id")["category"]
        is_cold_note = notes.set_index("note_id")["created_at"] > cutoff
        inter_cold = inter["note_id"].map(is_cold_note).fillna(False).astype(bool)
        out["cold_start"]["interaction_share"] = round(float(inter_cold.mean()), 4)
        cats = inter["note_id"].map(cat_of)
        counts = pd.crosstab(cats, inter["event"])
        per_cat["interactions"] = counts.sum(axis=1)
        if "impression" in counts.columns and "click" in counts.columns:
            per_cat["ctr"] = (counts["click"] / counts["impression"].where(counts["impression"] > 0)).round(4)
        if "dwell_seconds" in inter.columns:
            per_cat["mean_dwell_seconds"] = inter.groupby(cats)["dwell_seconds"].mean().round(2)
    for name in ("tags", "assignments"):
        if run.has_table(name):
            out["tables"][name] = {"rows": len(run.read_table(name, check=False))}
    per_cat = per_cat.fillna(0)
    out["categories"] = {
        str(cat): {k: (int(v) if float(v).is_integer() and k != "ctr" else float(v)) for k, v in row.items()}
        for cat, row in per_cat.sort_values("notes", ascending=False).iterrows()
    }
    return out
