"""Resumable, cached teacher runs for any :class:`~tagging.types.Tagger` (the LLM teacher especially).

Layout under RUN_DIR::

    cache/teacher_cache.sqlite      key -> result (successful results only)
    teacher/<out_name>.log.jsonl    append-only log, one line per finished note (fsync'd per batch)
    teacher/<out_name>.summary.json the last run's summary
    tables/<out_name>.parquet       canonical ``tags`` table (written atomically at the end)
    tables/<out_name>_failures.parquet  note_id, reason

The cache key is ``sha256(note.content_key() | tagger name | tagger version | tagger fingerprint)``;
a tagger's ``fingerprint`` (optional attribute) carries the prompt and handbook versions, so a new
handbook or prompt misses the cache while a re-run of the same inputs costs zero requests.

Crash safety: a result is appended to the log as soon as it is known; every ``batch_size`` results
(and at the end) the log is flushed and fsync'd. A SIGKILL loses at most the unsynced tail and the
requests in flight. On restart the log is read (a torn last line is cut off), notes already in it are
skipped, the rest are tagged, and the tables are rebuilt from the log — one row per note, last line
wins — so there are no duplicates and no lost notes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from features.errors import ConfigError
from features.io import RunDir, write_json, write_parquet
from tagging.types import Evidence, NoteInput, Tag, Tagger, TagResult, results_to_tags_table

__all__ = ["ResultCache", "RunSummary", "cache_key", "result_from_json", "result_to_json", "run_teacher"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RunSummary:
    """Headline figures of one :func:`run_teacher` call.

    ``requests``, ``retries``, tokens and ``cost`` count this invocation only (a resumed run does not
    re-count what the killed one spent); ``ok``/``failed`` count the final tables.
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def cache_key(note: NoteInput, tagger: Tagger) -> str:
    """The cache key of ``note`` under ``tagger`` (see the module docstring)."""
    parts = [note.content_key(), tagger.name, tagger.version, str(getattr(tagger, "fingerprint", ""))]
    return hashlib.sha256("\x1d".join(parts).encode("utf-8")).hexdigest()


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


def _read_log(path: Path) -> dict[str, dict[str, Any]]:
    """note_id -> last log entry; a torn final line (crash mid-write) is cut off the file."""
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
    for line in data[:good].splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: skipping an unreadable log line", path)
            continue
        entries[str(entry["note_id"])] = entry
    return entries


class _Log:
    def __init__(self, path: Path, batch_size: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._pending = 0
        self._batch = batch_size

    def append(self, key: str, result: TagResult, cached: bool) -> None:
        entry = {"key": key, "cached": cached, **result_to_json(result)}
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
    if not out_name or not all(c.isalnum() or c in "_-" for c in out_name):
        raise ConfigError(f"out_name must be letters, digits, '_' or '-'; got {out_name!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1; got {batch_size}")
    ids = [n.note_id for n in notes]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5] if len(ids) < 100_000 else ["…"]
        raise ConfigError(f"notes: note_id must be unique; repeated: {dup}")
    t0 = time.perf_counter()
    rd = RunDir(run_dir)
    log_path = rd.path / "teacher" / f"{out_name}.log.jsonl"
    logged = _read_log(log_path)
    wanted = set(ids)
    done_ids = {
        nid for nid, e in logged.items() if nid in wanted and (e["status"] == "ok" or not retry_failed)
    }
    keyed = [(cache_key(n, tagger), n) for n in notes if n.note_id not in done_ids]
    stats = getattr(tagger, "stats", None)
    before = stats.snapshot() if stats is not None else {}

    cache = ResultCache(rd.path / "cache" / "teacher_cache.sqlite") if use_cache else None
    out = _Log(log_path, batch_size)
    counts = {"cached": 0, "now": 0, "done": len(done_ids)}
    total = len(notes)

    def record(key: str, note: NoteInput, result: TagResult, cached: bool = False) -> None:
        if result.note_id != note.note_id:  # a tagger bug must not corrupt the log
            result = TagResult(
                note_id=note.note_id, status="failed", error=f"tagger returned {result.note_id!r}"
            )
        out.append(key, result, cached)
        logged[note.note_id] = {"status": result.status, **result_to_json(result)}
        if cache is not None and not cached:
            cache.put_many([(key, result)])
        counts["cached" if cached else "now"] += 1
        counts["done"] += 1
        if progress is not None:
            progress(counts["done"], total)

    try:
        hits = cache.get_many([k for k, _ in keyed]) if cache is not None else {}
        todo = []
        for key, note in keyed:
            if key in hits:
                record(key, note, hits[key], cached=True)
            else:
                todo.append((key, note))
        out.sync()
        if todo and hasattr(tagger, "atag"):
            asyncio.run(_run_async(tagger, todo, record, window=4 * batch_size))
        else:
            for chunk in _chunks(todo, batch_size):
                for (key, note), result in zip(chunk, tagger.tag([n for _, n in chunk]), strict=True):
                    record(key, note, result)
    finally:
        out.close()
        if cache is not None:
            cache.close()

    final = [result_from_json(logged[i]) for i in ids]
    tags_path = write_parquet(
        results_to_tags_table(final, tagger=tagger.name, version=tagger.version), rd.table_path(out_name)
    )
    failures = pd.DataFrame(
        [{"note_id": r.note_id, "reason": r.error or ""} for r in final if r.status == "failed"],
        columns=["note_id", "reason"],
    )
    failures_path = write_parquet(failures, rd.table_path(f"{out_name}_failures"))
    after = stats.snapshot() if stats is not None else {}

    def delta(name: str) -> Any:
        return after.get(name, 0) - before.get(name, 0)

    summary = RunSummary(
        tagger=tagger.name,
        tagger_version=tagger.version,
        notes=total,
        ok=sum(r.status == "ok" for r in final),
        failed=len(failures),
        cached=counts["cached"],
        resumed=len(done_ids),
        tagged_now=counts["now"],
        requests=int(delta("requests")),
        retries=int(delta("retries")),
        prompt_tokens=int(delta("prompt_tokens")),
        completion_tokens=int(delta("completion_tokens")),
        cost=round(float(delta("cost")), 6),
        wall_s=round(time.perf_counter() - t0, 3),
        tags_path=str(tags_path),
        failures_path=str(failures_path),
    )
    write_json(summary.as_dict(), rd.path / "teacher" / f"{out_name}.summary.json")
    log.info("teacher run %s: %s", out_name, summary.as_dict())
    return summary
