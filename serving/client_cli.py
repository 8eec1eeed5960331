"""``tagllm client``: call a running server and print JSON (or a table with --table)."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from serving.client import (
        NoteTagsResult,
        ScoredNoteResult,
        TagLLMClient,
        TagNotesResult,
        UserInterestsResult,
    )

__all__ = ["client"]


def _connection_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--target", default="127.0.0.1:50051", show_default=True, help="Server HOST:PORT."),
        click.option(
            "--token-file", type=click.Path(path_type=Path), help="Bearer token file (else env TAGLLM_TOKEN)."
        ),
        click.option(
            "--tls-ca", type=click.Path(path_type=Path), help="PEM CA of the server's certificate (TLS)."
        ),
        click.option("--server-name", help="TLS server name override (e.g. localhost)."),
        click.option(
            "--timeout", type=float, default=5.0, show_default=True, help="Deadline per call, seconds."
        ),
        click.option("--table", is_flag=True, help="Print a table instead of JSON."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _run(call: Callable[[TagLLMClient], object], conn: dict[str, Any]) -> None:
    from serving.client import TagLLMClient, TagLLMClientError, as_plain

    token_file = conn.pop("token_file")
    token = token_file.read_text(encoding="utf-8").strip() if token_file else os.environ.get("TAGLLM_TOKEN")
    table = conn.pop("table")
    try:
        with TagLLMClient(
            conn["target"],
            token=token,
            tls_ca=conn["tls_ca"],
            timeout=conn["timeout"],
            server_name=conn["server_name"],
        ) as c:
            result = as_plain(call(c))
    except TagLLMClientError as exc:
        click.echo(
            json.dumps({"code": exc.code, "details": exc.details, "request_id": exc.request_id}), err=True
        )
        raise SystemExit(1) from None
    if table:
        _print_table(result)
    else:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))


def _print_table(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = (
        result
        if isinstance(result, list)
        else result.get("notes", [result])
        if isinstance(result, dict)
        else []
    )
    if rows and isinstance(rows[0], dict):
        t = Table(*rows[0].keys())
        for r in rows:
            t.add_row(
                *(
                    json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else str(v)
                    for v in r.values()
                )
            )
    else:
        t = Table("key", "value")
        for k, v in (result or {}).items():
            t.add_row(str(k), str(v))
    Console().print(t)


def _command(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> None:
        conn = {
            k: kwargs.pop(k) for k in ("target", "token_file", "tls_ca", "server_name", "timeout", "table")
        }
        _run(lambda c: fn(c, **kwargs), conn)

    return _connection_options(wrapper)


@click.group("client", context_settings={"help_option_names": ["-h", "--help"]})
def client() -> None:
    """Call a running TagLLM server (`tagllm serve`) and print the answer as JSON."""


@client.command("note-tags")
@click.argument("note_ids", nargs=-1, required=True)
@click.option("--allow-missing", is_flag=True, help="Leave unknown ids out instead of failing.")
@_command
def note_tags(c: TagLLMClient, note_ids: tuple[str, ...], allow_missing: bool) -> list[NoteTagsResult]:
    """Tags of notes (GetNoteTags)."""
    return c.note_tags(list(note_ids), allow_missing=allow_missing)


@client.command("user-interests")
@click.argument("user_ids", nargs=-1, required=True)
@click.option("--top-k", type=int, default=0, show_default=True, help="Tags per user (0 = server default).")
@click.option("--allow-missing", is_flag=True, help="Leave unknown ids out instead of failing.")
@_command
def user_interests(
    c: TagLLMClient, user_ids: tuple[str, ...], top_k: int, allow_missing: bool
) -> list[UserInterestsResult]:
    """Top tag interests of users (GetUserInterests)."""
    return c.user_interests(list(user_ids), top_k=top_k, allow_missing=allow_missing)


@client.command("recommend")
@click.argument("user_id")
@click.option("-k", "--k", "k", type=int, default=10, show_default=True, help="Notes to return.")
@click.option("--candidates", type=int, default=0, help="Retrieved before ranking (0 = server default).")
@click.option("--category", "categories", multiple=True, help="Keep only this category (repeatable).")
@click.option("--exclude", "exclude_note_ids", multiple=True, help="Never return this note (repeatable).")
@click.option("--include-seen", is_flag=True, help="Allow notes the user already engaged with.")
@click.option("--cold-start-only", is_flag=True, help="Only cold-start notes.")
@_command
def recommend(c: TagLLMClient, user_id: str, **opts: Any) -> list[ScoredNoteResult]:
    """Top-k notes for a user with scores and reasons (Recommend)."""
    return c.recommend(user_id, opts.pop("k"), **opts)


@client.command("rank")
@click.argument("user_id")
@click.argument("note_ids", nargs=-1, required=True)
@_command
def rank(c: TagLLMClient, user_id: str, note_ids: tuple[str, ...]) -> list[ScoredNoteResult]:
    """Score candidate notes for a user, best first (Rank)."""
    return c.rank(user_id, list(note_ids))


@client.command("tag-notes")
@click.argument("notes_json", type=click.Path(path_type=Path, allow_dash=True))
@_command
def tag_notes(c: TagLLMClient, notes_json: Path) -> TagNotesResult:
    """Tag and add notes (TagNotes) from a JSON list of {note_id, category, title, body, ...} ('-' = stdin)."""
    text = sys.stdin.read() if str(notes_json) == "-" else notes_json.read_text(encoding="utf-8")
    notes = json.loads(text)
    if not isinstance(notes, list):
        raise click.UsageError("NOTES_JSON: expected a JSON list of note objects")
    return c.tag_notes(notes)


@client.command("health")
@_command
def health(c: TagLLMClient) -> dict[str, str]:
    """Serving status of the server and each service (grpc.health.v1)."""
    return c.health()
