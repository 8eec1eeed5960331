"""``tagllm serve``: run the gRPC server (imports grpc/torch only when the command runs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from serving.server import RunningServer

__all__ = ["serve"]

_PATH = click.Path(path_type=Path)


@click.command("serve", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--run", "run_dir", type=_PATH, help="Run directory (retrieval model, ranker, Feast store, student)."
)
@click.option(
    "--config", "config_path", type=_PATH, help="YAML file of options (keys = flag names); flags override it."
)
@click.option("--host", help="Bind address.  [default: 127.0.0.1]")
@click.option("--port", type=int, help="TCP port; 0 picks a free one (printed and logged).  [default: 50051]")
@click.option("--port-file", type=_PATH, help="Write the bound port to this file (atomically) once serving.")
@click.option("--tls-cert", type=_PATH, help="PEM certificate (with --tls-key): serve TLS.")
@click.option("--tls-key", type=_PATH, help="PEM private key (with --tls-cert).")
@click.option(
    "--token-file", type=_PATH, help="Bearer token file (else env TAGLLM_TOKEN); health stays open."
)
@click.option(
    "--metrics-port", type=int, help="Serve Prometheus /metrics on this port (off by default; 0 = free)."
)
@click.option("--metrics-host", help="Bind address of /metrics.  [default: 127.0.0.1]")
@click.option(
    "--grace", "grace_s", type=float, help="Seconds in-flight calls get on SIGTERM/SIGINT.  [default: 5]"
)
@click.option(
    "--max-message-bytes", type=int, help="Largest message; larger requests get RESOURCE_EXHAUSTED."
)
@click.option("--max-ids-per-call", type=int, help="Most ids per request list.  [default: 1000]")
@click.option("--max-k", type=int, help="Largest Recommend k.  [default: 500]")
@click.option("--max-candidates", type=int, help="Largest Recommend candidates.  [default: 5000]")
@click.option("--max-top-k", type=int, help="Largest GetUserInterests top_k.  [default: 200]")
@click.option("--max-notes-per-call", type=int, help="Most notes per TagNotes call.  [default: 64]")
@click.option(
    "--tags-from", type=click.Choice(["auto", "feast", "catalog"]), help="Where GetNoteTags' tags come from."
)
@click.option(
    "--online", type=click.Choice(["sqlite", "redis"]), help="Feast online store.  [default: sqlite]"
)
@click.option("--redis", help="HOST:PORT of redis with --online redis.")
@click.option(
    "--student-model", type=_PATH, help="TagNotes student model folder.  [default: RUN/student/model]"
)
@click.option(
    "--index-kind", type=click.Choice(["exact", "ivf", "hnsw"]), help="ANN index.  [default: exact]"
)
@click.option("--ranker/--no-ranker", "use_ranker", default=None, help="Rank with the LightGBM ranker.")
@click.option(
    "--cold-candidates",
    type=click.IntRange(min=0),
    help="Extra Recommend candidates from cold-start notes (cold-start channel).  [default: 0 = off]",
)
@click.option(
    "--cold-slot-every",
    type=click.IntRange(min=0),
    help="Every N-th Recommend slot goes to the best-ranked cold-start candidate (fresh-note quota; "
    "use with --cold-candidates).  [default: 0 = off]",
)
@click.option(
    "--access-log/--no-access-log", default=True, show_default=True, help="One JSON line per request."
)
def serve(config_path: Path | None, access_log: bool, **flags: Any) -> None:
    """Serve TagFeatures, Recommendation, Tagging, health and reflection over gRPC.

    Binds 127.0.0.1:50051 by default. SIGTERM/SIGINT stop it gracefully. Example:

        tagllm serve --run runs/demo --port 0 --port-file /tmp/tagllm.port
    """
    from serving.server import ServerConfig, load_config
    from serving.server import serve as run_server

    values = load_config(config_path) if config_path is not None else {}
    values.update({k: v for k, v in flags.items() if v is not None})
    if not values.get("run_dir"):
        raise click.UsageError("--run RUN_DIR is required (or run_dir in --config)")
    if not access_log:
        logging.getLogger("serving.server.access").setLevel(logging.WARNING)
    config = ServerConfig.from_mapping(values)

    def ready(running: RunningServer) -> None:
        click.echo(f"listening on {running.config.host}:{running.port}")

    run_server(config, ready)
