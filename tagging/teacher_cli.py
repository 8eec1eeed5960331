"""``tagllm teacher``: serve a local model as an OpenAI-compatible endpoint.

``tagllm teacher serve --model DIR`` binds 127.0.0.1 by default (the server has no authentication);
point the LLM teacher at the printed ``base_url``. On a GPU box with a real checkpoint, pass
``--device cuda``. ``--port 0`` lets the OS pick a free port (printed on the first line of stdout).
"""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import click

__all__ = ["teacher"]

log = logging.getLogger(__name__)


@click.group(name="teacher")
def teacher() -> None:
    """Teacher backends: serve a local model over the OpenAI chat-completions API."""


@teacher.command("serve")
@click.option(
    "--model",
    "model_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A transformers model folder (config.json, weights, tokenizer).",
)
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Interface to bind (no auth: keep it local)."
)
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="0 = any free port."
)
@click.option("--name", "served_name", default=None, help="Model id to serve as (default: the folder name).")
@click.option("--max-new-tokens", default=512, show_default=True, type=click.IntRange(1, 32768))
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cpu, cuda, cuda:1.")
def serve(
    model_dir: Path, host: str, port: int, served_name: str | None, max_new_tokens: int, device: str
) -> None:
    """Serve the model in MODEL as /v1/chat/completions, /v1/models and /health."""
    import uvicorn

    from tagging.teachers.local import LocalChatModel, LocalModelError
    from tagging.teachers.openai_server import create_app

    if not (model_dir / "config.json").is_file():
        raise click.BadParameter(f"{str(model_dir)!r} has no config.json; expected a transformers model folder",
                                 param_hint="'--model'")  # fmt: skip
    try:
        model = LocalChatModel(model_dir, device=device)
    except LocalModelError as exc:
        raise click.BadParameter(str(exc), param_hint="'--model'") from exc
    name = served_name or model_dir.resolve().name
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("binding %s: this server has no authentication; anyone who can reach it can use it", host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # listen before announcing, so a client that reads the line can connect at once
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot bind {host}:{port}: {exc.strerror or exc}") from exc
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    click.echo(f"serving {name!r} on http://{shown}:{bound}/v1")
    sys.stdout.flush()
    app = create_app(model, served_name=name, max_new_tokens=max_new_tokens)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
