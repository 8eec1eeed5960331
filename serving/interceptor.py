"""The one interceptor every call goes through: :class:`Gate`.

A request id (``x-request-id`` metadata, echoed in the trailing metadata, else generated), bearer-token
auth when a token is configured (health stays open), a deadline check, the handler, then the error
mapping — :class:`features.errors.TagLLMError` subclasses become their own status code with their message
as details; any other exception is logged with the request id and answered INTERNAL naming only the
request id — then one JSON access-log line (method, code, ms, request_id, peer) on the
``serving.server.access`` logger and the Prometheus metrics.

Example::

    server = grpc.aio.server(interceptors=[Gate(token, ServerMetrics())])
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc

from features.errors import TagLLMError
from serving.errors import UnauthenticatedError
from serving.metrics import ServerMetrics
from serving.servicers import check_deadline

__all__ = ["HEALTH_PREFIX", "Gate"]

# The logger names predate this module and are what operators filter on (``--no-access-log`` too).
log = logging.getLogger("serving.server")
access_log = logging.getLogger("serving.server.access")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_MAX_DETAILS = 2000


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _status_name(context: grpc.aio.ServicerContext, fallback: str) -> str:
    code = getattr(context, "code", lambda: None)()
    return code.name if isinstance(code, grpc.StatusCode) else fallback


class Gate(grpc.aio.ServerInterceptor):
    """Request id, auth, deadline, error mapping, access log and metrics for every call."""

    def __init__(
        self,
        token: str | None,
        metrics: ServerMetrics,
        *,
        write_token: str | None = None,
        open_writes: bool = False,
        max_inflight: Mapping[str, int] | None = None,
        max_response_bytes: int | None = None,
    ) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self.metrics = metrics
        self.write_token = write_token
        self.open_writes = open_writes
        self.max_inflight = dict(max_inflight or {})
        self.max_response_bytes = max_response_bytes

    def _authorize(self, metadata: Mapping[str, str]) -> None:
        if self._expected is None:
            return
        got = metadata.get("authorization")
        if got is None:
            raise UnauthenticatedError(
                "authorization: missing; expected metadata 'authorization: Bearer <token>'"
            )
        if not hmac.compare_digest(got.encode(), self._expected):
            raise UnauthenticatedError(
                "authorization: wrong token; expected 'Bearer <token>' with the server's token"
            )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = str(details.method)
        open_call = method.startswith(HEALTH_PREFIX)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap(handler.unary_unary, method, open_call),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if not open_call and self._expected is not None:  # streaming (reflection): auth only
            metadata = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
            try:
                self._authorize(metadata)
            except UnauthenticatedError as exc:
                return self._deny(handler, method, str(exc))
        return handler

    def _deny(self, handler: grpc.RpcMethodHandler, method: str, message: str) -> grpc.RpcMethodHandler:
        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            self._record(method, "UNAUTHENTICATED", 0.0, _request_id(_metadata(context)), context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        make = (
            grpc.stream_stream_rpc_method_handler
            if handler.request_streaming and handler.response_streaming
            else grpc.stream_unary_rpc_method_handler
            if handler.request_streaming
            else grpc.unary_stream_rpc_method_handler
        )
        return make(
            deny,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap(self, behavior: Callable[..., Any], method: str, open_call: bool) -> Callable[..., Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0 = time.perf_counter()
            metadata = _metadata(context)
            rid = _request_id(metadata)
            context.set_trailing_metadata((("x-request-id", rid),))
            code = "OK"
            try:
                if not open_call:
                    self._authorize(metadata)
                check_deadline(context, "before the call started")
                return await behavior(request, context)
            except TagLLMError as exc:
                code = exc.grpc_status if exc.grpc_status in grpc.StatusCode.__members__ else "INTERNAL"
                await context.abort(grpc.StatusCode[code], str(exc)[:_MAX_DETAILS])
            except grpc.aio.AbortError:
                code = _status_name(context, "UNKNOWN")
                raise
            except asyncio.CancelledError:
                left = context.time_remaining()
                code = "DEADLINE_EXCEEDED" if left is not None and left <= 0 else "CANCELLED"
                raise
            except Exception:
                code = "INTERNAL"
                log.exception("request %s %s failed", rid, method)
                await context.abort(
                    grpc.StatusCode.INTERNAL, f"internal error; request_id={rid} (see the server log)"
                )
            finally:
                self._record(method, code, time.perf_counter() - t0, rid, context.peer())

        return call

    def _record(self, method: str, code: str, seconds: float, rid: str, peer: str) -> None:
        self.metrics.observe(method, code, seconds)
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                json.dumps(
                    {
                        "method": method,
                        "code": code,
                        "ms": round(seconds * 1000, 3),
                        "request_id": rid,
                        "peer": peer,
                    }
                )
            )


def _request_id(metadata: Mapping[str, str]) -> str:
    given = metadata.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
