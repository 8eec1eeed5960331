"""``tagllm journal``: look at and compact a run's TagNotes journal (:mod:`serving.journal`).

tagllm journal show --run runs/demo [--json]
tagllm journal compact --run runs/demo      # servers on the run stopped first
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

__all__ = ["journal"]

_PATH = click.Path(path_type=Path)


def _path(run_dir: Path | None, journal_path: Path | None) -> Path:
    if journal_path is not None:
        return journal_path
    if run_dir is None:
        raise click.UsageError("--run RUN_DIR or --journal PATH is required")
    from features.io import RunDir

    return RunDir(run_dir).journal


@click.group("journal", context_settings={"help_option_names": ["-h", "--help"]})
def journal() -> None:
    """The TagNotes journal: fresh notes accepted by `tagllm serve`, replayed at every start."""


@journal.command("show")
@click.option("--run", "run_dir", type=_PATH, help="Run directory (journal at RUN/serving/tagnotes.journal).")
@click.option("--journal", "journal_path", type=_PATH, help="The journal file (instead of --run).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(run_dir: Path | None, journal_path: Path | None, as_json: bool) -> None:
    """Calls, notes and the newest entries of the journal (read-only; safe while servers run)."""
    from serving.journal import Journal, latest_notes

    path = _path(run_dir, journal_path)
    if not path.exists():
        raise click.ClickException(f"--journal {path}: no such file (no TagNotes accepted yet?)")
    j = Journal(path, hold=False)
    try:
        entries = j.read()  # complete lines only, strict; takes no lock
    finally:
        j.close()
    notes = latest_notes(entries)
    latest = [
        {"note_id": n.note_id, "category": n.category, "tags": [t.text for t in n.tags]}
        for n in list(notes.values())[-5:]
    ]
    out: dict[str, Any] = {
        "journal": str(path),
        "bytes": path.stat().st_size,
        "calls": len(entries),
        "notes": len(notes),
        "latest": latest,
    }
    if as_json:
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    click.echo(f"{path}: {out['calls']} TagNotes calls, {out['notes']} notes, {out['bytes']} bytes")
    for n in latest:
        click.echo(f"  {n['note_id']:<24} {n['category']:<12} {', '.join(n['tags'])}")


@journal.command("compact")
@click.option("--run", "run_dir", type=_PATH, help="Run directory (journal at RUN/serving/tagnotes.journal).")
@click.option("--journal", "journal_path", type=_PATH, help="The journal file (instead of --run).")
def compact_cmd(run_dir: Path | None, journal_path: Path | None) -> None:
    """Rewrite the journal with one line per note (its latest tags, first creation time).

    Atomic; refuses while a server runs on the journal. Fresh notes stay fresh notes: a new pipeline
    run (tag, features, train) is what makes them batch notes.
    """
    from serving.journal import compact

    path = _path(run_dir, journal_path)
    if not path.exists():
        raise click.ClickException(f"--journal {path}: no such file")
    lines, notes = compact(path)
    click.echo(f"{path}: {lines} lines -> {notes} notes")
