"""Install an external handbook YAML in a run (instead of building one with ``tagllm tag handbook``).

Used by ``tagllm tag handbook --from FILE``; re-exported from :mod:`tagging.batch_io`, where teacher
answers from outside the run are imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from features.errors import DataSourceError, NotFoundError
from features.io import RunDir, atomic_path
from tagging.handbook_model import Handbook, load_handbook

__all__ = ["install_handbook"]

log = logging.getLogger(__name__)


def _handbook_figures(hb: Handbook, path: Path) -> dict[str, Any]:
    return {"path": str(path), **hb.figures()}


def install_handbook(
    run_dir: str | os.PathLike[str],
    source: str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Validate an external handbook YAML and install it in a run (instead of building one).

    The file is copied byte for byte (comments and layout kept), atomically, and loaded again from
    its new place; the run's ``handbook`` summary section is replaced.

    Args:
        run_dir: prepared run directory.
        source: the handbook YAML (validated with :func:`load_handbook`).
        out: where to install it (default RUN_DIR/handbook.yaml).

    Returns:
        The figures of ``tagllm tag handbook`` (path, version, categories, dimensions, values,
        boilerplate; dimension_recovery when the run has a synthetic taxonomy) plus ``installed_from``.

    Raises:
        NotFoundError: no such run or file. ConfigError: the YAML is invalid (the field path is named).
    """
    run = RunDir(run_dir).require()
    source = Path(source)
    hb = load_handbook(source)
    dest = Path(out) if out is not None else run.handbook
    if not (dest.exists() and dest.resolve() == source.resolve()):
        data = source.read_bytes()
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
    installed = load_handbook(dest)
    figures = {**_handbook_figures(installed, dest), "installed_from": str(source)}
    if installed.version != hb.version:  # pragma: no cover - the copy is byte-identical
        raise DataSourceError(f"handbook copy {dest} differs from {source} after installing")
    with contextlib.suppress(NotFoundError):
        from tagging.evaluate import dimension_recovery

        figures["dimension_recovery"] = dimension_recovery(
            installed, run.read_ground_truth("taxonomy")
        ).summary()
    run.update_summary("handbook", figures)
    log.info("handbook %s installed from %s at %s", installed.version, source, dest)
    return figures
