"""A real OpenAI-compatible HTTP server on loopback that answers tags derived from the note and
injects faults (5xx, 429 with Retry-After, slow responses past the client timeout, invalid JSON).

Used by the LLM-teacher robustness tests; runs uvicorn in a daemon thread on a port the OS picks.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections import Counter
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FAULTS = ("500", "503", "429", "slow", "invalid_json")


def answer_for(messages: list[dict[str, Any]]) -> str:
    """A valid TeacherOutput JSON derived from the note in the last user message with a note."""
    text = ""
    for m in messages:
        if m["role"] == "user":
            c = m["content"]
            text = (
                c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if p.get("type") == "text")
            )
            if "Title:" in text:
                break
    title = re.search(r"^Title: (.*)$", text, re.MULTILINE)
    words = [w for w in re.findall(r"[a-z]+", (title.group(1) if title else "").lower()) if len(w) > 3][:3]
    tags = [
        {"text": w, "dimension": "topic", "evidence": [{"source": "title", "span": w}], "confidence": 0.9}
        for w in words
    ]
    return json.dumps({"understanding": "a note", "dimensions": ["topic"], "tags": tags, "merged": []})


class FakeOpenAI:
    """The server; ``counts`` tallies requests by outcome, ``auth_headers`` the Authorization values seen."""

    def __init__(self, *, fault_rate: float = 0.3, seed: int = 0, slow_s: float = 1.0) -> None:
        self.fault_rate = fault_rate
        self.slow_s = slow_s
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.auth_headers: set[str] = set()
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        cfg = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30, backlog=2048)
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    def start(self) -> FakeOpenAI:
        self._thread.start()
        deadline = time.time() + 10
        while not self._server.started and time.time() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def _pick(self) -> str:
        with self._lock:
            if self._rng.random() < self.fault_rate:
                return self._rng.choice(FAULTS)
            return "ok"

    async def _chat(self, request: Request) -> Response:
        import asyncio

        body = await request.json()
        self.auth_headers.add(request.headers.get("authorization", ""))
        outcome = self._pick()
        with self._lock:
            self.counts[outcome] += 1
        if outcome in ("500", "503"):
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=int(outcome))
        if outcome == "429":
            return JSONResponse(
                {"error": {"message": "rate limited"}}, status_code=429, headers={"Retry-After": "0.02"}
            )
        if outcome == "slow":
            await asyncio.sleep(self.slow_s)
        content = answer_for(body["messages"])
        if outcome == "invalid_json":
            content = "Sure! Here are the tags: {" + content[:40]
        elif self._rng.random() < 0.2:
            content = f"```json\n{content}\n```"  # fenced answers are valid too
        return JSONResponse(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }
        )
