"""Prometheus metrics of the gRPC server, in a registry of its own (several servers may share a process).

Exposed with ``prometheus_client.start_http_server`` on ``--metrics-port`` (off by default).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = ["ServerMetrics"]

log = logging.getLogger(__name__)

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServerMetrics:
    """Request counter by method and code, latency histogram by method, Feast push and tagging counters."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "tagllm_grpc_requests",
            "gRPC requests by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "tagllm_grpc_request_seconds",
            "gRPC request latency",
            ["method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.pushes = Counter(
            "tagllm_feast_pushes",
            "Feast online-store pushes of fresh note tags by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.notes_tagged = Counter(
            "tagllm_notes_tagged", "Notes tagged and added by TagNotes", registry=self.registry
        )
        self._http: WSGIServer | None = None

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample's current value (0 when absent), e.g. ``value("tagllm_feast_pushes_total", {"outcome": "failed"})``."""
        v = self.registry.get_sample_value(name, labels or {})
        return float(v or 0.0)

    def start_http(self, host: str, port: int) -> int:
        """Serve /metrics on ``host:port`` (0 = a free port); returns the bound port."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        bound = int(server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def stop_http(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
