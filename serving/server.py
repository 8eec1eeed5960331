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

The options are :mod:`serving.config` (re-exported here); every call goes through one interceptor,
:class:`serving.interceptor.Gate` (request id, auth, deadline, error mapping, access log, metrics).
Oversized messages are refused by gRPC itself with RESOURCE_EXHAUSTED (``max_message_bytes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from features.errors import ConfigError
from features.io import RunDir
from serving.config import ServerConfig, load_config, merge_options, resolve_token, resolve_write_token
from serving.core import FeatureSink, ServingCore, Tagger
from serving.interceptor import Gate
from serving.metrics import ServerMetrics
from serving.servicers import PushQueue, RecommendationServicer, TagFeaturesServicer, TaggingServicer
from tagging.student.files import WEIGHTS

if TYPE_CHECKING:
    from grpc_health.v1.health import aio as health_aio

    from features.client import FeatureClient
    from ranking.recommend import Recommender

__all__ = [
    "SERVICE_NAMES",
    "RunningServer",
    "ServerConfig",
    "load_config",
    "resolve_token",
    "serve",
    "start_server",
]

log = logging.getLogger(__name__)

SERVICE_NAMES = ("tagllm.v1.TagFeatures", "tagllm.v1.Recommendation", "tagllm.v1.Tagging")


# ---- assembling the parts -------------------------------------------------------------------------


def _feature_sink(config: ServerConfig) -> FeatureClient | None:
    """The Feast client per ``tags_from`` (None: use the catalog)."""
    if config.tags_from == "catalog":
        return None
    registry = RunDir(config.run_dir).feast_registry_for(config.online)
    if config.tags_from == "auto" and not registry.exists():
        log.info("no Feast store at %s: note tags come from the recommender's catalog", registry.parent)
        return None
    from features.client import FeatureClient

    return FeatureClient(config.run_dir, online=config.online, redis=config.redis)  # type: ignore[arg-type]


def _student(config: ServerConfig) -> tuple[Tagger | None, str]:
    """(the run's student tagger, "") or (None, why there is none)."""
    path = config.student_model or RunDir(config.run_dir).student_model
    if not (path / WEIGHTS).exists():
        problem = (
            f"no student model at {path} (missing {WEIGHTS}); train one with "
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
    health: health_aio.HealthServicer
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
    recommender: Recommender | None = None,
    tagger: Tagger | None = _DEFAULT,
    features: FeatureSink | None = _DEFAULT,
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

    cfg = merge_options(run_dir, config, options)
    torch.set_num_threads(1)
    token = resolve_token(cfg)
    core = _core(cfg, recommender, tagger, features)
    metrics = ServerMetrics()
    pushes = PushQueue(core.features, metrics)
    server = grpc.aio.server(
        interceptors=[
            Gate(
                token,
                metrics,
                write_token=resolve_write_token(cfg),
                open_writes=cfg.open_writes,
                max_inflight=cfg.max_inflight,
                max_response_bytes=cfg.max_message_bytes,
            )
        ],
        options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            ("grpc.so_reuseport", 0),  # a port already in use is a startup error, not a silent share
        ],
    )
    health_servicer = _add_services(server, core, pushes, metrics)
    port = _bind(server, cfg)
    await server.start()
    await _set_health(health_servicer, tagging=core.tagger is not None)
    running = RunningServer(server, cfg, port, core, metrics, health_servicer, pushes)
    if cfg.metrics_port is not None:
        running.metrics_port = metrics.start_http(cfg.metrics_host, cfg.metrics_port)
    if cfg.port_file is not None:
        _write_port_file(cfg.port_file, port)
    log.info(
        "serving %s on %s:%d (%s, auth %s, tagger %s)",
        ", ".join(SERVICE_NAMES),
        cfg.host,
        port,
        "tls" if cfg.tls_cert else "plaintext",
        "on" if token else "off",
        type(core.tagger).__name__ if core.tagger is not None else "none",
    )
    return running


def _core(
    cfg: ServerConfig,
    recommender: Recommender | None,
    tagger: Tagger | None,
    features: FeatureSink | None,
) -> ServingCore:
    """The serving core; ``_DEFAULT`` tagger / features are loaded from the run per ``cfg``."""
    from ranking.recommend import Recommender

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
    return ServingCore(rec, tagger=tagger, tagger_problem=problem, features=sink, limits=cfg.limits)


def _add_services(
    server: grpc.aio.Server, core: ServingCore, pushes: PushQueue, metrics: ServerMetrics
) -> health_aio.HealthServicer:
    """Register the TagLLM services, health and reflection on ``server``; returns the health servicer."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from serving.api.v1 import recommendation_pb2_grpc, tag_features_pb2_grpc, tagging_pb2_grpc

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
    return health_servicer


async def _set_health(health_servicer: health_aio.HealthServicer, *, tagging: bool) -> None:
    """The server and every service SERVING, except Tagging (NOT_SERVING) when there is no tagger."""
    from grpc_health.v1 import health_pb2

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    await health_servicer.set("", serving)
    for name in SERVICE_NAMES:
        ok = name != "tagllm.v1.Tagging" or tagging
        await health_servicer.set(name, serving if ok else not_serving)


def _write_port_file(path: Path, port: int) -> None:
    from features.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(f"{port}\n", encoding="utf-8")


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
