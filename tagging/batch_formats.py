"""Answer files, line by line: which format each line is, and the answer (or failure) it carries.

:func:`read_files` reads the answer files of :func:`tagging.batch_io.import_answers` (which resolves,
validates and writes what comes back). Each non-blank line is one of, detected per line:

(a) OpenAI Batch output: ``{"id", "custom_id", "response": {"status_code": 200, "body": {"model",
    "choices": [{"message": {"content": "..."}}]}}, "error": null}``;
(b) ``vllm run-batch`` output: the same shape; a failed request has ``response.body`` null (status
    400 or the error's code) and ``error`` set (a string or an object);
(c) TeacherOutput JSONL: ``{"<id_field>": ..., "teacher_output": {...}}`` (the object is
    ``json.dumps``-ed and parsed like a message, so the same repair rules apply).

The note id of an answer is ``id_prefix + custom_id`` (forms a, b) or ``id_prefix + <id_field>``
(form c). A message is parsed by :func:`~tagging.teachers.prompt.parse_output`, the live teacher's
parser. A line tied to a note gives an :class:`Answer` (a validated output, or a failure kind:
``malformed_json``, ``error_response``, ``bad_envelope``, ``invalid_output``, ``unknown_note``); a
line that cannot be tied to any note id gives an :class:`Unmatched` with its reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from features.errors import ConfigError
from tagging.teachers.prompt import InvalidOutputError, TeacherOutput, parse_output

__all__ = ["Answer", "FileScan", "IdOptions", "Unmatched", "read_files"]


class IdOptions(Protocol):
    """Where a line's note id is: the key of TeacherOutput lines and a prefix for every id
    (:class:`tagging.batch_io.ImportOptions` is one)."""

    @property
    def id_field(self) -> str: ...

    @property
    def id_prefix(self) -> str: ...


@dataclass(frozen=True)
class Answer:
    """One answer line tied to a note id: either a validated output or a failure (kind, reason)."""

    note_id: str
    where: str  # "file:line"
    output: TeacherOutput | None = None
    model: str | None = None
    kind: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Unmatched:
    file: str
    line: int
    reason: str


@dataclass
class FileScan:
    path: Path
    sha256: str
    lines: int
    teacher_lines_without_id: int = 0
    teacher_lines_with_id: int = 0
    first_keys: list[str] | None = None


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def _as_id(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _recover_id(text: str, id_field: str) -> str | None:
    """The id of a line that is not valid JSON, when its raw text still shows one."""
    for key in ("custom_id", id_field):
        m = re.search(rf'"{re.escape(key)}"\s*:\s*(?:"([^"\\]+)"|(\d+))', text)
        if m:
            return m.group(1) or m.group(2)
    return None


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        nested = error.get("error")
        inner: dict[str, Any] = nested if isinstance(nested, dict) else error
        code, message = inner.get("code"), inner.get("message")
        if code is not None or message is not None:
            return _short(f"{code}: {message}" if code is not None else str(message))
    return _short(error)


def _batch_answer(obj: dict[str, Any], note_id: str, where: str) -> Answer:
    """Forms (a) and (b): an OpenAI / vLLM batch output line."""
    response, error = obj.get("response"), obj.get("error")
    status = response.get("status_code") if isinstance(response, dict) else None
    body = response.get("body") if isinstance(response, dict) else None
    if error is not None or status != 200 or not isinstance(body, dict):
        if error is None and isinstance(body, dict) and body.get("error") is not None:
            error = body["error"]
        parts = [f"status {status}" if status is not None else "no response"]
        if error is not None:
            parts.append(f"error {_error_text(error)}")
        elif status == 200:
            parts.append("no response body")
        return Answer(note_id, where, kind="error_response", reason=f"{where}: {', '.join(parts)}")
    model = body.get("model") if isinstance(body.get("model"), str) else None
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return Answer(
            note_id,
            where,
            model=model,
            kind="bad_envelope",
            reason=f"{where}: malformed chat completion body (no choices[0].message.content): {_short(body, 120)}",
        )
    return _parsed(note_id, where, content if isinstance(content, str) else "", model)


def _parsed(note_id: str, where: str, text: str, model: str | None) -> Answer:
    try:
        output = parse_output(text)
    except InvalidOutputError as exc:  # the live teacher's wording: "invalid answer: ..."
        return Answer(
            note_id, where, model=model, kind="invalid_output", reason=f"{where}: invalid answer: {exc}"
        )
    return Answer(note_id, where, output=output, model=model)


def _read_line(raw: bytes, where: str, opts: IdOptions, known: set[str], scan: FileScan) -> Answer | str:
    """One non-blank line -> an answer tied to a note id, or the reason it cannot be tied to one."""
    try:
        text = raw.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        rid = _recover_id(raw.decode("utf-8", errors="replace"), opts.id_field)
        reason = f"malformed JSON ({exc})"
        if rid is not None and opts.id_prefix + rid in known:
            return Answer(opts.id_prefix + rid, where, kind="malformed_json", reason=f"{where}: {reason}")
        return reason + (f"; id {rid!r} recovered, not a note of the run" if rid is not None else "")
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    if "custom_id" in obj:
        cid = _as_id(obj["custom_id"])
        if cid is None:
            return f"custom_id must be a non-empty string, got {_short(obj['custom_id'], 60)}"
        note_id = opts.id_prefix + cid
        if note_id not in known:
            return Answer(note_id, where, kind="unknown_note", reason=f"{where}: unknown note id {note_id!r}")
        return _batch_answer(obj, note_id, where)
    if "teacher_output" in obj:
        if scan.first_keys is None:
            scan.first_keys = sorted(obj)
        if opts.id_field not in obj:
            scan.teacher_lines_without_id += 1
            return f"no {opts.id_field!r} key (id field); keys: {sorted(obj)}"
        scan.teacher_lines_with_id += 1
        rid = _as_id(obj[opts.id_field])
        if rid is None:
            return f"{opts.id_field!r} must be a non-empty string or integer, got {_short(obj[opts.id_field], 60)}"
        note_id = opts.id_prefix + rid
        if note_id not in known:
            return Answer(note_id, where, kind="unknown_note", reason=f"{where}: unknown note id {note_id!r}")
        out = obj["teacher_output"]
        text_out = out if isinstance(out, str) else json.dumps(out, ensure_ascii=False)
        model = obj.get("model") if isinstance(obj.get("model"), str) else None
        return _parsed(note_id, where, text_out, model)
    return (
        "neither a batch output line (custom_id, response) nor a TeacherOutput line "
        f"({opts.id_field!r}, teacher_output); keys: {sorted(obj)[:10]}"
    )


def read_files(
    files: Sequence[Path], opts: IdOptions, known: set[str]
) -> tuple[list[Answer], list[Unmatched], list[FileScan]]:
    answers: list[Answer] = []
    unmatched: list[Unmatched] = []
    scans: list[FileScan] = []
    for path in files:
        digest = hashlib.sha256()
        scan = FileScan(path=path, sha256="", lines=0)
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, 1):
                digest.update(raw)
                if not raw.strip():
                    continue
                scan.lines += 1
                got = _read_line(raw.strip(), f"{path}:{number}", opts, known, scan)
                if isinstance(got, str):
                    unmatched.append(Unmatched(str(path), number, got))
                else:
                    answers.append(got)
        scan.sha256 = digest.hexdigest()
        if scan.teacher_lines_without_id and not scan.teacher_lines_with_id:
            raise ConfigError(
                f"id field {opts.id_field!r} (--id-field) is in no TeacherOutput line of {path}; "
                f"its lines have keys {scan.first_keys}: expected the key that holds the note id, "
                "e.g. --id-field video_id"
            )
        scans.append(scan)
    return answers, unmatched, scans
