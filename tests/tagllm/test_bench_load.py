"""The load benchmark's client processes against a fake TagLLM server, and its pure parts (ratios, goals,
flags, log scan); the serving benchmark's section errors and targets. A few seconds, no trained run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from serving.api.v1 import (
    common_pb2,
    recommendation_pb2,
    recommendation_pb2_grpc,
    tag_features_pb2,
    tag_features_pb2_grpc,
    tagging_pb2,
    tagging_pb2_grpc,
)
from tagllm.bench import load, serving
from tagllm.bench.procs import tree_cpu_s

TOKEN = "test-write-token"


class _Fake(
    tag_features_pb2_grpc.TagFeaturesServicer,
    recommendation_pb2_grpc.RecommendationServicer,
    tagging_pb2_grpc.TaggingServicer,
):
    """GetNoteTags/GetUserInterests/Rank answer; Recommend is always RESOURCE_EXHAUSTED; TagNotes needs
    the write token and records the note ids and the peers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fresh_ids: list[str] = []
        self.peers: set[str] = set()

    def GetNoteTags(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.peers.add(context.peer())
        notes = [common_pb2.NoteTags(note_id=i) for i in request.note_ids]
        return tag_features_pb2.GetNoteTagsResponse(notes=notes)

    def GetUserInterests(self, request: Any, context: Any) -> Any:
        return tag_features_pb2.GetUserInterestsResponse()

    def Recommend(self, request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")

    def Rank(self, request: Any, context: Any) -> Any:
        return recommendation_pb2.RankResponse()

    def TagNotes(self, request: Any, context: Any) -> Any:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "no write token")
        with self.lock:
            self.fresh_ids += [n.note_id for n in request.notes]
        return tagging_pb2.TagNotesResponse()


@pytest.fixture
def fake_server() -> Iterator[tuple[str, _Fake]]:
    fake = _Fake()
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    tag_features_pb2_grpc.add_TagFeaturesServicer_to_server(fake, server)
    recommendation_pb2_grpc.add_RecommendationServicer_to_server(fake, server)
    tagging_pb2_grpc.add_TaggingServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", fake
    finally:
        server.stop(0)


def test_run_clients_counts_codes_sends_the_write_token_and_uses_one_connection_per_client(
    fake_server: tuple[str, _Fake],
) -> None:
    target, fake = fake_server
    work = load.Workload(
        note_ids=tuple(f"n{i}" for i in range(300)),
        user_ids=tuple(f"u{i}" for i in range(20)),
        notes=(("food", "a title", "a body"),),
        clients=4,
        warmup_s=0.5,
        seconds=1.5,
        write_token=TOKEN,
    )
    out = load.run_clients(target, work, procs=2, label="t", server_pid=os.getpid())
    m = out["methods"]
    assert set(m) == set(load.MIX)
    assert m["GetNoteTags"]["codes"] == {"OK": m["GetNoteTags"]["calls"]} and m["GetNoteTags"]["p99_ms"] > 0
    assert m["Recommend"]["calls"] > 0 and m["Recommend"]["codes"] == {
        "RESOURCE_EXHAUSTED": m["Recommend"]["calls"]
    }
    assert "p99_ms" not in m["Recommend"] and m["Recommend"]["ok_per_s"] == 0
    assert set(m["TagNotes"]["codes"]) <= {"OK"}
    assert len(fake.fresh_ids) == len(set(fake.fresh_ids)) > 0  # warm-up calls included: ids stay unique
    total = out["total"]
    assert total["calls"] == sum(v["calls"] for v in m.values())
    assert total["error_share"] == pytest.approx(m["Recommend"]["calls"] / total["calls"], abs=1e-4)
    assert out["client"]["procs"] == 2 and out["client"]["cpu_s"] > 0
    assert "server_cpu" in out
    assert len(fake.peers) == 4  # every client has its own TCP connection


def _figures(qps: float, nt: float, rec: float, startup: float, rec_ok: float = 10.0) -> dict[str, Any]:
    methods: dict[str, Any] = {m: {"ok_per_s": 1.0} for m in load.MIX}
    methods["GetNoteTags"] = {"ok_per_s": 50.0, "p99_ms": nt}
    methods["Recommend"] = {"ok_per_s": rec_ok, "p99_ms": rec}
    return {"methods": methods, "total": {"calls_per_s": qps}, "startup_s": startup}


def test_ratios_and_goals() -> None:
    configs = {
        "before": _figures(100, 400, 800, 12),
        "after_1": _figures(150, 10, 90, 14),
        "after_2": _figures(200, 30, 120, 16, rec_ok=25.0),
    }
    ratios, goals = load.ratios_and_goals(configs)
    assert ratios["get_note_tags_p99_after_1_over_before"] == 0.025
    assert ratios["calls_per_s_after_1_over_before"] == 1.5
    assert ratios["calls_per_s_after_2_over_after_1"] == 1.333
    assert ratios["ok_per_s_after_2_over_after_1_per_method"]["Recommend"] == 2.5
    assert goals["get_note_tags_p99_le_20ms"] == {
        "after_1": {"p99_ms": 10, "met": True},
        "after_2": {"p99_ms": 30, "met": False},
    }
    assert goals["recommend_p99_le_100ms"]["after_1"]["met"] is True
    assert goals["calls_per_s_2_workers_ge_1_6x_1_worker"] == {"ratio": 1.333, "met": False}
    assert goals["startup_to_serving_le_15s"]["after_2"] == {"startup_s": 16, "met": False}
    ratios, goals = load.ratios_and_goals({"before": configs["before"]})
    assert ratios["calls_per_s_after_1_over_before"] is None
    assert "calls_per_s_2_workers_ge_1_6x_1_worker" not in goals


def test_median_figures_skip_failed_runs_and_missing_latencies() -> None:
    def run(qps: float, p99: float | None) -> dict[str, Any]:
        methods = {m: {"ok_per_s": qps / 5} for m in load.MIX}
        if p99 is not None:
            methods["Recommend"]["p99_ms"] = p99
        return {
            "startup_s": qps / 10,
            "methods": methods,
            "total": {"calls_per_s": qps, "error_share": 0.1},
            "client": {"cores_busy": 0.2},
            "server_cpu": {"cores_busy": 1.0},
        }

    med = load.median_figures([run(100, 50), {"error": "server did not start"}, run(300, None), run(200, 70)])
    assert med["runs"] == 3 and med["total"]["calls_per_s"] == 200 and med["startup_s"] == 20
    assert med["methods"]["Recommend"]["p99_ms"] == 60  # median of the two runs that had OK calls
    assert med["methods"]["Rank"]["p99_ms"] is None
    assert load.median_figures([{"error": "x"}]) == {}


def test_config_flags_follow_what_the_server_knows() -> None:
    assert load.config_flags("after_2", {"--run"}) == (None, "server has no --workers")
    flags, note = load.config_flags("before", {"--run"})
    assert flags == [] and "ran as is" in note
    flags, note = load.config_flags("before", {"--no-offload", "--max-inflight", "--workers"})
    assert flags[0] == "--no-offload" and flags.count("--max-inflight") == len(load.MIX) and note == ""
    assert load.config_flags("after_2", {"--workers"}) == (["--workers", "2"], "")


def test_server_log_problems(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "12:00:00 INFO    serving.server: serving\n"
        "12:00:01 ERROR   serving.server: call failed\n"
        "Traceback (most recent call last):\n  File x\nValueError: boom\n"
    )
    out = load.server_log_problems(log)
    assert out["tracebacks"] == 1 and out["error_lines"] == 1
    assert "ValueError: boom" in out["first_traceback"]


def test_tree_cpu_counts_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert (tree_cpu_s(os.getpid()) or 0) > 0
    finally:
        child.kill()
        child.wait()
    assert tree_cpu_s(2**22 + 12345) is None


def test_load_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load.main(["--run", str(tmp_path), "--configs", "before,fast"])
    assert exc.value.code == 2 and "'fast'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        load.main(["--run", str(tmp_path)])
    assert exc.value.code == 2 and "manifest.json" in capsys.readouterr().err


def test_serving_section_turns_failures_into_one_line_errors() -> None:
    def boom() -> dict[str, Any]:
        raise RuntimeError("server on 127.0.0.1:1 did not start\n(exit 1)")

    assert serving._section("note_tags", boom) == {
        "error": "RuntimeError: server on 127.0.0.1:1 did not start (exit 1)"
    }


def test_serving_targets_use_the_per_round_ratios() -> None:
    def spread(lo: float, med: float) -> dict[str, Any]:
        return {"median": med, "min": lo, "max": med + 1, "per_round": [lo, med, med + 1]}

    r = {
        "note_tags": {
            "per_round": [{}],
            "p99_feast_listen_over_ours": spread(3.0, 5.5),
            "p99_feast_serve_over_ours": spread(6.0, 8.0),
        },
        "recommend": {"skipped": "no --big-run given"},
    }
    t = serving._targets(r)
    assert t["get_note_tags_p99_5x_lower_than_feast_listen"] == {
        "median_ratio": 5.5,
        "met_on_median": True,
        "met_in_every_round": False,
    }
    assert t["get_note_tags_p99_5x_lower_than_feast_serve"]["met_in_every_round"] is True
    assert "recommend_p99_le_30ms" not in t
