"""Fresh notes survive restarts: the TagNotes journal (unit) and real server processes killed and restarted.

The process tests run ``serving.server.serve`` in a subprocess with the title tagger of ``conftest``
(the tiny run has no student), SIGKILL or SIGTERM it right after a TagNotes OK, start it again on the
same journal and ask for the note.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from serving.journal import Journal, JournalEntry, JournalError, JournalNote, compact, latest_notes
from tagging.types import Tag

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _note(nid: str, tags: tuple[str, ...] = ("a:x",), created: int = 0) -> JournalNote:
    return JournalNote(nid, "beauty", tuple(Tag(t, "a", 0.9) for t in tags), created, "stub", "stub-1", 5)


# ---- the journal file ----------------------------------------------------------------------------------


def test_append_replay_round_trip_and_order(tmp_path):
    path = tmp_path / "j" / "tagnotes.journal"
    j = Journal(path)
    assert j.replay() == []
    e1, e2 = JournalEntry(1, (_note("n1"), _note("n2"))), JournalEntry(2, (_note("n1", ("b:y",)),))
    assert j.append(e1) == [e1]
    assert j.append(e2) == [e2]
    j.close()
    again = Journal(path)
    assert again.replay() == [e1, e2]
    latest = latest_notes([e1, e2])
    assert list(latest) == ["n2", "n1"] and [t.text for t in latest["n1"].tags] == ["b:y"]
    again.close()


def test_torn_tail_is_dropped_and_damage_is_named(tmp_path, caplog):
    path = tmp_path / "tagnotes.journal"
    j = Journal(path)
    e1 = JournalEntry(1, (_note("n1"),))
    j.append(e1)
    j.close()
    with open(path, "ab") as f:  # a crash in the middle of the next write
        f.write(JournalEntry(2, (_note("n2"),)).encode()[:25])
    j = Journal(path)
    assert j.replay() == [e1]
    assert "torn last line" in caplog.text
    assert path.read_bytes().endswith(b"\n")
    j.close()
    lines = path.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"n1"', b'"n9"')  # a flipped byte in a complete line
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalError, match=r"tagnotes.journal line 1: checksum mismatch"):
        Journal(path, hold=False).replay()


def test_two_processes_share_one_journal_in_order(tmp_path):
    """Two Journal objects on one file stand for two workers: each sees the other's entries, in order."""
    path = tmp_path / "tagnotes.journal"
    a, b = Journal(path), Journal(path)
    a.replay(), b.replay()
    ea = JournalEntry(1, (_note("from-a"),))
    eb = JournalEntry(2, (_note("from-b"),))
    assert a.append(ea) == [ea]
    assert b.append(eb) == [ea, eb]  # b applies a's entry before its own
    assert a.poll() == [eb] and a.poll() == []
    with open(path, "ab") as f:  # a worker died mid-write; the next append drops its torn line
        f.write(b"deadbeef {")
    ec = JournalEntry(3, (_note("from-a-2"),))
    assert a.poll() == []  # an incomplete line is never read
    assert a.append(ec) == [ec]
    assert b.poll() == [ec]
    a.close(), b.close()


def test_compact_keeps_latest_tags_and_first_creation_and_refuses_under_a_server(tmp_path):
    path = tmp_path / "tagnotes.journal"
    j = Journal(path)
    j.append(JournalEntry(1, (_note("n1", ("a:x",), created=1000),)))
    j.append(JournalEntry(2, (_note("n1", ("a:z",), created=0), _note("n2"))))
    with pytest.raises(JournalError, match="a server is running"):
        compact(path)
    j.close()
    assert compact(path) == (2, 2)
    entries = Journal(path, hold=False).replay()
    notes = latest_notes(entries)
    assert [t.text for t in notes["n1"].tags] == ["a:z"] and notes["n1"].created_at_ms == 1000
    assert len(entries) == 2


# ---- real server processes -----------------------------------------------------------------------------

_SERVER = textwrap.dedent(
    """
    import logging, sys
    sys.path.insert(0, {here!r})
    logging.basicConfig(level=logging.INFO)
    from conftest import TitleTagger
    from serving.config import ServerConfig
    from serving.server import serve
    config = ServerConfig.from_mapping(dict(
        run_dir={run!r}, port=0, port_file={port_file!r}, journal={journal!r}, open_writes=True,
        workers={workers}, journal_poll_s=0.05,
    ))
    kwargs = {{}} if config.workers > 1 else dict(tagger=TitleTagger(), features=None)
    serve(config, **kwargs)
    """
)


class _Proc:
    def __init__(self, run: Path, journal: Path, tmp: Path, workers: int = 1) -> None:
        self.port_file = tmp / f"port-{time.monotonic_ns()}"
        code = _SERVER.format(
            here=str(HERE),
            run=str(run),
            port_file=str(self.port_file),
            journal=str(journal),
            workers=workers,
        )
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{HERE}"}
        self.log = tmp / f"server-{time.monotonic_ns()}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 240
        while not self.port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"server did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        self.target = f"127.0.0.1:{int(self.port_file.read_text())}"

    def stop(self, sig: int) -> None:
        self.proc.send_signal(sig)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _matching(client, run_rec_users):  # a user, its top interests and a category it gets recommended
    for user in run_rec_users:
        tags = client.user_interests([user], top_k=3)[0].tags
        if tags:
            return user, [t["text"] for t in tags], client.recommend(user, k=1)[0].category
    raise AssertionError("no user with interests")


def test_tag_notes_ok_then_sigkill_or_sigterm_then_restart_serves_the_note(serving_run, tmp_path):
    from serving.client import TagLLMClient

    journal = tmp_path / "tagnotes.journal"
    server = _Proc(serving_run, journal, tmp_path)
    nid = "n-durable"
    try:
        with TagLLMClient(server.target, timeout=30) as c:
            user, tags, category = _matching(c, ["u00000", "u00001", "u00002", "u00003"])
            out = c.tag_notes([{"note_id": nid, "category": category, "title": "|".join(tags)}])
            assert out.notes[0].note_id == nid
            server.stop(signal.SIGKILL)  # at once, right after the OK
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)
    again = _Proc(serving_run, journal, tmp_path)
    try:
        with TagLLMClient(again.target, timeout=30) as c:
            got = c.note_tags([nid])[0]
            assert sorted(t["text"] for t in got.tags) == sorted(tags) and got.tagger == "title-stub"
            recs = c.recommend(user, k=20, cold_start_only=True)
            assert nid in [r.note_id for r in recs], [r.note_id for r in recs]
            # a re-tag replaces the tags (and the embedding); one with no tags changes nothing
            new = c.tag_notes([{"note_id": nid, "category": category, "title": tags[0]}])
            assert [t["text"] for t in new.notes[0].tags] == [tags[0]] and not new.unchanged_note_ids
            empty = c.tag_notes([{"note_id": nid, "category": category, "title": ""}])
            assert empty.unchanged_note_ids == (nid,)
            assert [t["text"] for t in empty.notes[0].tags] == [tags[0]]
            assert [t["text"] for t in c.note_tags([nid])[0].tags] == [tags[0]]
            assert set(c.rank(user, [nid])[0].reasons) <= {tags[0]}  # Rank explains with the new tags
            c.tag_notes([{"note_id": "n-durable-2", "category": category, "title": tags[-1]}])
            again.stop(signal.SIGTERM)  # graceful, right after the OK
    finally:
        if again.proc.poll() is None:
            again.stop(signal.SIGKILL)
    third = _Proc(serving_run, journal, tmp_path)
    try:
        with TagLLMClient(third.target, timeout=30) as c:
            assert [t["text"] for t in c.note_tags([nid])[0].tags] == [tags[0]]
            assert [t["text"] for t in c.note_tags(["n-durable-2"])[0].tags] == [tags[-1]]
            assert c.rank(user, ["n-durable-2"])[
                0
            ].cold_start  # in the recommender too, not only the tag store
    finally:
        third.stop(signal.SIGTERM)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_workers_share_the_port_and_follow_the_journal(serving_run, tmp_path):
    """--workers 2: both serve on one port (SO_REUSEPORT); a note journaled while they run (here by a
    third writer, as another worker would) is served by every worker; SIGTERM stops them all."""
    import grpc

    from serving.client import TagLLMClient

    journal = tmp_path / "tagnotes.journal"
    j = Journal(journal, hold=False)
    j.replay()
    j.append(JournalEntry(1, (_note("n-before"),)))
    server = _Proc(serving_run, journal, tmp_path, workers=2)
    try:
        out = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True)
        children = [int(p) for p in out.stdout.split()]
        assert len(children) >= 2, out
        category = "beauty"
        j.append(JournalEntry(2, (JournalNote("n-during", category, (), 0, "stub", "stub-1", 5),)))
        time.sleep(1.0)  # > journal_poll_s
        for _ in range(8):  # new channels land on either worker
            with TagLLMClient(server.target, timeout=30) as c:
                got = c.note_tags(["n-before", "n-during"])
                assert [n.note_id for n in got] == ["n-before", "n-during"]
                with pytest.raises(Exception) as err:
                    c.tag_notes([{"note_id": "x", "category": category}])
                assert "FAILED_PRECONDITION" in str(err.value)  # the tiny run has no student
        j.close()
        server.stop(signal.SIGTERM)
        assert server.proc.returncode == 0, server.log.read_text()[-2000:]
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in children):
            time.sleep(0.2)
        assert not [p for p in children if _alive(p)], "workers outlived the supervisor"
        with pytest.raises(grpc.FutureTimeoutError), grpc.insecure_channel(server.target) as ch:
            grpc.channel_ready_future(ch).result(timeout=2)  # nobody listens on the port any more
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGKILL)


def test_journal_cli_show_and_compact(tmp_path):
    import json

    from click.testing import CliRunner

    from serving.journal_cli import journal

    path = tmp_path / "tagnotes.journal"
    runner = CliRunner()
    missing = runner.invoke(journal, ["show", "--journal", str(path)])
    assert missing.exit_code != 0 and "no such file" in missing.output
    j = Journal(path, hold=False)
    j.append(JournalEntry(1, (_note("n1"),)))
    j.append(JournalEntry(2, (_note("n1", ("b:y",)),)))
    j.close()
    shown = runner.invoke(journal, ["show", "--journal", str(path), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["calls"] == 2 and json.loads(shown.output)["notes"] == 1
    done = runner.invoke(journal, ["compact", "--journal", str(path)])
    assert done.exit_code == 0 and "2 lines -> 1 notes" in done.output
    assert runner.invoke(journal, ["show"]).exit_code == 2  # neither --run nor --journal
    bad = tmp_path / "bad.journal"
    bad.write_bytes(b"garbage line\n")
    damaged = runner.invoke(journal, ["show", "--journal", str(bad)])
    assert damaged.exit_code != 0 and "line 1: checksum mismatch" in str(damaged.exception)
