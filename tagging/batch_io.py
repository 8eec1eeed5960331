"""Teacher answers from anywhere: export Batch API requests, import answer files, install a handbook.

The live LLM teacher (:mod:`tagging.teachers.llm`) asks an endpoint one note at a time. When the model
runs somewhere else (the OpenAI or Azure Batch API, ``vllm run-batch`` on a GPU box, or a colleague
with a JSONL of answers), the same prompt goes out as a file and the answers come back as files:

- :func:`export_requests` writes one OpenAI Batch API request line per note of a run
  (``custom_id`` = note_id, ``body.messages`` = :func:`tagging.teachers.prompt.build_messages`).
- :func:`import_answers` reads answer files and turns every answer into tags through the SAME code
  path as the live teacher: :func:`~tagging.teachers.prompt.parse_output` on the message text, then
  :func:`~tagging.teachers.prompt.output_to_tags` and :func:`~tagging.teachers.prompt.normalize` with
  the handbook and the note. Answer lines are OpenAI / vLLM batch output or TeacherOutput JSONL,
  detected per line: :mod:`tagging.batch_formats` reads them (and describes the forms and how a note
  id is found); this module resolves, validates and writes. Rules, in the order they apply:

  * answers are taken in order: files as given, lines top to bottom;
  * **duplicates**: when a note has several answers, the LAST VALID one wins; if none is valid, the
    note fails with the reason of its last answer. Every superseded answer is counted in the
    summary's ``duplicates`` (notes, superseded answers, examples);
  * a note is in exactly one of the tags table or the failures table; failure kinds:
    ``malformed_json`` (the line is not JSON; the note id is recovered from the raw text when
    possible), ``error_response`` (non-200 status or an error object), ``bad_envelope`` (no
    ``choices[0].message.content``), ``invalid_output`` (the :func:`parse_output` message), and
    ``unknown_note`` (the id is not a note of the run);
  * lines that cannot be tied to any note id go to the summary's ``unmatched_lines``
    (file, line number, reason; the first :data:`MAX_LISTED` are listed, ``unmatched`` counts all).

  Idempotence: the import's fingerprint hashes the answer files' bytes (in order), the options, the
  prompt and handbook versions and the answered notes' content. ``generated_at`` is the time of the
  first import with that fingerprint, read back from ``RUN/teacher/<out_table>.import.json`` on a
  re-import, so re-importing the same files gives an identical table; changed input gets a new
  time (``generated_at`` is the Feast ``created`` column: a real re-tagging must look newer).

- :func:`install_handbook` (:mod:`tagging.handbook_install`, re-exported here) validates an external
  handbook YAML and installs it in a run.

Every output file is written atomically; the import stages all four files and renames them into
place only after every answer was parsed and every file was written, so an exception leaves the
previous outputs (or none) untouched.

Example::

    export_requests("runs/k", model="qwen2.5-72b")            # -> runs/k/teacher/requests.jsonl
    # ... vllm run-batch -i requests.jsonl -o answers.jsonl --model ... ...
    summary = import_answers("runs/k", ["answers.jsonl"])     # -> runs/k/tables/teacher_tags.parquet
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import ConfigError, NotFoundError
from features.io import RunDir, atomic_path
from features.schemas import TABLE_NAMES, validate
from tagging.batch_formats import Answer, FileScan, read_files
from tagging.handbook_install import install_handbook
from tagging.handbook_model import Handbook, load_handbook
from tagging.teachers.llm import LLMTeacherConfig
from tagging.teachers.prompt import (
    PROMPT_VERSION,
    TeacherOutput,
    build_messages,
    normalize,
    output_to_tags,
)
from tagging.types import NoteInput, TagResult, notes_from_frame, results_to_tags_table

__all__ = [
    "BATCH_URL",
    "DEFAULT_MODEL",
    "MAX_LISTED",
    "ImportOptions",
    "export_requests",
    "import_answers",
    "install_handbook",
]

log = logging.getLogger(__name__)

BATCH_URL = "/v1/chat/completions"
# A name to serve the model under (``vllm run-batch --served-model-name tagllm-teacher``); hosted
# Batch APIs need their real model name (``--model``).
DEFAULT_MODEL = "tagllm-teacher"
MAX_LISTED = 50  # unmatched lines and duplicate examples listed in the summary (all are counted)

_LLM_DEFAULTS = LLMTeacherConfig.model_fields
_DEFAULT_CAP: int = _LLM_DEFAULTS["cap_per_dimension"].default
_DEFAULT_MAX_TOKENS: int = _LLM_DEFAULTS["max_tokens"].default
_TABLE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


# --------------------------------------------------------------------------- export


def _run_inputs(
    run_dir: str | os.PathLike[str], handbook_path: str | os.PathLike[str] | None
) -> tuple[RunDir, Handbook, list[NoteInput]]:
    run = RunDir(run_dir).require()
    hb = load_handbook(handbook_path or run.handbook)
    return run, hb, notes_from_frame(run.read_table("notes"))


def export_requests(
    run_dir: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    model: str = DEFAULT_MODEL,
    handbook_path: str | os.PathLike[str] | None = None,
    sample: int | None = None,
    max_tokens: int = _DEFAULT_MAX_TOKENS,
    json_mode: bool = False,
) -> dict[str, Any]:
    """Write an OpenAI Batch API request file: one ``/v1/chat/completions`` line per note of a run.

    Each line is ``{"custom_id": note_id, "method": "POST", "url": "/v1/chat/completions", "body":
    {"model", "messages", "temperature": 0, "max_tokens"[, "response_format"]}}`` with the live
    teacher's messages. The file works with the OpenAI/Azure Batch API and ``vllm run-batch``.

    Args:
        run_dir: prepared run directory (its ``notes`` table and, by default, its handbook).
        out: the JSONL to write (default RUN_DIR/teacher/requests.jsonl); written atomically.
        model: ``body.model``: the name the batch service knows the model by.
        handbook_path: the handbook (default RUN_DIR/handbook.yaml).
        sample: only the first ``sample`` notes (as ``tagllm tag teach --sample``).
        max_tokens: ``body.max_tokens``.
        json_mode: add ``response_format={"type": "json_object"}`` (services that support it).

    Returns:
        Summary: path, lines, bytes, model, prompt_version, handbook_version.

    Raises:
        ConfigError: ``model`` empty, ``sample`` or ``max_tokens`` < 1, duplicate note ids.
        NotFoundError: no run, notes table or handbook.
    """
    if not model.strip():
        raise ConfigError(f"model must be a non-empty model name, got {model!r}")
    if sample is not None and sample < 1:
        raise ConfigError(f"sample must be >= 1, got {sample!r}")
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens!r}")
    run, hb, notes = _run_inputs(run_dir, handbook_path)
    if sample is not None:
        notes = notes[:sample]
    ids = [n.note_id for n in notes]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ConfigError(f"notes.note_id must be unique to serve as custom_id; {dup!r} repeats")
    path = Path(out) if out is not None else run.teacher_requests
    temperature = _LLM_DEFAULTS["temperature"].default
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for note in notes:
            body: dict[str, Any] = {
                "model": model,
                "messages": build_messages(note, hb),
                "temperature": temperature,
                "max_tokens": max_tokens,
            }
            if json_mode:
                body["response_format"] = {"type": "json_object"}
            line = {"custom_id": note.note_id, "method": "POST", "url": BATCH_URL, "body": body}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    figures = {
        "path": str(path),
        "lines": len(notes),
        "bytes": path.stat().st_size,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "handbook_version": hb.version,
    }
    run.update_summary("teacher_export", figures)
    log.info("exported %d requests to %s", len(notes), path)
    return figures


# --------------------------------------------------------------------------- import: options


class ImportOptions(BaseModel):
    """How answer files are read and where the result goes.

    Attributes:
        out_table: the tags table to write, RUN_DIR/tables/<out_table>.parquet (failures in
            <out_table>_failures.parquet); not a canonical input table name.
        id_field: the key holding the note id in TeacherOutput lines (form c).
        id_prefix: prepended to every id read (custom_id or id_field) to form the note id.
        tagger_name: the ``tagger`` column.
        model: the model named in ``tagger_version`` when the answers do not name one.
        cap_per_dimension: as the live LLM teacher (at most this many tags per dimension).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    out_table: str = Field(default="teacher_tags", pattern=_TABLE_NAME.pattern)
    id_field: str = Field(default="note_id", min_length=1)
    id_prefix: str = ""
    tagger_name: str = Field(default="llm", min_length=1)
    model: str | None = None
    cap_per_dimension: int = Field(default=_DEFAULT_CAP, ge=1)

    @classmethod
    def create(cls, **options: Any) -> ImportOptions:
        """Build from keyword options; a bad one raises ConfigError naming it."""
        try:
            opts = cls(**options)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()[:3]
            )
            raise ConfigError(
                f"invalid import options: {problems}; valid: {sorted(cls.model_fields)}"
            ) from None
        if opts.out_table in TABLE_NAMES and opts.out_table != "tags":
            raise ConfigError(
                f"out_table {opts.out_table!r} would overwrite the canonical {opts.out_table!r} table; "
                "expected a tags table name such as 'teacher_tags'"
            )
        return opts


# --------------------------------------------------------------------------- import: resolving


def _fingerprint(
    scans: Sequence[FileScan], opts: ImportOptions, hb: Handbook, answered: Sequence[NoteInput]
) -> str:
    h = hashlib.sha256()
    payload = {
        "prompt": PROMPT_VERSION,
        "handbook": hb.version,
        "options": opts.model_dump(mode="json"),
        "files": [s.sha256 for s in scans],
    }
    h.update(json.dumps(payload, sort_keys=True).encode())
    for note in answered:
        h.update(note.note_id.encode() + b"\x1d" + note.content_key().encode() + b"\x1e")
    return h.hexdigest()


def _generated_at(summary_path: Path, fingerprint: str) -> pd.Timestamp:
    """The time of the first import with this fingerprint (now when there was none)."""
    if summary_path.exists():
        try:
            previous = json.loads(summary_path.read_text(encoding="utf-8"))
            if previous.get("fingerprint") == fingerprint and previous.get("generated_at"):
                return pd.Timestamp(previous["generated_at"]).tz_convert("UTC")
        except (ValueError, TypeError, AttributeError):
            log.warning("ignoring unreadable previous import summary %s", summary_path)
    return _now()


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("s")


def _to_result(
    output: TeacherOutput, answer: Answer, note: NoteInput, hb: Handbook, opts: ImportOptions
) -> TagResult:
    """The live teacher's ``LLMTeacher._ok``: output_to_tags, then normalize with the same cap."""
    tags, trace = output_to_tags(output, note, hb)
    tags = normalize(tags, hb, note.category, opts.cap_per_dimension)
    trace.update(prompt_version=PROMPT_VERSION, model=answer.model or opts.model, source=answer.where)
    return TagResult(note_id=note.note_id, tags=tags, status="ok", trace=trace)


@dataclass
class _Resolved:
    ok: list[tuple[TagResult, Answer]]
    failures: list[tuple[str, str, str]]  # note_id, kind, reason
    duplicates: dict[str, Any]


def _resolve(
    answers: Sequence[Answer],
    notes: dict[str, NoteInput],
    order: Sequence[str],
    hb: Handbook,
    opts: ImportOptions,
) -> _Resolved:
    by_note: dict[str, list[Answer]] = {}
    for a in answers:
        by_note.setdefault(a.note_id, []).append(a)
    ok: list[tuple[TagResult, Answer]] = []
    failures: list[tuple[str, str, str]] = []
    dup_notes, superseded = 0, 0
    examples: list[dict[str, Any]] = []
    for note_id in [*(i for i in order if i in by_note), *sorted(set(by_note) - set(notes))]:
        group = by_note[note_id]
        if len(group) > 1:
            dup_notes += 1
            superseded += len(group) - 1
        valid = [a for a in group if a.output is not None]
        winner = valid[-1] if valid else group[-1]
        if len(group) > 1 and len(examples) < MAX_LISTED:
            examples.append({"note_id": note_id, "answers": [a.where for a in group], "kept": winner.where})
        if winner.output is not None:
            ok.append((_to_result(winner.output, winner, notes[note_id], hb, opts), winner))
            continue
        reason = winner.reason or "no valid answer"
        if len(group) > 1:
            reason += f" (+{len(group) - 1} earlier answer(s), none valid)"
        failures.append((note_id, winner.kind or "invalid_output", reason))
    return _Resolved(
        ok=ok,
        failures=failures,
        duplicates={"notes": dup_notes, "superseded_answers": superseded, "examples": examples},
    )


# --------------------------------------------------------------------------- import: writing


def _write_table(df: pd.DataFrame, tmp: Path) -> None:
    df.to_parquet(tmp, index=False, compression="zstd")


def _write_jsonl(records: Sequence[dict[str, Any]], tmp: Path) -> None:
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _write_all(
    tags: pd.DataFrame,
    failures: pd.DataFrame,
    audit: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    paths: dict[str, Path],
) -> None:
    """Stage every file, then rename them all into place (an exception while staging writes nothing)."""
    with contextlib.ExitStack() as stack:
        staged = {k: stack.enter_context(atomic_path(p)) for k, p in paths.items()}
        _write_table(tags, staged["tags"])
        _write_table(failures, staged["failures"])
        _write_jsonl(audit, staged["answers"])
        staged["summary"].write_text(
            json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
        )


def _tagger_version(models: Sequence[str], opts: ImportOptions, hb: Handbook) -> str:
    model = "+".join(models) if models else (opts.model or "unknown-model")
    return f"{PROMPT_VERSION}:{model[:120]}:{hb.version}"


def _answer_files(files: Sequence[str | os.PathLike[str]]) -> list[Path]:
    if not files:
        raise ConfigError("files: expected at least one answer file")
    paths = [Path(f) for f in files]
    for p in paths:
        if not p.is_file():
            raise NotFoundError(f"answer file {p} does not exist (or is not a file)")
    return paths


def _check_ids_match(
    answers: Sequence[Answer], known: int, run: RunDir, order: Sequence[str], opts: ImportOptions
) -> None:
    """Raise when answers exist but none names a note of the run (a wrong prefix, id field or run)."""
    if answers and not known:
        first = answers[0].note_id
        raise ConfigError(
            f"none of the {len(answers)} answer ids is a note of {run.path} (first: {first!r}; the run's "
            f"note ids look like {order[0]!r}): check --id-prefix {opts.id_prefix!r} and --id-field "
            f"{opts.id_field!r}"
        )


def _audit(resolved: _Resolved) -> list[dict[str, Any]]:
    """One line per accepted answer for ``<out_table>.answers.jsonl``: where it came from and what it said."""
    return [
        {
            "note_id": r.note_id,
            "source": a.where,
            "model": r.trace.get("model"),
            "prompt_version": PROMPT_VERSION,
            "ungrounded_tags": r.trace.get("ungrounded_tags", 0),
            "teacher_output": a.output.model_dump(mode="json") if a.output is not None else None,
        }
        for r, a in resolved.ok
    ]


def _tag_figures(results: Sequence[TagResult], audit: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary's ``tags``, ``tags_per_note`` and ``ungrounded_tags``."""
    n_tags = [len(r.tags) for r in results]
    per_note = {
        "mean": round(sum(n_tags) / len(n_tags), 4) if n_tags else 0.0,
        "min": min(n_tags, default=0),
        "max": max(n_tags, default=0),
        "empty": sum(1 for n in n_tags if n == 0),
    }
    ungrounded = int(sum(a["ungrounded_tags"] for a in audit))
    return {"tags": int(sum(n_tags)), "tags_per_note": per_note, "ungrounded_tags": ungrounded}


def _tables(
    resolved: _Resolved, tagger: str, version: str, generated_at: pd.Timestamp
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tags table (checked against its schema) and the failures table."""
    results = [r for r, _ in resolved.ok]
    tags = results_to_tags_table(results, tagger=tagger, version=version, generated_at=generated_at)
    if len(tags):
        validate("tags", tags)  # a check only: the table is written in the runner's form
    failures = pd.DataFrame(
        [{"note_id": n, "reason": r} for n, _, r in resolved.failures], columns=["note_id", "reason"]
    )
    return tags, failures


def _out_paths(run: RunDir, out_table: str) -> dict[str, Path]:
    teacher_dir = run.teacher_dir
    return {
        "tags": run.table_path(out_table),
        "failures": run.table_path(f"{out_table}_failures"),
        "answers": teacher_dir / f"{out_table}.answers.jsonl",
        "summary": teacher_dir / f"{out_table}.import.json",
    }


def import_answers(
    run_dir: str | os.PathLike[str],
    files: Sequence[str | os.PathLike[str]],
    *,
    options: ImportOptions | None = None,
    handbook_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Import teacher answer files (batch output or TeacherOutput JSONL) as a tags table.

    See the module docstring for the line forms, the duplicate rule and the failure kinds.

    Args:
        run_dir: prepared run directory (its ``notes`` table; its handbook by default).
        files: answer files, read in this order.
        options: :class:`ImportOptions` (default: teacher_tags, note_id, no prefix, tagger "llm").
        handbook_path: the handbook the answers were made with (default RUN_DIR/handbook.yaml).

    Returns:
        The summary, also written to RUN_DIR/teacher/<out_table>.import.json and to the run's
        ``teacher_import`` summary section: answers, ok, failed, failed_by_reason, unmatched,
        unmatched_lines, duplicates, notes_without_answer, tags, tags_per_note, ungrounded_tags,
        models, tagger, tagger_version, generated_at, fingerprint, files, paths.

    Raises:
        NotFoundError: no run, notes table, handbook or answer file.
        ConfigError: bad options; the id field is in no TeacherOutput line of a file; no answer
            names a note of the run (a wrong --id-prefix or --id-field, or the wrong run).
    """
    opts = options or ImportOptions()
    paths_in = _answer_files(files)
    run, hb, note_list = _run_inputs(run_dir, handbook_path)
    notes = {n.note_id: n for n in note_list}
    order = [n.note_id for n in note_list]
    answers, unmatched, scans = read_files(paths_in, opts, set(notes))
    known_answers = [a for a in answers if a.note_id in notes]
    _check_ids_match(answers, len(known_answers), run, order, opts)
    resolved = _resolve(answers, notes, order, hb, opts)

    answered_notes = [notes[i] for i in order if i in {a.note_id for a in known_answers}]
    fingerprint = _fingerprint(scans, opts, hb, answered_notes)
    out_paths = _out_paths(run, opts.out_table)
    generated_at = _generated_at(out_paths["summary"], fingerprint)
    models = sorted({a.model for _, a in resolved.ok if a.model})
    version = _tagger_version(models, opts, hb)
    results = [r for r, _ in resolved.ok]
    tags, failures = _tables(resolved, opts.tagger_name, version, generated_at)
    audit = _audit(resolved)
    summary: dict[str, Any] = {
        "answers": sum(s.lines for s in scans),
        "ok": len(results),
        "failed": len(failures),
        "failed_by_reason": dict(sorted(Counter(k for _, k, _ in resolved.failures).items())),
        "unmatched": len(unmatched),
        "unmatched_lines": [
            {"file": u.file, "line": u.line, "reason": u.reason} for u in unmatched[:MAX_LISTED]
        ],
        "duplicates": resolved.duplicates,
        "notes_without_answer": len(notes) - len(answered_notes),
        **_tag_figures(results, audit),
        "models": models,
        "tagger": opts.tagger_name,
        "tagger_version": version,
        "prompt_version": PROMPT_VERSION,
        "handbook_version": hb.version,
        "generated_at": generated_at.isoformat(),
        "fingerprint": fingerprint,
        "files": [{"path": str(s.path), "sha256": s.sha256, "lines": s.lines} for s in scans],
        "paths": {k: str(p) for k, p in out_paths.items()},
    }
    _write_all(tags, failures, audit, summary, out_paths)
    run.update_summary("teacher_import", summary)
    log.info(
        "imported %d answers: %d notes ok, %d failed, %d unmatched lines -> %s",
        summary["answers"],
        summary["ok"],
        summary["failed"],
        summary["unmatched"],
        out_paths["tags"],
    )
    return summary
