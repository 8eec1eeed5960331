"""``tagllm serve``: run the gRPC server (imports grpc/torch only when the command runs)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from serving.config import DEFAULT_MAX_INFLIGHT, METHODS  # stdlib only: keeps --help fast

if TYPE_CHECKING:
    from serving.server import RunningServer

__all__ = ["serve"]

_PATH = click.Path(path_type=Path)
_INFLIGHT_FORM = f"METHOD=N with METHOD one of {', '.join(METHODS)} and N an integer >= 1"


def _max_inflight(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, int] | None:
    """``--max-inflight Recommend=8 --max-inflight Rank=8`` as {"Recommend": 8, "Rank": 8} (None: not given)."""
    out: dict[str, int] = {}
    for value in values:
        name, sep, count = value.partition("=")
        name, count = name.strip(), count.strip()
        if not sep or name not in METHODS or not count.isdigit() or int(count) < 1:
            raise click.BadParameter(f"got {value!r}; expected {_INFLIGHT_FORM}", ctx, param)
        out[name] = int(count)
    return out or None


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
    "--token-file",
    type=_PATH,
    help="Read bearer token file (else env TAGLLM_TOKEN; none: reads are open); health stays open.",
)
@click.option(
    "--write-token-file",
    type=_PATH,
    help="Write token file (else env TAGLLM_WRITE_TOKEN): TagNotes needs 'authorization: Bearer <write "
    "token>'; it grants reads too. Without one TagNotes is PERMISSION_DENIED unless --open-writes.",
)
@click.option(
    "--open-writes",
    is_flag=True,
    default=None,
    help="Without a write token, let every caller that passes the read check use TagNotes "
    "(trusted networks only).",
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
    "--max-text-chars",
    type=click.IntRange(min=1),
    help="Longest TagNotes title, body or image caption, in characters.  [default: 10000]",
)
@click.option(
    "--max-captions", type=click.IntRange(min=1), help="Most image captions per TagNotes note.  [default: 16]"
)
@click.option(
    "--max-inflight",
    multiple=True,
    callback=_max_inflight,
    metavar="METHOD=N",
    help="Calls of METHOD in flight on one worker before new ones get RESOURCE_EXHAUSTED; repeatable.  "
    f"[default: {', '.join(f'{k}={v}' for k, v in DEFAULT_MAX_INFLIGHT.items())}]",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Server processes sharing the port, each with its own copy of the models.  [default: 1]",
)
@click.option(
    "--offload/--no-offload",
    default=None,
    help="Run Recommend, Rank and user-interest misses on a worker thread, off the event loop.  "
    "[default: offload]",
)
@click.option("--journal", type=_PATH, help="The TagNotes journal.  [default: RUN/serving/tagnotes.journal]")
@click.option(
    "--journal-poll-s",
    type=click.FloatRange(0.001, 60),
    help="Seconds between reads of notes other workers appended to the journal.  [default: 0.1]",
)
@click.option(
    "--switch-interval-ms",
    type=click.FloatRange(0.05, 50),
    help="GIL switch interval of the server process (Python's default is 5).  [default: 0.1]",
)
@click.option(
    "--tags-from",
    type=click.Choice(["catalog", "feast", "auto"]),
    help="Where the batch notes' tags come from: catalog (the run's tag table; fast start), feast (the "
    "online store, read at start), auto (feast when the run has a store).  [default: catalog]",
)
@click.option(
    "--online", type=click.Choice(["sqlite", "redis"]), help="Feast online store.  [default: sqlite]"
)
@click.option("--redis", help="HOST:PORT of redis with --online redis.")
@click.option(
    "--student-model", type=_PATH, help="TagNotes student model folder.  [default: RUN/student/model]"
)
@click.option(
    "--index-kind",
    type=click.Choice(["exact", "ivf", "hnsw", "ivfpq"]),
    help="ANN index (ivfpq: compressed, docs/scaling.md).  [default: exact]",
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
    "--exploration",
    type=click.Choice(["none", "quota", "ucb", "thompson"]),
    help="How fresh and little-shown notes earn Recommend/Rank slots: none, quota (every "
    "--cold-slot-every-th slot), ucb or thompson (a Beta posterior around the ranker's click "
    "probability that narrows as the note collects impressions; use with --cold-candidates).  "
    "[default: none, or quota with --cold-slot-every]",
)
@click.option(
    "--exploration-prior-impressions",
    type=click.FloatRange(min=0, min_open=True),
    help="ucb/thompson: impressions' worth of evidence in the ranker's estimate for a note never "
    "shown (larger = less exploration).  [default: 20]",
)
@click.option(
    "--exploration-ucb-beta",
    type=click.FloatRange(min=0),
    help="ucb: the bonus in posterior standard deviations.  [default: 1]",
)
@click.option(
    "--exploration-seed", type=click.IntRange(min=0), help="thompson: the seed of the draws.  [default: 0]"
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
    inflight = flags.pop("max_inflight")
    if inflight is not None:  # the flags override the config file's entries method by method
        configured = values.get("max_inflight")
        values["max_inflight"] = {**configured, **inflight} if isinstance(configured, Mapping) else inflight
    values.update({k: v for k, v in flags.items() if v is not None})
    if not values.get("run_dir"):
        raise click.UsageError("--run RUN_DIR is required (or run_dir in --config)")
    if not access_log:
        logging.getLogger("serving.server.access").setLevel(logging.WARNING)
    config = ServerConfig.from_mapping(values)

    def ready(running: RunningServer) -> None:
        click.echo(f"listening on {running.config.host}:{running.port}")

    run_server(config, ready)
