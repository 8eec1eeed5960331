"""Resumable, cached teacher runs for any :class:`~tagging.types.Tagger` (the LLM teacher especially).

Layout under RUN_DIR::

    cache/teacher_cache.sqlite      key -> result (successful results only)
    teacher/<out_name>.log.jsonl    append-only log of the current run key, one line per finished
                                    note (fsync'd per batch)
    teacher/<out_name>.<run_id>.log.jsonl  the log of another run key, parked (see below)
    teacher/<out_name>.legacy.log.jsonl    a log written before logs carried a run key, parked
    teacher/<out_name>.summary.json the last run's summary
    tables/<out_name>.parquet       canonical ``tags`` table (written atomically at the end)
    tables/<out_name>_failures.parquet  note_id, reason

**Run key.** A tagger's answers depend on its ``name``, ``version`` and ``fingerprint`` (an optional
attribute carrying the prompt and handbook versions, the model, ...); :func:`run_key` joins the
three and ``run_id`` (:func:`run_id`) is the first 16 hex digits of its sha256. The **cache key** of
a note is ``sha256(note.content_key() | name | version | fingerprint)`` (:func:`cache_key`), so a
new handbook or prompt misses the cache while a re-run of the same inputs costs zero requests.

**Log lines** carry both: ``{"run": run_id, "key": cache key, "cached": bool, note_id, status,
error, tags, trace}``. On start a line is resumed only when its ``run`` is this tagger's run id and
its ``key`` is the note's current cache key (same tagger, same note content); any other line is
never used. The log file of ``out_name`` always holds one run key: when it belongs to another run
key (``--teacher reference`` after ``--teacher offline``), it is renamed aside to
``teacher/<out_name>.<its run_id>.log.jsonl``, nothing in it is deleted, and the new run starts
its own log; when this run key's log was parked earlier, it is renamed back and resumed. A log
written before log lines carried a run key (no ``run`` field) is parked as
``teacher/<out_name>.legacy.log.jsonl`` and never resumed, whatever tagger wrote it: a re-run of
the tagger that wrote it gets its successful results from the cache (the cache key was already
tagger-specific: zero requests) and tags its failed notes again.

Crash safety: a result is appended to the log as soon as it is known; every ``batch_size`` results
(and at the end) the log is flushed and fsync'd. A SIGKILL loses at most the unsynced tail and the
requests in flight. On restart the log is read (a torn last line is cut off), notes already in it are
skipped, the rest are tagged, and the tables are rebuilt from the log — one row per note, last line
wins — so there are no duplicates and no lost notes.

A cache hit is used only for the note it was stored for (same ``note_id``): two notes with the
same content share a cache key, but a tagger may read more than the content (the reference teacher
reads each note's own reference tags), so the other note is tagged itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from features.errors import ConfigError
from features.io import RunDir, write_json, write_parquet
from tagging.types import Evidence, NoteInput, Tag, Tagger, TagResult, results_to_tags_table

__all__ = [
    "ResultCache",
    "RunSummary",
    "cache_key",
    "result_from_json",
    "result_to_json",
    "run_id",
    "run_key",
    "run_teacher",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunSummary:
    """Headline figures of one :func:`run_teacher` call.

    ``requests``, ``retries``, tokens and ``cost`` count this invocation only (a resumed run does not
    re-count what the killed one spent); ``ok``/``failed`` count the final tables. ``run_id`` is the
    tagger's run id (see the module docstring) and ``log_path`` the log it resumed from and wrote.
    """

    tagger: str
    tagger_version: str
    notes: int
    ok: int
    failed: int
    cached: int
    resumed: int
    tagged_now: int
    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    cost: float
    wall_s: float
    tags_path: str
    failures_path: str
    run_id: str = ""
    log_path: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_key(tagger: Tagger) -> str:
    """What identifies a tagger's answers: ``name``, ``version`` and ``fingerprint`` (may be empty)."""
    return "\x1d".join([tagger.name, tagger.version, str(getattr(tagger, "fingerprint", ""))])


def run_id(tagger: Tagger) -> str:
    """A short id of :func:`run_key`: the first 16 hex digits of its sha256 (names parked logs)."""
    return hashlib.sha256(run_key(tagger).encode("utf-8")).hexdigest()[:16]


def cache_key(note: NoteInput, tagger: Tagger) -> str:
    """The cache key of ``note`` under ``tagger``: ``sha256(content | name | version | fingerprint)``."""
    return hashlib.sha256(f"{note.content_key()}\x1d{run_key(tagger)}".encode()).hexdigest()


def result_to_json(result: TagResult) -> dict[str, Any]:
    return {
        "note_id": result.note_id,
        "status": result.status,
        "error": result.error,
        "tags": [
            {**t.as_record(), "evidence": [{"source": e.source, "span": e.span} for e in t.evidence]}
            for t in result.tags
        ],
        "trace": result.trace,
    }


def result_from_json(d: dict[str, Any]) -> TagResult:
    tags = tuple(
        Tag(
            text=t["text"],
            dimension=t["dimension"],
            confidence=float(t["confidence"]),
            evidence=tuple(Evidence(source=e["source"], span=e["span"]) for e in t.get("evidence", [])),
        )
        for t in d.get("tags", [])
    )
    return TagResult(
        note_id=str(d["note_id"]),
        tags=tags,
        status=d["status"],
        error=d.get("error"),
        trace=d.get("trace") or {},
    )


class ResultCache:
    """A sqlite key -> result store (successful results only; failures are retried on a re-run)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
        self._db.commit()

    def get_many(self, keys: Sequence[str]) -> dict[str, TagResult]:
        out: dict[str, TagResult] = {}
        for i in range(0, len(keys), 500):
            chunk = list(keys[i : i + 500])
            q = f"SELECT key, result FROM results WHERE key IN ({','.join('?' * len(chunk))})"
            for key, text in self._db.execute(q, chunk):
                out[key] = result_from_json(json.loads(text))
        return out

    def put_many(self, items: Sequence[tuple[str, TagResult]]) -> None:
        rows = [(k, json.dumps(result_to_json(r), ensure_ascii=False)) for k, r in items if r.status == "ok"]
        if rows:
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", rows)
            self._db.commit()

    def close(self) -> None:
        self._db.close()


LEGACY = "legacy"
UNREADABLE = "unreadable"
_RUN_ID = re.compile(r"[0-9a-f]{16}")


def _log_owner(path: Path) -> str | None:
    """Whose log ``path`` is: the run id of its first readable line, :data:`LEGACY` when that line
    has none, :data:`UNREADABLE` when no complete line parses, None when it holds no complete line."""
    if not path.exists():
        return None
    complete = False
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # a torn last line (cut off by _read_log)
            if not line.strip():
                continue
            complete = True
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(entry, dict):
                continue
            owner = entry.get("run")
            if owner is None:
                return LEGACY
            # the id names the parked file: accept only what run_id() writes
            return owner if isinstance(owner, str) and _RUN_ID.fullmatch(owner) else UNREADABLE
    return UNREADABLE if complete else None


def _free(path: Path) -> Path:
    """``path``, or ``<name>.1.log.jsonl``, ``.2``, ... when taken: a parked log is never overwritten."""
    stem = path.name.removesuffix(".log.jsonl")
    n = 0
    while path.exists():
        n += 1
        path = path.with_name(f"{stem}.{n}.log.jsonl")
    return path


def _select_log(current: Path, out_name: str, rid: str) -> None:
    """Make ``current`` the log of run ``rid`` (module docstring): park another run key's log, bring
    back this run key's parked log."""
    owner = _log_owner(current)
    if owner is not None and owner != rid:
        parked = _free(current.with_name(f"{out_name}.{owner}.log.jsonl"))
        os.replace(current, parked)
        log.warning(
            "%s is not this tagger run's log (run id %s) but %s; parked it as %s (kept, not resumed)",
            current,
            rid,
            {LEGACY: "from a version without run keys", UNREADABLE: "unreadable"}.get(
                owner, f"another tagger run's (run id {owner})"
            ),
            parked.name,
        )
        owner = None
    mine = current.with_name(f"{out_name}.{rid}.log.jsonl")
    if owner is None and mine.exists():
        os.replace(mine, current)  # replaces at most a file holding no complete line (a torn one)
        log.info("resuming the parked log %s of this tagger run (run id %s)", mine.name, rid)


def _read_log(path: Path, rid: str) -> dict[str, dict[str, Any]]:
    """note_id -> last log entry of run ``rid``; a torn final line (crash mid-write) is cut off the
    file. Lines of another run (or of none) are skipped, not removed."""
    entries: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return entries
    data = path.read_bytes()
    good = data.rfind(b"\n") + 1
    if good < len(data):
        log.warning(
            "%s: cutting off a torn last line (%d bytes) left by an interrupted run", path, len(data) - good
        )
        with open(path, "rb+") as fh:
            fh.truncate(good)
            os.fsync(fh.fileno())
    foreign = 0
    for line in data[:good].splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: skipping an unreadable log line", path)
            continue
        if not isinstance(entry, dict) or entry.get("run") != rid:
            foreign += 1
            continue
        entries[str(entry["note_id"])] = entry
    if foreign:
        log.warning("%s: %d lines of another tagger run are kept in the file but not used", path, foreign)
    return entries


class _Log:
    def __init__(self, path: Path, batch_size: int, rid: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._pending = 0
        self._batch = batch_size
        self._rid = rid

    def append(self, key: str, result: TagResult, cached: bool) -> None:
        entry = {"run": self._rid, "key": key, "cached": cached, **result_to_json(result)}
        self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._pending += 1
        if self._pending >= self._batch:
            self.sync()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._pending = 0

    def close(self) -> None:
        self.sync()
        self._fh.close()


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def _run_async(
    tagger: Any, todo: Sequence[tuple[str, NoteInput]], record: Callable[..., None], window: int
) -> None:
    """Tag with the tagger's ``atag`` coroutine, logging each result the moment it completes."""
    it = iter(todo)
    pending: dict[asyncio.Task[list[TagResult]], tuple[str, NoteInput]] = {}
    try:
        while True:
            while len(pending) < window:
                nxt = next(it, None)
                if nxt is None:
                    break
                pending[asyncio.ensure_future(tagger.atag([nxt[1]]))] = nxt
            if not pending:
                break
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                key, note = pending.pop(task)
                record(key, note, task.result()[0])
    finally:
        for task in pending:
            task.cancel()
        if hasattr(tagger, "aclose"):
            await tagger.aclose()


def _check_args(notes: Sequence[NoteInput], out_name: str, batch_size: int) -> list[str]:
    """The note_ids, after checking ``out_name``, ``batch_size`` and that the ids are unique."""
    if not out_name or not all(c.isalnum() or c in "_-" for c in out_name):
        raise ConfigError(f"out_name must be letters, digits, '_' or '-'; got {out_name!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1; got {batch_size}")
    ids = [n.note_id for n in notes]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5] if len(ids) < 100_000 else ["…"]
        raise ConfigError(f"notes: note_id must be unique; repeated: {dup}")
    return ids


def _logged_ids(
    keyed: Sequence[tuple[str, NoteInput]], logged: Mapping[str, dict[str, Any]], retry_failed: bool
) -> set[str]:
    """The notes the log already has a result for, with the same run key and the same content (a note
    edited since it was logged is tagged again)."""
    done = set()
    for key, n in keyed:
        e = logged.get(n.note_id)
        if e is not None and e.get("key") == key and (e["status"] == "ok" or not retry_failed):
            done.add(n.note_id)
    return done


@dataclass
class _Recorder:
    """Logs each result as it arrives, caches it and reports progress."""

    out: _Log
    logged: dict[str, dict[str, Any]]
    cache: ResultCache | None
    total: int
    done: int
    progress: Progress | None = None
    cached: int = 0
    now: int = 0

    def __call__(self, key: str, note: NoteInput, result: TagResult, cached: bool = False) -> None:
        if result.note_id != note.note_id:  # a tagger bug must not corrupt the log
            result = TagResult(
                note_id=note.note_id, status="failed", error=f"tagger returned {result.note_id!r}"
            )
        self.out.append(key, result, cached)
        self.logged[note.note_id] = {"status": result.status, **result_to_json(result)}
        if self.cache is not None and not cached:
            self.cache.put_many([(key, result)])
        if cached:
            self.cached += 1
        else:
            self.now += 1
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _tag_missing(
    tagger: Tagger, keyed: Sequence[tuple[str, NoteInput]], record: _Recorder, batch_size: int
) -> None:
    """Record the cache's hits, then tag the rest (asynchronously when the tagger has ``atag``)."""
    cache = record.cache
    hits = cache.get_many([k for k, _ in keyed]) if cache is not None else {}
    todo = []
    for key, note in keyed:
        if key in hits and hits[key].note_id == note.note_id:
            record(key, note, hits[key], cached=True)
        else:
            todo.append((key, note))
    record.out.sync()
    if todo and hasattr(tagger, "atag"):
        asyncio.run(_run_async(tagger, todo, record, window=4 * batch_size))
    else:
        for chunk in _chunks(todo, batch_size):
            for (key, note), result in zip(chunk, tagger.tag([n for _, n in chunk]), strict=True):
                record(key, note, result)


def _write_tables(
    rd: RunDir, out_name: str, tagger: Tagger, final: Sequence[TagResult]
) -> tuple[Path, Path, int]:
    """Write the tags and failures tables; returns their paths and the number of failures."""
    tags_path = write_parquet(
        results_to_tags_table(final, tagger=tagger.name, version=tagger.version), rd.table_path(out_name)
    )
    failures = pd.DataFrame(
        [{"note_id": r.note_id, "reason": r.error or ""} for r in final if r.status == "failed"],
        columns=["note_id", "reason"],
    )
    failures_path = write_parquet(failures, rd.table_path(f"{out_name}_failures"))
    return tags_path, failures_path, len(failures)


def _usage(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The tagger's requests, retries, tokens and cost during this run (its stats' difference)."""

    def delta(name: str) -> Any:
        return after.get(name, 0) - before.get(name, 0)

    return {
        "requests": int(delta("requests")),
        "retries": int(delta("retries")),
        "prompt_tokens": int(delta("prompt_tokens")),
        "completion_tokens": int(delta("completion_tokens")),
        "cost": round(float(delta("cost")), 6),
    }


def run_teacher(
    tagger: Tagger,
    notes: Sequence[NoteInput],
    *,
    run_dir: str | os.PathLike[str],
    out_name: str = "teacher_tags",
    batch_size: int = 32,
    use_cache: bool = True,
    retry_failed: bool = False,
    progress: Progress | None = None,
) -> RunSummary:
    """Tag ``notes`` with ``tagger``: cached, resumable, crash-safe; writes the tags and failures tables.

    Args:
        tagger: any Tagger; one with an ``atag`` coroutine (the LLM teacher) is driven asynchronously
            with up to ``4 * batch_size`` notes in flight.
        notes: the notes (unique note_ids).
        run_dir: the run directory (see the module docstring for what is written where).
        out_name: name of the log and the tables (``[a-zA-Z0-9_-]``).
        batch_size: results per fsync of the log (and notes per ``tag()`` call for sync taggers).
        use_cache: read and write the result cache.
        retry_failed: on restart, tag again the notes whose logged result is ``failed``.
        progress: called as ``progress(done, total)`` after each result.

    Returns:
        The run summary (also written to ``teacher/<out_name>.summary.json``).

    Raises:
        ConfigError: duplicate note_ids, an empty/invalid ``out_name`` or ``batch_size < 1``.
    """
    ids = _check_args(notes, out_name, batch_size)
    t0 = time.perf_counter()
    rd = RunDir(run_dir)
    rid = run_id(tagger)
    log_path = rd.teacher_log(out_name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _select_log(log_path, out_name, rid)
    logged = _read_log(log_path, rid)
    all_keyed = [(cache_key(n, tagger), n) for n in notes]
    done_ids = _logged_ids(all_keyed, logged, retry_failed)
    keyed = [(k, n) for k, n in all_keyed if n.note_id not in done_ids]
    stats = getattr(tagger, "stats", None)
    before = stats.snapshot() if stats is not None else {}

    cache = ResultCache(rd.teacher_cache) if use_cache else None
    out = _Log(log_path, batch_size, rid)
    record = _Recorder(out, logged, cache, total=len(notes), done=len(done_ids), progress=progress)
    try:
        _tag_missing(tagger, keyed, record, batch_size)
    finally:
        out.close()
        if cache is not None:
            cache.close()

    final = [result_from_json(logged[i]) for i in ids]
    tags_path, failures_path, n_failed = _write_tables(rd, out_name, tagger, final)
    usage = _usage(before, stats.snapshot() if stats is not None else {})
    summary = RunSummary(
        tagger=tagger.name,
        tagger_version=tagger.version,
        notes=len(notes),
        ok=sum(r.status == "ok" for r in final),
        failed=n_failed,
        cached=record.cached,
        resumed=len(done_ids),
        tagged_now=record.now,
        **usage,
        wall_s=round(time.perf_counter() - t0, 3),
        tags_path=str(tags_path),
        failures_path=str(failures_path),
        run_id=rid,
        log_path=str(log_path),
    )
    write_json(summary.as_dict(), rd.teacher_summary(out_name))
    log.info("teacher run %s: %s", out_name, summary.as_dict())
    return summary
