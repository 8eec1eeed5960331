"""The TagNotes journal: every accepted fresh note, appended and fsync'd before TagNotes replies.

Why a journal and not the Feast online store: the online store is one of several consumers (it may be
Redis, remote, or down), a Feast push is not atomic across notes and cannot say what changed in which
order, and the server must rebuild its catalog and ANN index from something it owns. So the order is:
validate → tag → **append one line per call and fsync** → apply in memory → reply OK → push to Feast in
the background. A note acknowledged once is served after any restart (SIGTERM or SIGKILL): on start the
server replays the journal over the run's batch tables (:meth:`Journal.replay`), and re-pushes the
journaled notes to the online store, which repairs a push lost to a crash.

Format: one line per TagNotes call, ``<crc32 as 8 hex digits> <json>\\n``, the JSON being
``{"v": 1, "at_ms": ..., "notes": [{"note_id", "category", "created_at_ms", "tags": [[text, dimension,
confidence], ...], "tagger", "tagger_version", "generated_at_ms"}, ...]}``. A call's notes are one
line, so a call is journaled whole or not at all. A crash in the middle of a write leaves a line
without its newline (a "torn tail"): that call was never acknowledged, and the next writer or the next
start drops it (logged). A complete line whose checksum fails is damage, and the server refuses to
start, naming the file and line (:class:`JournalError`).

Several server processes (``workers``) share one journal: appends hold an exclusive ``flock`` on the
file, and each process reads what the others appended (:meth:`Journal.poll`) so every worker applies
every call in journal order. Each running server also holds a shared lock on ``<journal>.lock``, so
:func:`compact` (which rewrites the file) refuses to run under a live server.

Compaction (``tagllm journal compact --run RUN``, servers stopped) rewrites the journal keeping each
note's latest tags and its first creation time. The journal is not folded into the run's batch tables:
a new ``tagllm`` pipeline run (prepare → tag → features → train) is what makes fresh notes batch notes.

Example::

    journal = Journal(RunDir("runs/demo").journal)
    for entry in journal.replay():          # at start, before serving
        apply(entry)
    applied = journal.append(JournalEntry.now([note]))   # others' new entries first, then this one
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from features.errors import ConfigError
from tagging.types import Tag

__all__ = ["Journal", "JournalEntry", "JournalError", "JournalNote", "compact", "latest_notes"]

log = logging.getLogger(__name__)

VERSION = 1


class JournalError(ConfigError):
    """The journal is damaged (a complete line whose checksum or JSON is wrong) or held by a server."""

    grpc_status = "INTERNAL"


@dataclass(frozen=True)
class JournalNote:
    """One note as TagNotes accepted it. ``created_at_ms`` 0: the server's clock at first add."""

    note_id: str
    category: str
    tags: tuple[Tag, ...]
    created_at_ms: int
    tagger: str
    tagger_version: str
    generated_at_ms: int

    def as_json(self) -> dict[str, Any]:
        return {
            "note_id": self.note_id,
            "category": self.category,
            "created_at_ms": self.created_at_ms,
            "tags": [[t.text, t.dimension, float(t.confidence)] for t in self.tags],
            "tagger": self.tagger,
            "tagger_version": self.tagger_version,
            "generated_at_ms": self.generated_at_ms,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JournalNote:
        return cls(
            note_id=str(d["note_id"]),
            category=str(d["category"]),
            tags=tuple(Tag(str(t), str(dim), float(c)) for t, dim, c in d["tags"]),
            created_at_ms=int(d["created_at_ms"]),
            tagger=str(d["tagger"]),
            tagger_version=str(d["tagger_version"]),
            generated_at_ms=int(d["generated_at_ms"]),
        )


@dataclass(frozen=True)
class JournalEntry:
    """One TagNotes call: its notes, journaled together."""

    at_ms: int
    notes: tuple[JournalNote, ...]

    @classmethod
    def now(cls, notes: Sequence[JournalNote]) -> JournalEntry:
        return cls(int(time.time() * 1000), tuple(notes))

    def encode(self) -> bytes:
        body = json.dumps(
            {"v": VERSION, "at_ms": self.at_ms, "notes": [n.as_json() for n in self.notes]},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")
        return b"%08x " % zlib.crc32(body) + body + b"\n"

    @classmethod
    def decode(cls, line: bytes, where: str) -> JournalEntry:
        """Parse one complete line (without its newline). Raises JournalError naming ``where``."""
        head, _, body = line.partition(b" ")
        try:
            ok = len(head) == 8 and int(head, 16) == zlib.crc32(body)
        except ValueError:
            ok = False
        if not ok:
            raise JournalError(f"{where}: checksum mismatch (the line is damaged)")
        try:
            d = json.loads(body)
            if d.get("v") != VERSION:
                raise ValueError(f"version {d.get('v')!r}; expected {VERSION}")
            return cls(int(d["at_ms"]), tuple(JournalNote.from_json(n) for n in d["notes"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"{where}: not a journal entry ({exc})") from exc


@contextlib.contextmanager
def _flock(f: BinaryIO, kind: int) -> Iterator[None]:
    fcntl.flock(f.fileno(), kind)
    try:
        yield
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """An open journal (see the module docstring). Thread-safe for one process; processes share it
    through ``flock``. Not fork-safe: open it in the process that uses it.

    Args:
        path: the journal file (created with its folder when absent).
        hold: take the shared "a server is running" lock on ``<path>.lock`` (servers do; tools do not).

    Raises:
        ConfigError: the folder cannot be created or the file opened (names the path and the reason).
    """

    def __init__(self, path: str | os.PathLike[str], *, hold: bool = True) -> None:
        self.path = Path(path)
        created = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f: BinaryIO = open(self.path, "a+b")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise ConfigError(
                f"journal: cannot open {self.path} ({exc.strerror}); expected a writable file "
                "(set journal to another path, or start the server without writes)"
            ) from exc
        if created:
            _fsync_dir(self.path.parent)
        self._held: BinaryIO | None = None
        if hold:
            self._held = open(self.path.with_name(self.path.name + ".lock"), "a+b")  # noqa: SIM115
            fcntl.flock(self._held.fileno(), fcntl.LOCK_SH)
        self._offset = 0
        self._lock = threading.Lock()
        self.lines = 0

    # ---- reading ---------------------------------------------------------------------------------

    def _read_from(self, offset: int) -> tuple[bytes, int]:
        """Bytes from ``offset`` to the end of the last complete line, and the end of the file."""
        self._f.seek(0, os.SEEK_END)
        end = self._f.tell()
        if end <= offset:
            return b"", end
        self._f.seek(offset)
        data = self._f.read(end - offset)
        cut = data.rfind(b"\n") + 1
        return data[:cut], end

    def _parse(self, data: bytes, first_line: int, *, strict: bool) -> list[JournalEntry]:
        out = []
        for k, line in enumerate(data.split(b"\n")[:-1]):
            where = f"{self.path} line {first_line + k}"
            try:
                out.append(JournalEntry.decode(line, where))
            except JournalError:
                if strict:
                    raise
                log.error("journal %s: skipped a damaged line written by another worker", where)
        self.lines += len(data.split(b"\n")) - 1
        return out

    def _drop_torn_tail(self, complete_end: int, end: int) -> None:
        """Truncate bytes after the last newline (a writer died mid-line; caller holds LOCK_EX)."""
        if end > complete_end:
            log.warning(
                "journal %s: dropped a torn last line (%d bytes; a write interrupted by a crash, "
                "never acknowledged)",
                self.path,
                end - complete_end,
            )
            self._f.truncate(complete_end)
            os.fsync(self._f.fileno())

    def replay(self) -> list[JournalEntry]:
        """Every entry from the start (strict: a damaged complete line raises JournalError naming it).

        Drops a torn tail. Afterwards :meth:`poll` and :meth:`append` continue from the end.
        """
        with self._lock, _flock(self._f, fcntl.LOCK_EX):
            data, end = self._read_from(0)
            self.lines = 0
            entries = self._parse(data, 1, strict=True)
            self._drop_torn_tail(len(data), end)
            self._offset = len(data)
        return entries

    def read(self) -> list[JournalEntry]:
        """Every complete entry from the start, strictly (a damaged line raises JournalError naming it);
        takes no lock and changes nothing (for tools that look while servers run)."""
        with self._lock:
            data, _ = self._read_from(0)
            self.lines = 0
            return self._parse(data, 1, strict=True)

    def poll(self) -> list[JournalEntry]:
        """Entries other processes appended since the last read (complete lines only; no lock taken)."""
        with self._lock:
            data, _ = self._read_from(self._offset)
            if not data:
                return []
            entries = self._parse(data, self.lines + 1, strict=False)
            self._offset += len(data)
            return entries

    # ---- writing ---------------------------------------------------------------------------------

    def append(self, entry: JournalEntry) -> list[JournalEntry]:
        """Append ``entry`` and fsync; returns the entries to apply, in journal order: those other
        processes appended since the last read, then ``entry``.

        Raises:
            OSError: the write or fsync failed (nothing was acknowledged; the caller answers an error).
        """
        line = entry.encode()
        with self._lock, _flock(self._f, fcntl.LOCK_EX):
            data, end = self._read_from(self._offset)
            before = self._parse(data, self.lines + 1, strict=False) if data else []
            self._drop_torn_tail(self._offset + len(data), end)
            self._f.seek(0, os.SEEK_END)
            self._f.write(line)
            self._f.flush()
            os.fsync(self._f.fileno())
            self._offset = self._f.tell()
            self.lines += 1
        return [*before, entry]

    def close(self) -> None:
        with self._lock:
            self._f.close()
            if self._held is not None:
                self._held.close()  # releases the shared lock
                self._held = None


def latest_notes(entries: Sequence[JournalEntry]) -> dict[str, JournalNote]:
    """note_id -> its latest journaled version, keeping the first non-zero creation time."""
    out: dict[str, JournalNote] = {}
    for e in entries:
        for n in e.notes:
            old = out.get(n.note_id)
            if old is not None and old.created_at_ms and old.created_at_ms != n.created_at_ms:
                n = JournalNote(
                    n.note_id,
                    n.category,
                    n.tags,
                    old.created_at_ms,
                    n.tagger,
                    n.tagger_version,
                    n.generated_at_ms,
                )
            out.pop(n.note_id, None)  # keep dict order = order of the latest change
            out[n.note_id] = n
    return out


def compact(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Rewrite the journal with one entry per note (its latest tags); returns (lines before, notes).

    Atomic (temp file, fsync, rename, fsync of the folder). Raises JournalError when a server holds
    the journal or a line is damaged.
    """
    p = Path(path)
    lock_path = p.with_name(p.name + ".lock")
    with open(lock_path, "a+b") as held:
        try:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise JournalError(
                f"journal {p}: a server is running on it; stop it first, then compact"
            ) from exc
        journal = Journal(p, hold=False)
        try:
            entries = journal.replay()
            lines = journal.lines
        finally:
            journal.close()
        notes = latest_notes(entries)
        tmp = p.with_name(p.name + ".compact.tmp")
        with open(tmp, "wb") as f:
            for n in notes.values():
                f.write(JournalEntry(n.generated_at_ms, (n,)).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        _fsync_dir(p.parent)
    log.info("journal %s compacted: %d lines -> %d notes", p, lines, len(notes))
    return lines, len(notes)
