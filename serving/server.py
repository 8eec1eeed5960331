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
:class:`serving.interceptor.Gate` (request id, auth and write permission, undecodable bytes, admission
control, deadline, error mapping, response size, access log, metrics). Oversized requests are refused by
gRPC itself with RESOURCE_EXHAUSTED (``max_message_bytes``), oversized responses by the Gate.

Start-up: the port is bound first and health answers NOT_SERVING while the run loads in a worker
thread (imports, models, catalog, student), the journal is replayed, then everything turns SERVING;
the Feast online store, when only pushed to, loads in the background after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
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
from serving.journal import Journal
from serving.metrics import ServerMetrics
from serving.servicers import (
    Backend,
    PushQueue,
    RecommendationServicer,
    TagFeaturesServicer,
    TaggingServicer,
    replay,
)
from tagging.student.files import WEIGHTS

if TYPE_CHECKING:
    from grpc_health.v1.health import aio as health_aio

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


def _feature_sink(
    config: ServerConfig, features: Any
) -> tuple[FeatureSink | None, Callable[[], FeatureSink] | None, str]:
    """(a loaded sink, or a factory that loads one later, and the core's ``tags_from``) per ``tags_from``.

    Loading Feast takes seconds, so unless the tags are read from it at start (``feast``) the online
    store is only the push target, reached through a helper process (:mod:`serving.pusher`) started
    in the background after the server is SERVING."""
    if features is not _DEFAULT:  # given by the caller (tests): read at start with tags_from feast/auto
        use = "feast" if features is not None and config.tags_from != "catalog" else "catalog"
        return features, None, use
    registry = RunDir(config.run_dir).feast_registry_for(config.online)
    has_store = registry.exists()
    if config.tags_from == "feast" and not has_store:
        raise ConfigError(
            f"tags_from: 'feast' but the run has no Feast store ({registry} is missing); "
            f"run `tagllm features --run {config.run_dir}` or use tags_from catalog"
        )
    if not has_store:
        log.info("no Feast store at %s: fresh notes are journaled and served, not pushed", registry.parent)
        return None, None, "catalog"

    if config.tags_from in ("feast", "auto"):
        from features.client import FeatureClient

        client = FeatureClient(config.run_dir, online=config.online, redis=config.redis)  # type: ignore[arg-type]
        return client, None, "feast"

    def pusher() -> FeatureSink:  # Feast in a helper process: its imports and pushes never hold our GIL
        from serving.pusher import ProcessSink

        return ProcessSink(config.run_dir, online=config.online, redis=config.redis)

    return None, pusher, "catalog"


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
    backend: Backend
    metrics: ServerMetrics
    health: health_aio.HealthServicer
    startup_s: float = 0.0
    metrics_port: int | None = None
    _stopped: bool = False

    @property
    def core(self) -> ServingCore:
        return self.backend.get()

    @property
    def pushes(self) -> PushQueue:
        return self.backend.pushes

    @property
    def target(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "") else self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING, refuse new calls, let in-flight ones finish for ``grace``
        seconds (default ``config.grace_s``), flush pending Feast pushes, close the journal and the
        metrics endpoint. Every acknowledged TagNotes is already in the journal."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.grace_s if grace is None else grace
        log.info("stopping (grace %.1fs)", grace)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.pushes.drain(timeout=max(grace, 1.0))
        self.pushes.close()
        await self.backend.close()
        self.metrics.stop_http()
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
    reuse_port: bool = False,
    **options: Any,
) -> RunningServer:
    """Bind the port, answer health NOT_SERVING while the run loads (in a worker thread), replay the
    journal, then turn SERVING; returns once serving.

    Args:
        run_dir: the run (or ``config.run_dir``).
        config: all options; ``options`` (ServerConfig/Limits field names) override it.
        recommender: a loaded :class:`~ranking.recommend.Recommender` (default: ``Recommender.from_run``).
        tagger: anything with ``tag(list[NoteInput]) -> list[TagResult]`` (default: the run's student;
            None: TagNotes answers FAILED_PRECONDITION).
        features: a :class:`~features.client.FeatureClient`-like sink (default per ``tags_from``; None: none).
        reuse_port: share the port with other processes (SO_REUSEPORT; the ``workers`` supervisor).

    Raises:
        ConfigError / NotFoundError: bad options, a missing run part, a port that cannot be bound, a
        damaged journal.
    """
    t0 = time.perf_counter()
    cfg = merge_options(run_dir, config, options)
    # The loop thread is busy with cheap calls while the recommender and tagger threads drop the GIL in
    # every faiss / LightGBM / torch call; at the default 5 ms switch interval each of those threads
    # waits up to 5 ms to get it back, per call into C (a convoy). A short interval bounds that wait.
    sys.setswitchinterval(cfg.switch_interval_ms / 1000.0)
    token, write_token = resolve_token(cfg), resolve_write_token(cfg)
    metrics = ServerMetrics()
    backend = Backend(metrics, offload=cfg.offload, journal_poll_s=cfg.journal_poll_s)
    server = grpc.aio.server(
        interceptors=[
            Gate(
                token,
                metrics,
                write_token=write_token,
                open_writes=cfg.open_writes,
                max_inflight=cfg.max_inflight,
                max_response_bytes=cfg.max_message_bytes,
            )
        ],
        options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            # a port already in use is a startup error, not a silent share (unless sharing is the point)
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ],
    )
    health_servicer = _add_services(server, backend)
    await _set_health(health_servicer, loaded=False)
    port = _bind(server, cfg)
    await server.start()
    log.info("listening on %s:%d; health NOT_SERVING while the run loads", cfg.host, port)
    try:
        core, journal, pushes, records = await asyncio.to_thread(
            _load, cfg, recommender, tagger, features, metrics
        )
    except BaseException:
        await server.stop(0)
        await backend.close()
        raise
    backend.ready(core, journal, pushes)
    pushes.submit(records)
    pushes.warm()
    await _set_health(health_servicer, loaded=True, tagging=core.tagger is not None)
    startup_s = time.perf_counter() - t0
    running = RunningServer(server, cfg, port, backend, metrics, health_servicer, startup_s)
    if cfg.metrics_port is not None:
        running.metrics_port = metrics.start_http(cfg.metrics_host, cfg.metrics_port)
    if cfg.port_file is not None:
        write_port_file(cfg.port_file, port)
    log.info(
        "SERVING %s on %s:%d after %.1fs (%s, auth %s, writes %s, tagger %s, journal %s)",
        ", ".join(SERVICE_NAMES),
        cfg.host,
        port,
        startup_s,
        "tls" if cfg.tls_cert else "plaintext",
        "on" if token else "off",
        "token" if write_token else "open" if cfg.open_writes else "off",
        type(core.tagger).__name__ if core.tagger is not None else "none",
        journal.path if journal is not None else "none",
    )
    return running


def _load(
    cfg: ServerConfig,
    recommender: Recommender | None,
    tagger: Tagger | None,
    features: FeatureSink | None,
    metrics: ServerMetrics,
) -> tuple[ServingCore, Journal | None, PushQueue, list[dict[str, Any]]]:
    """Everything the server needs, loaded in a worker thread: the core, the journal (replayed into the
    core), the push queue and the push records of the journaled notes (re-pushed once serving)."""
    import torch

    torch.set_num_threads(1)
    from ranking.recommend import Recommender

    rec = recommender or Recommender.from_run(
        cfg.run_dir,
        index_kind=cfg.index_kind,
        use_ranker=cfg.use_ranker,
        cold_candidates=cfg.cold_candidates,
        exploration=cfg.exploration_policy(),
    )
    sink, factory, tags_from = _feature_sink(cfg, features)
    problem = "the server was started without a tagger"
    if tagger is _DEFAULT:
        tagger, problem = _student(cfg)
    core = ServingCore(
        rec, tagger=tagger, tagger_problem=problem, features=sink, tags_from=tags_from, limits=cfg.limits
    )
    journal = _journal(cfg, writable=tagger is not None)
    records = replay(core, journal) if journal is not None else []
    return core, journal, PushQueue(sink, metrics, factory=factory), records


def _journal(cfg: ServerConfig, *, writable: bool) -> Journal | None:
    """The run's journal; a server without a tagger that cannot open it serves the batch notes only."""
    path = cfg.journal or RunDir(cfg.run_dir).journal
    if not writable and not path.exists():
        return None
    try:
        return Journal(path)
    except ConfigError:
        if writable:
            raise
        log.warning("no journal at %s (not writable): serving the run's notes only", path)
        return None


def _add_services(server: grpc.aio.Server, backend: Backend) -> health_aio.HealthServicer:
    """Register the TagLLM services, health and reflection on ``server``."""
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from serving.api.v1 import recommendation_pb2_grpc, tag_features_pb2_grpc, tagging_pb2_grpc

    tag_features_pb2_grpc.add_TagFeaturesServicer_to_server(TagFeaturesServicer(backend), server)
    recommendation_pb2_grpc.add_RecommendationServicer_to_server(RecommendationServicer(backend), server)
    tagging_pb2_grpc.add_TaggingServicer_to_server(TaggingServicer(backend), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = (
        *SERVICE_NAMES,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    return health_servicer


async def _set_health(
    health_servicer: health_aio.HealthServicer, *, loaded: bool, tagging: bool = True
) -> None:
    """Not ``loaded``: the server and every service NOT_SERVING. Loaded: all SERVING, except Tagging
    (NOT_SERVING) when there is no tagger."""
    from grpc_health.v1 import health_pb2

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    await health_servicer.set("", serving if loaded else not_serving)
    for name in SERVICE_NAMES:
        ok = loaded and (name != "tagllm.v1.Tagging" or tagging)
        await health_servicer.set(name, serving if ok else not_serving)


def write_port_file(path: Path, port: int) -> None:
    """Write ``port`` to ``path`` atomically (readers never see a partial file)."""
    from features.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(f"{port}\n", encoding="utf-8")


async def _serve(config: ServerConfig, ready: Callable[[Any], None] | None = None, **kwargs: Any) -> None:
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


def serve(config: ServerConfig, ready: Callable[[Any], None] | None = None, **kwargs: Any) -> None:
    """Start the server and block until SIGTERM/SIGINT, then stop gracefully (``config.grace_s``).

    With ``config.workers`` > 1, run that many server processes on the port (:mod:`serving.workers`).

    Args:
        config: the options.
        ready: called once serving with the RunningServer (or the :class:`serving.workers.Workers`);
            the CLI prints the port.
        kwargs: passed to :func:`start_server` (``recommender``, ``tagger``, ``features``, ``reuse_port``).

    Raises:
        SystemExit: workers kept dying (status 1).
    """
    if config.workers > 1:
        objects = sorted(set(kwargs) - {"reuse_port"})
        if objects:
            raise ConfigError(f"workers: {config.workers} processes load the run themselves; got {objects}")
        from serving.workers import serve_workers

        status = serve_workers(config, ready)
        if status:
            raise SystemExit(status)
        return
    asyncio.run(_serve(config, ready, **kwargs))
