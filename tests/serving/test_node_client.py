"""A client in another language: Node.js (@grpc/grpc-js + @grpc/proto-loader) calls every RPC.

The Node packages are pinned in tests/serving/node/package-lock.json and installed with ``npm ci`` on
first use (node_modules is git-ignored). Skips, saying why, when node/npm are missing or the npm
registry cannot be reached.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / "node"
PROTOS = Path(__file__).resolve().parents[2] / "protos"


def _node_ready() -> str | None:
    """None when the client can run, else the reason to skip."""
    if not shutil.which("node") or not shutil.which("npm"):
        return "node and npm are not on PATH (install Node.js >= 18 to run the cross-language client test)"
    if (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        return None
    proc = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        return f"`npm ci` in {NODE_DIR} failed (registry unreachable?): {proc.stderr.strip()[-300:]}"
    return None


def test_node_client_calls_every_rpc(server, serving_run):
    reason = _node_ready()
    if reason:
        pytest.skip(reason)
    from ranking.recommend import Recommender

    rec = Recommender.from_run(serving_run, use_ranker=False)
    user = rec.user_ids()[0]
    note = str(rec.catalog.note_ids[0])
    category = rec.catalog.categories[0]
    proc = subprocess.run(
        [
            "node",
            str(NODE_DIR / "client.js"),
            "--target",
            server.target,
            "--protos",
            str(PROTOS),
            "--user",
            user,
            "--note",
            note,
            "--category",
            category,
            "--title",
            "style:retro running|colour:cream white",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["health"] == {"ok": True, "reply": {"status": "SERVING"}}
    for call in ("getNoteTags", "getUserInterests", "recommend", "rank", "tagNotes", "freshNoteTags"):
        assert out[call]["ok"], (call, out[call])
    assert out["getNoteTags"]["reply"]["notes"][0]["note_id"] == note
    assert out["getUserInterests"]["reply"]["users"][0]["user_id"] == user
    assert len(out["recommend"]["reply"]["notes"]) == 5
    assert out["rank"]["reply"]["notes"][0]["note_id"] == note
    fresh = out["freshNoteId"]
    assert out["tagNotes"]["reply"]["notes"][0]["note_id"] == fresh
    tags = {t["text"] for t in out["freshNoteTags"]["reply"]["notes"][0]["tags"]}
    assert tags == {"style:retro running", "colour:cream white"}
    # Errors cross the language boundary as status codes, never UNKNOWN.
    assert out["unknownUser"]["ok"] is False and out["unknownUser"]["codeName"] == "NOT_FOUND"
    assert out["badK"]["ok"] is False and out["badK"]["codeName"] == "INVALID_ARGUMENT"
    assert "k" in out["badK"]["details"]
