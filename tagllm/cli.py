"""The ``tagllm`` command: one lazily imported sub-group per package.

Nothing heavy (torch, feast, grpc, transformers) is imported here: each group module is imported only
when that group is invoked, so ``tagllm --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import click

from tagllm import __version__

# name -> ("module:attribute", one-line help shown by `tagllm --help` without importing the module)
GROUPS: dict[str, tuple[str, str]] = {
    "data": ("features.cli:data", "Prepare and describe canonical tables from a dataset source."),
    "tag": ("tagging.cli:tag", "Build the handbook, run teachers, evaluate tags."),
    "teacher": ("tagging.teacher_cli:teacher", "Serve a local model as an OpenAI-compatible endpoint."),
    "features": ("features.features_cli:features", "Tags as Feast features: apply, materialize, push."),
    "train": ("ranking.cli:train", "Train the TorchRec two-tower retrieval model and the LightGBM ranker."),
    "eval": ("ranking.cli:eval_group", "Offline evaluation: warm/cold Recall@K, NDCG@K, ablations, peers."),
    "ab": ("ab_analysis.cli:ab", "A/B lift reports: JSON, Markdown, HTML with plots."),
    "bench": (
        "tagllm.bench.cli:bench",
        "Benchmarks that print JSON (ratios to peers measured in the same run).",
    ),
    "demo": ("tagllm.demo:demo", "Run the main job end to end on the synthetic community."),
    "serve": ("serving.cli:serve", "Serve tag features, recommendations and tagging over gRPC."),
    "client": ("serving.client_cli:client", "Call a running gRPC server; print JSON (or a table)."),
    "journal": ("serving.journal_cli:journal", "Show or compact a run's TagNotes journal (fresh notes)."),
}

# Commands that another package contributes to a group (the group's package must not import it:
# ab_analysis imports no sibling package, but `tagllm ab simulate` drives the ranking pipeline).
ATTACHED: dict[str, dict[str, str]] = {
    "ab": {"simulate": "tagllm.simulate.cli:simulate"},
}


def _load(target: str) -> click.Command:
    module_name, attr = target.split(":")
    cmd = getattr(importlib.import_module(module_name), attr)
    if not isinstance(cmd, click.Command):  # pragma: no cover - wiring error
        raise TypeError(f"{target} is not a click command")
    return cmd


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def __init__(self, *args: Any, lazy: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            cmd = _load(self._lazy[cmd_name][0])
            if isinstance(cmd, click.Group):
                for name, target in ATTACHED.get(cmd_name, {}).items():
                    if name not in cmd.commands:
                        cmd.add_command(_load(target), name)
            return cmd
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text comes from the table above so that `--help` imports nothing.
        rows = [(name, self._lazy[name][1]) for name in self.list_commands(ctx) if name in self._lazy]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if level > logging.DEBUG:  # chatty at INFO: matplotlib (every categorical axis), faiss (its loader)
        for name in ("matplotlib", "faiss.loader"):
            logging.getLogger(name).setLevel(logging.WARNING)


@click.group(cls=LazyGroup, lazy=GROUPS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tagllm")
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """TagLLM: fine-grained note tags, from handbook to A/B lift.

    Run a stage with `tagllm GROUP COMMAND --help` to see its options. Every command that writes
    reads and writes a run directory (RUN_DIR): tables/, ground_truth/, manifest.json, summary.json.
    """
    configure_logging(verbose, quiet or bool(os.environ.get("TAGLLM_QUIET")))


def main() -> None:
    """Console-script entry point: domain errors become a one-line message and exit status 1."""
    from features.errors import TagLLMError

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except TagLLMError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
