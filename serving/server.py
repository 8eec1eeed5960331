"""The TagLLM gRPC server (grpc.aio): TagFeatures, Recommendation, Tagging, health and reflection.

Start it from the CLI (blocking; SIGTERM/SIGINT stop it gracefully)::

    tagllm serve --run runs/demo --port 0 --port-file /tmp/port      # prints/logs the bound port
    tagllm serve --config serve.yaml --token-file token --metrics-port 9464

or from Python (tests, benchmarks, the demo)::

    running = await start_server("runs/demo", port=0)                # -> RunningServer
    channel = grpc.aio.insecure_channel(running.target)              # "127.0.0.1:<port>"
    ...
    await running.stop(grace=2.0)

    serve(ServerConfig(run_dir=Path("runs/demo")))                   # blocking, installs signal handlers

What every call goes through (one interceptor, :class:`_Gate`): a request id (``x-request-id`` metadata,
echoed in the trailing metadata, else generated), bearer-token auth when a token is configured (health
stays open), a deadline check, the handler, then the error mapping — :class:`features.errors.TagLLMError`
subclasses become their own status code with their message as details; any other exception is logged
with the request id and answered INTERNAL naming only the request id — then one JSON access-log line
(method, code, ms, request_id, peer) on the ``serving.server.access`` logger and the Prometheus metrics.
Oversized messages are refused by gRPC itself with RESOURCE_EXHAUSTED (``max_message_bytes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import grpc

from features.errors import ConfigError, NotFoundError, TagLLMError
from features.io import RunDir
from serving.core import Limits, ServingCore, UnauthenticatedError
from serving.metrics import ServerMetrics
from serving.servicers import (
    PushQueue,
    RecommendationServicer,
    TagFeaturesServicer,
    TaggingServicer,
    check_deadline,
)

__all__ = ["SERVICE_NAMES", "RunningServer", "ServerConfig", "load_config", "serve", "start_server"]

log = logging.getLogger(__name__)
access_log = logging.getLogger("serving.server.access")

SERVICE_NAMES = ("tagllm.v1.TagFeatures", "tagllm.v1.Recommendation", "tagllm.v1.Tagging")
HEALTH_PREFIX = "/grpc.health.v1.Health/"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_MAX_DETAILS = 2000


@dataclass(frozen=True)
class ServerConfig:
    """Server options (YAML keys and ``tagllm serve`` flags use the same names, ``-`` for ``_``).

    Args:
        run_dir: the run (retrieval model, ranker, optional Feast store and student).
        host: bind address (default loopback only).
        port: TCP port; 0 picks a free one (see :attr:`RunningServer.port`).
        port_file: write the bound port here (atomically) once serving.
        tls_cert, tls_key: PEM files; both or neither.
        token_file: a file holding the bearer token; else ``token``; else env ``TAGLLM_TOKEN``; else no auth.
        token: the bearer token itself (not read from YAML files: keep secrets out of configs).
        metrics_port: serve Prometheus /metrics on this port (None = off; 0 = a free port).
        metrics_host: bind address of the metrics endpoint.
        grace_s: seconds in-flight calls get to finish on shutdown.
        max_message_bytes: largest request/response; larger requests get RESOURCE_EXHAUSTED.
        tags_from: ``auto`` (Feast online store when the run has one, else the catalog), ``feast``, ``catalog``.
        online, redis: the Feast online store kind (``sqlite``/``redis``) and redis ``HOST:PORT``.
        student_model: the TagNotes student model folder (default RUN/student/model).
        index_kind: ANN index (``exact``, ``ivf``, ``hnsw``).
        use_ranker: rank with the LightGBM ranker when the run has one.
        cold_candidates: extra Recommend candidates from cold-start notes (the cold-start channel; 0 = off).
        cold_slot_every: every N-th Recommend slot goes to the best-ranked cold-start candidate (0 = off).
        limits: per-call limits (YAML: the :class:`~serving.core.Limits` field names at top level).
    """

    run_dir: Path
    host: str = "127.0.0.1"
    port: int = 50051
    port_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None
    token: str | None = field(default=None, repr=False)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    grace_s: float = 5.0
    max_message_bytes: int = 4 * 1024 * 1024
    tags_from: str = "auto"
    online: str = "sqlite"
    redis: str | None = None
    student_model: Path | None = None
    index_kind: str = "exact"
    use_ranker: bool = True
    cold_candidates: int = 0
    cold_slot_every: int = 0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.tags_from not in ("auto", "feast", "catalog"):
            raise ConfigError(f"tags_from: got {self.tags_from!r}; expected auto, feast or catalog")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port: got {self.port}; expected 0..65535 (0 = pick a free port)")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port: got {self.metrics_port}; expected 0..65535")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert, tls_key: got only one; expected both PEM files (or neither)")
        if self.grace_s < 0:
            raise ConfigError(f"grace_s: got {self.grace_s}; expected seconds >= 0")
        if self.max_message_bytes < 1024:
            raise ConfigError(f"max_message_bytes: got {self.max_message_bytes}; expected >= 1024")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> ServerConfig:
        """Build from flat keys (config file + flags); limit keys go into :class:`Limits`.

        Raises:
            ConfigError: an unknown key (listing the valid ones) or a bad value.
        """
        own = {f.name for f in fields(cls)} - {"limits"}
        lim = {f.name for f in fields(Limits)}
        unknown = sorted(set(values) - own - lim)
        if unknown:
            raise ConfigError(f"config: unknown key(s) {unknown}; expected some of {sorted(own | lim)}")
        kwargs = {k: v for k, v in values.items() if k in own and v is not None}
        if "run_dir" not in kwargs:
            raise ConfigError("run_dir: required; expected the run directory (--run RUN_DIR)")
        for key in ("run_dir", "port_file", "tls_cert", "tls_key", "token_file", "student_model"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        kwargs["limits"] = Limits(**{k: v for k, v in values.items() if k in lim and v is not None})
        return cls(**kwargs)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML config file as a flat mapping (``-`` in keys read as ``_``).

    Raises:
        NotFoundError: no such file; ConfigError: not a YAML mapping, or it holds a token.
    """
    import yaml

    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"--config {p}: no such file")
    data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config {p}: expected a YAML mapping of option: value, got {type(data).__name__}"
        )
    out = {str(k).replace("-", "_"): v for k, v in data.items()}
    if "token" in out:
        raise ConfigError(
            f"--config {p}: 'token' is not read from config files; use token_file or TAGLLM_TOKEN"
        )
    return out


def resolve_token(config: ServerConfig) -> str | None:
    """The bearer token: token_file, else ``token``, else env TAGLLM_TOKEN, else None (no auth)."""
    if config.token_file is not None:
        if not config.token_file.exists():
            raise NotFoundError(f"token_file: {config.token_file} does not exist")
        token = config.token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ConfigError(f"token_file: {config.token_file} is empty; expected one line with the token")
        return token
    return config.token or os.environ.get("TAGLLM_TOKEN") or None


# ---- the interceptor ------------------------------------------------------------------------------


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _status_name(context: grpc.aio.ServicerContext, fallback: str) -> str:
    code = getattr(context, "code", lambda: None)()
    return code.name if isinstance(code, grpc.StatusCode) else fallback


class _Gate(grpc.aio.ServerInterceptor):
    """Request id, auth, deadline, error mapping, access log and metrics for every call."""

    def __init__(self, token: str | None, metrics: ServerMetrics) -> None:
        self._expected = f"Bearer {token}".encode() if token else None
        self.metrics = metrics

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


# ---- assembling the parts -------------------------------------------------------------------------


def _feature_sink(config: ServerConfig) -> Any:
    """The Feast client per ``tags_from`` (None: use the catalog)."""
    if config.tags_from == "catalog":
        return None
    registry = RunDir(config.run_dir).feast_registry_for(config.online)
    if config.tags_from == "auto" and not registry.exists():
        log.info("no Feast store at %s: note tags come from the recommender's catalog", registry.parent)
        return None
    from features.client import FeatureClient

    return FeatureClient(config.run_dir, online=config.online, redis=config.redis)  # type: ignore[arg-type]


def _student(config: ServerConfig) -> tuple[Any, str]:
    """(the run's student tagger, "") or (None, why there is none)."""
    path = config.student_model or RunDir(config.run_dir).student_model
    if not (path / "model.safetensors").exists():
        problem = (
            f"no student model at {path} (missing model.safetensors); train one with "
            f"`tagllm tag distill --run {config.run_dir}` or start the server with --student-model"
        )
        log.warning("TagNotes disabled: %s", problem)
        return None, problem
    from tagging.handbook_model import load_handbook
    from tagging.student import load_student

    hb_path = RunDir(config.run_dir).handbook
    handbook = load_handbook(hb_path) if hb_path.exists() else None
    tagger = load_student(path, handbook=handbook, device="cpu")
    log.info("TagNotes tagger: student %s from %s", tagger.version, path)
    return tagger, ""


def _bind(server: grpc.aio.Server, config: ServerConfig) -> int:
    host = f"[{config.host}]" if ":" in config.host else config.host
    address = f"{host}:{config.port}"
    try:
        if config.tls_cert is not None and config.tls_key is not None:
            creds = grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"host/port: cannot bind {address} ({exc}); expected a free port or 0") from exc
    if port == 0:
        raise ConfigError(f"host/port: cannot bind {address}; expected a free port or 0")
    return port


@dataclass
class RunningServer:
    """A started server. ``port`` is the bound port; ``target`` is ``host:port`` for channels."""

    server: grpc.aio.Server
    config: ServerConfig
    port: int
    core: ServingCore
    metrics: ServerMetrics
    health: Any
    pushes: PushQueue
    metrics_port: int | None = None
    _stopped: bool = False

    @property
    def target(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING, refuse new calls, let in-flight ones finish for ``grace``
        seconds (default ``config.grace_s``), flush pending Feast pushes, close the metrics endpoint."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_s if grace is None else grace
        log.info("stopping (grace %.1fs)", grace)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.pushes.drain(timeout=max(grace, 1.0))
        self.pushes.close()
        self.metrics.stop_http()
        close = getattr(self.core.features, "close", None)
        if callable(close):
            close()
        if self.config.port_file is not None:
            self.config.port_file.unlink(missing_ok=True)
        log.info("stopped")

    async def wait(self) -> None:
        await self.server.wait_for_termination()


_DEFAULT: Any = object()


async def start_server(
    run_dir: str | os.PathLike[str] | None = None,
    *,
    config: ServerConfig | None = None,
    recommender: Any = None,
    tagger: Any = _DEFAULT,
    features: Any = _DEFAULT,
    **options: Any,
) -> RunningServer:
    """Load the run and start serving; returns once the port is bound.

    Args:
        run_dir: the run (or ``config.run_dir``).
        config: all options; ``options`` (ServerConfig/Limits field names) override it.
        recommender: a loaded :class:`~ranking.recommend.Recommender` (default: ``Recommender.from_run``).
        tagger: anything with ``tag(list[NoteInput]) -> list[TagResult]`` (default: the run's student;
            None: TagNotes answers FAILED_PRECONDITION).
        features: a :class:`~features.client.FeatureClient`-like sink (default per ``tags_from``; None: none).

    Raises:
        ConfigError / NotFoundError: bad options, a missing run part, a port that cannot be bound.
    """
    import torch
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from ranking.recommend import Recommender
    from serving.api.v1 import recommendation_pb2_grpc, tag_features_pb2_grpc, tagging_pb2_grpc

    cfg = _config(run_dir, config, options)
    torch.set_num_threads(1)
    token = resolve_token(cfg)
    rec = recommender or Recommender.from_run(
        cfg.run_dir,
        index_kind=cfg.index_kind,
        use_ranker=cfg.use_ranker,
        cold_candidates=cfg.cold_candidates,
        cold_slot_every=cfg.cold_slot_every,
    )
    sink = _feature_sink(cfg) if features is _DEFAULT else features
    problem = "the server was started without a tagger"
    if tagger is _DEFAULT:
        tagger, problem = _student(cfg)
    core = ServingCore(rec, tagger=tagger, tagger_problem=problem, features=sink, limits=cfg.limits)
    metrics = ServerMetrics()
    pushes = PushQueue(sink, metrics)
    server = grpc.aio.server(
        interceptors=[_Gate(token, metrics)],
        options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port already in use is a startup error, not a silent share
        ],
    )
    tag_features_pb2_grpc.add_TagFeaturesServicer_to_server(TagFeaturesServicer(core), server)
    recommendation_pb2_grpc.add_RecommendationServicer_to_server(RecommendationServicer(core), server)
    tagging_pb2_grpc.add_TaggingServicer_to_server(TaggingServicer(core, pushes, metrics), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        *SERVICE_NAMES,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    port = _bind(server, cfg)
    await server.start()
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    await health_servicer.set("", serving)
    for name in SERVICE_NAMES:
        ok = name != "tagllm.v1.Tagging" or tagger is not None
        await health_servicer.set(name, serving if ok else not_serving)
    running = RunningServer(server, cfg, port, core, metrics, health_servicer, pushes)
    if cfg.metrics_port is not None:
        running.metrics_port = metrics.start_http(cfg.metrics_host, cfg.metrics_port)
    if cfg.port_file is not None:
        from features.io import atomic_path

        with atomic_path(cfg.port_file) as tmp:
            tmp.write_text(f"{port}\n", encoding="utf-8")
    log.info(
        "serving %s on %s:%d (%s, auth %s, tagger %s)",
        ", ".join(SERVICE_NAMES),
        cfg.host,
        port,
        "tls" if cfg.tls_cert else "plaintext",
        "on" if token else "off",
        type(tagger).__name__ if tagger is not None else "none",
    )
    return running


def _config(run_dir: Any, config: ServerConfig | None, options: Mapping[str, Any]) -> ServerConfig:
    if config is None:
        return ServerConfig.from_mapping({"run_dir": run_dir, **options})
    lim = {f.name for f in fields(Limits)}
    limits = replace(config.limits, **{k: v for k, v in options.items() if k in lim})
    own = {k: v for k, v in options.items() if k not in lim}
    if run_dir is not None:
        own["run_dir"] = Path(run_dir)
    try:
        return replace(config, limits=limits, **own)
    except TypeError as exc:
        raise ConfigError(f"start_server: {exc}; expected ServerConfig or Limits field names") from exc


async def _serve(
    config: ServerConfig, ready: Callable[[RunningServer], None] | None = None, **kwargs: Any
) -> None:
    running = await start_server(config=config, **kwargs)
    # The models and catalogs loaded at startup are millions of long-lived objects: move them out of
    # the collector's reach so full collections stop walking them (a source of tail latency).
    gc.collect()
    gc.freeze()
    if ready is not None:
        ready(running)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        log.info("signal received")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await running.stop()


def serve(config: ServerConfig, ready: Callable[[RunningServer], None] | None = None, **kwargs: Any) -> None:
    """Start the server and block until SIGTERM/SIGINT, then stop gracefully (``config.grace_s``).

    Args:
        config: the options.
        ready: called with the RunningServer once it serves (the CLI prints the port).
        kwargs: passed to :func:`start_server` (``recommender``, ``tagger``, ``features``).
    """
    asyncio.run(_serve(config, ready, **kwargs))
