"""An OpenAI-compatible HTTP API over a :class:`~tagging.teachers.local.LocalChatModel`.

Routes: ``POST /v1/chat/completions`` (non-streaming), ``GET /v1/models``, ``GET /health``. Errors use
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}`` with status 400/404/500. Generation
runs in a worker thread (the model serializes it), so the event loop keeps answering ``/health``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tagging.teachers.local import LocalChatModel

__all__ = ["ChatRequest", "create_app"]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The subset of the chat-completions request we honour (unknown fields are ignored, as OpenAI does)."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    seed: int = 0
    stream: bool = False


def _error(
    status: int, message: str, *, param: str | None = None, kind: str = "invalid_request_error"
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": None}}, status_code=status
    )


def create_app(model: LocalChatModel, *, served_name: str, max_new_tokens: int = 512) -> Starlette:
    """The Starlette app serving ``model`` as ``served_name``.

    Args:
        model: the loaded local model.
        served_name: the model id reported by ``/v1/models`` (requests may name it or omit ``model``).
        max_new_tokens: the default and the upper bound of ``max_tokens`` per request.
    """

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": served_name})

    async def models(_: Request) -> JSONResponse:
        card = {"id": served_name, "object": "model", "created": 0, "owned_by": "tagllm-local"}
        return JSONResponse({"object": "list", "data": [card]})

    async def chat(request: Request) -> JSONResponse:
        try:
            req = ChatRequest.model_validate(await request.json())
        except ValueError as exc:  # JSONDecodeError and ValidationError are both ValueErrors
            if isinstance(exc, ValidationError):
                e = exc.errors()[0]
                loc = ".".join(str(x) for x in e["loc"])
                return _error(400, f"{loc}: {e['msg']}", param=loc)
            return _error(400, "the request body is not valid JSON")
        if req.stream:
            return _error(
                400, "stream=true is not supported by this server; send stream=false", param="stream"
            )
        if req.model not in (None, served_name):
            return _error(404, f"model {req.model!r} is not served here; available: [{served_name!r}]", param="model",
                          kind="not_found_error")  # fmt: skip
        limit = req.max_completion_tokens or req.max_tokens or max_new_tokens
        messages = [m.model_dump() for m in req.messages]
        out = await run_in_threadpool(
            model.chat,
            messages,
            max_new_tokens=min(limit, max_new_tokens),
            temperature=req.temperature,
            seed=req.seed,
        )
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": served_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": out.text},
                        "finish_reason": out.finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": out.prompt_tokens,
                    "completion_tokens": out.completion_tokens,
                    "total_tokens": out.prompt_tokens + out.completion_tokens,
                },
            }
        )

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )
