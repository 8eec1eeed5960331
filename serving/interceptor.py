"""The one interceptor every call goes through: :class:`Gate`.

For every method (unary and streaming) the Gate

1. reads the request id (``x-request-id`` metadata, echoed in the trailing metadata, else generated);
2. checks the bearer token (health stays open; TagNotes, a write, needs the write token — see
   :meth:`Gate.authorize`);
3. answers INVALID_ARGUMENT for request bytes that do not decode (the handler's deserializer is wrapped so
   a bad message becomes a marker instead of an UNKNOWN status and a traceback);
4. checks the deadline, then admission: at most ``max_inflight[name]`` calls of one method in flight on
   this worker, more get RESOURCE_EXHAUSTED at once (health exempt);
5. runs the handler and, for unary calls, refuses a response larger than ``max_response_bytes`` with
   RESOURCE_EXHAUSTED (the response is serialized here, once, and passed through to gRPC as bytes);
6. maps errors — :class:`features.errors.TagLLMError` subclasses become their own status code with their
   message as details; any other exception is logged with the request id and answered INTERNAL naming only
   the request id;
7. writes one JSON access-log line (method, code, ms, request_id, peer) on the ``serving.server.access``
   logger and updates the Prometheus metrics — for every call, refused ones included.

Example::

    server = grpc.aio.server(interceptors=[Gate(token, ServerMetrics(), write_token=w, max_inflight=limits)])
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from features.errors import ConfigError, TagLLMError
from serving.errors import PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError
from serving.metrics import ServerMetrics
from serving.servicers import check_deadline

__all__ = ["HEALTH_PREFIX", "WRITE_METHODS", "Gate", "Undecodable"]

# The logger names predate this module and are what operators filter on (``--no-access-log`` too).
log = logging.getLogger("serving.server")
access_log = logging.getLogger("serving.server.access")

HEALTH_PREFIX = "/grpc.health.v1.Health/"
#: Methods that change the server's state: they need the write token (or ``open_writes``).
WRITE_METHODS = frozenset({"/tagllm.v1.Tagging/TagNotes"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_MAX_DETAILS = 2000
# What to ask for instead when a response is over max_message_bytes.
_SMALLER = {
    "GetNoteTags": "ask for fewer note_ids per call",
    "GetUserInterests": "ask for fewer user_ids or a smaller top_k per call",
    "Recommend": "ask for a smaller k",
    "Rank": "send fewer note_ids per call",
    "TagNotes": "send fewer notes per call",
}


@dataclass(frozen=True)
class Undecodable:
    """What the Gate's request deserializer returns for bytes that are not a valid request message.

    Attributes:
        size: how many bytes the message had.
    """

    size: int


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserialize`` that returns :class:`Undecodable` instead of raising on a corrupt message."""
    if deserialize is None:
        return None

    def read(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError:
            return Undecodable(len(data))

    return read


def _passthrough(serialize: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """``serialize`` that passes already-serialized responses (bytes) through unchanged."""
    if serialize is None:
        return None

    def write(response: Any) -> bytes:
        return response if isinstance(response, bytes) else serialize(response)

    return write


def _type_name(deserialize: Callable[[bytes], Any] | None) -> str:
    """The protobuf full name behind a ``Message.FromString`` deserializer (``tagllm.v1.RankRequest``)."""
    descriptor = getattr(getattr(deserialize, "__self__", None), "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    return name if isinstance(name, str) else "request message"


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _status_name(context: grpc.aio.ServicerContext, fallback: str) -> str:
    code = getattr(context, "code", lambda: None)()
    return code.name if isinstance(code, grpc.StatusCode) else fallback


def _request_id(metadata: Mapping[str, str]) -> str:
    given = metadata.get("x-request-id", "")
    return given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]


def _same(got: bytes, expected: bytes | None) -> bool:
    return expected is not None and hmac.compare_digest(got, expected)


@dataclass(frozen=True)
class _Method:
    """What the Gate knows about one method: its path, short name, request type and the checks it gets."""

    path: str
    name: str
    request_type: str
    open: bool  # health: no auth, no admission control

    @classmethod
    def of(cls, path: str, deserialize: Callable[[bytes], Any] | None) -> _Method:
        return cls(path, path.rsplit("/", 1)[-1], _type_name(deserialize), path.startswith(HEALTH_PREFIX))


class _Call:
    """One call's bookkeeping: request id, start time, admission slot and the status code it ends with."""

    def __init__(self, gate: Gate, method: _Method, context: grpc.aio.ServicerContext) -> None:
        self.gate = gate
        self.method = method
        self.context = context
        self.t0 = time.perf_counter()
        self.metadata = _metadata(context)
        self.rid = _request_id(self.metadata)
        self.code = "OK"
        self.admitted = False
        self.ended = False
        context.set_trailing_metadata((("x-request-id", self.rid),))

    def begin(self, request: Any) -> None:
        """Auth, the request's bytes, the deadline, then admission (raises the TagLLMError to answer)."""
        self.gate.authorize(self.method.path, self.metadata)
        self.decoded(request)
        check_deadline(self.context, "before the call started")
        self.admitted = not self.method.open and self.gate.admit(self.method.name)

    def decoded(self, request: Any) -> None:
        """ConfigError (INVALID_ARGUMENT) for a request message that did not decode."""
        if isinstance(request, Undecodable):
            message = (
                f"{self.method.name}: the request is not a valid {self.method.request_type} "
                f"({request.size} bytes could not be decoded)"
            )
            log.warning("request %s %s: %s", self.rid, self.method.path, message)
            raise ConfigError(message)

    async def fail(self, exc: BaseException) -> None:
        """Set the code for ``exc``; abort with the mapped status for errors (else the caller re-raises).

        The call is recorded before the status goes out, so a caller that saw the status sees it counted.
        """
        if isinstance(exc, TagLLMError):
            code = exc.grpc_status if exc.grpc_status in grpc.StatusCode.__members__ else "INTERNAL"
            self.code = code
            self.end()
            await self.context.abort(grpc.StatusCode[code], str(exc)[:_MAX_DETAILS])
        elif isinstance(exc, grpc.aio.AbortError):
            self.code = _status_name(self.context, "UNKNOWN")
        elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
            left = self.context.time_remaining()
            self.code = "DEADLINE_EXCEEDED" if left is not None and left <= 0 else "CANCELLED"
        elif isinstance(exc, Exception):
            self.code = "INTERNAL"
            log.error("request %s %s failed", self.rid, self.method.path, exc_info=exc)
            self.end()
            await self.context.abort(
                grpc.StatusCode.INTERNAL, f"internal error; request_id={self.rid} (see the server log)"
            )
        else:
            self.code = "UNKNOWN"

    def end(self) -> None:
        """Release the admission slot and record the call (once; later calls do nothing)."""
        if self.ended:
            return
        self.ended = True
        if self.admitted:
            self.gate.release(self.method.name)
        self.gate.record(
            self.method.path, self.code, time.perf_counter() - self.t0, self.rid, self.context.peer()
        )


class Gate(grpc.aio.ServerInterceptor):
    """Request id, auth, malformed bytes, deadline, admission, response size, error mapping, access log and
    metrics for every call.

    Args:
        token: the read token (None: reads are open).
        metrics: where every call is counted.
        write_token: the token :data:`WRITE_METHODS` need; it grants reads too.
        open_writes: without a write token, let writes through for callers that pass the read check
            (ignored when a write token is set); False and no write token: writes are PERMISSION_DENIED.
        max_inflight: per method short name, calls in flight before new ones get RESOURCE_EXHAUSTED
            (methods not named: no limit; health: never limited).
        max_response_bytes: largest unary response (``max_message_bytes``); None: no check.
    """

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
        self._expected_write = f"Bearer {write_token}".encode() if write_token else None
        self.metrics = metrics
        self.write_token = write_token
        self.open_writes = open_writes
        self.max_inflight = dict(max_inflight or {})
        self.max_response_bytes = max_response_bytes
        self.inflight: dict[str, int] = {}  # by short name; only touched on the event loop
        self._gated: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    # ---- the checks -------------------------------------------------------------------------------

    def authorize(self, method: str, metadata: Mapping[str, str]) -> None:
        """Raise UnauthenticatedError / PermissionDeniedError unless ``metadata`` may call ``method``.

        Health is open. Reads need the read or the write token when a read token is set (else they are
        open). Writes need the write token when one is set (a missing one is UNAUTHENTICATED, the read
        token or a wrong one PERMISSION_DENIED); without one they pass the read check and need
        ``open_writes``.
        """
        if method.startswith(HEALTH_PREFIX):
            return
        given = metadata.get("authorization")
        got = given.encode() if given is not None else None
        if method not in WRITE_METHODS:
            self._check_read(got)
            return
        name = method.rsplit("/", 1)[-1]
        if self._expected_write is None:
            self._check_read(got)
            if not self.open_writes:
                raise PermissionDeniedError(
                    f"{name}: writes are disabled on this server; start it with --write-token-file FILE "
                    "(callers send 'authorization: Bearer <write token>') or --open-writes on a trusted network"
                )
            return
        if got is None:
            raise UnauthenticatedError(
                f"authorization: missing; {name} is a write: expected metadata "
                "'authorization: Bearer <write token>'"
            )
        if not _same(got, self._expected_write):
            which = "the read token" if _same(got, self._expected) else "a wrong token"
            raise PermissionDeniedError(
                f"{name}: {which} does not allow writes; expected 'authorization: Bearer <write token>' "
                "with the server's write token (--write-token-file)"
            )

    def _check_read(self, got: bytes | None) -> None:
        if self._expected is None:
            return
        if got is None:
            raise UnauthenticatedError(
                "authorization: missing; expected metadata 'authorization: Bearer <token>'"
            )
        if not (_same(got, self._expected) or _same(got, self._expected_write)):
            raise UnauthenticatedError(
                "authorization: wrong token; expected 'Bearer <token>' with the server's token"
            )

    def admit(self, name: str) -> bool:
        """Take an in-flight slot of method ``name`` (True), or ResourceExhaustedError when none is free.

        Methods without a ``max_inflight`` entry take no slot (False). Every True must be paired with
        :meth:`release`.
        """
        limit = self.max_inflight.get(name)
        if limit is None:
            return False
        now = self.inflight.get(name, 0)
        if now >= limit:
            raise ResourceExhaustedError(
                f"{name}: {now} calls already in flight on this worker "
                f"(max_inflight.{name} = {limit}); retry with backoff"
            )
        self.inflight[name] = now + 1
        return True

    def release(self, name: str) -> None:
        self.inflight[name] -= 1

    def fit(self, name: str, response: Any) -> Any:
        """``response`` serialized, or ResourceExhaustedError when it is over ``max_response_bytes``."""
        if self.max_response_bytes is None or not isinstance(response, Message):
            return response
        data = response.SerializeToString()
        if len(data) > self.max_response_bytes:
            hint = _SMALLER.get(name, "ask for less per call")
            raise ResourceExhaustedError(
                f"{name}: the response is {len(data)} bytes, over max_message_bytes = "
                f"{self.max_response_bytes}; {hint}"
            )
        return data

    # ---- wrapping the handlers ---------------------------------------------------------------------

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        path = str(details.method)
        cached = self._gated.get(path)
        if cached is not None and cached[0] is handler:  # the services hand out one handler per method
            return cached[1]
        gated = self._gate(handler, _Method.of(path, handler.request_deserializer))
        self._gated[path] = (handler, gated)
        return gated

    def _gate(self, handler: grpc.RpcMethodHandler, method: _Method) -> grpc.RpcMethodHandler:
        kwargs = {
            "request_deserializer": _lenient(handler.request_deserializer),
            "response_serializer": _passthrough(handler.response_serializer),
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method), **kwargs)
        streaming = handler.unary_stream or handler.stream_unary or handler.stream_stream
        if streaming is None or not (
            inspect.iscoroutinefunction(streaming) or inspect.isasyncgenfunction(streaming)
        ):
            return handler  # a synchronous handler: not in this server
        behavior = self._streaming(streaming, method, handler.request_streaming)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(behavior, **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(behavior, **kwargs)
        return grpc.stream_stream_rpc_method_handler(behavior, **kwargs)

    def _unary(self, behavior: Callable[..., Any], method: _Method) -> Callable[..., Any]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(self, method, context)
            try:
                call.begin(request)
                return self.fit(method.name, await behavior(request, context))
            except BaseException as exc:
                await call.fail(exc)
                raise
            finally:
                call.end()

        return unary

    def _streaming(
        self, behavior: Callable[..., Any], method: _Method, request_streaming: bool
    ) -> Callable[..., Any]:
        """The streaming ``behavior`` (an async generator or a reader/writer coroutine), gated.

        With a request stream, the handler gets an iterator that raises INVALID_ARGUMENT at the first
        message that does not decode.
        """

        def prepare(request: Any, call: _Call) -> Any:
            if request_streaming:
                call.begin(None)
                return self._decoded(request, call)
            call.begin(request)
            return request

        if inspect.isasyncgenfunction(behavior):

            async def generate(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                call = _Call(self, method, context)
                try:
                    async for response in behavior(prepare(request, call), context):
                        yield response
                except BaseException as exc:
                    await call.fail(exc)
                    raise
                finally:
                    call.end()

            return generate

        async def respond(request: Any, context: grpc.aio.ServicerContext) -> Any:
            call = _Call(self, method, context)
            try:
                return await behavior(prepare(request, call), context)
            except BaseException as exc:
                await call.fail(exc)
                raise
            finally:
                call.end()

        return respond

    @staticmethod
    async def _decoded(requests: AsyncIterable[Any], call: _Call) -> AsyncIterator[Any]:
        async for request in requests:
            call.decoded(request)
            yield request

    # ---- the record -------------------------------------------------------------------------------

    def record(self, method: str, code: str, seconds: float, rid: str, peer: str) -> None:
        """Count the call in the metrics and write its access-log line."""
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
