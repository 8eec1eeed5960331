"""Run directories and atomic writes.

A run directory (RUN_DIR) holds everything one pipeline run produces. :class:`RunDir` is its
contract: every artifact's path is named once, here, and every other module asks ``RunDir`` for it::

    RUN_DIR/
      manifest.json        source, options, counts, cold-start cutoff (written last by `data prepare`)
      tables/*.parquet     canonical tables (notes, users, interactions, teacher/student tags, ...)
      ground_truth/        evaluation-only truth (synthetic community: true attributes, preferences)
      summary.json         one section per stage with its headline figures
      handbook.yaml        the User Interest Handbook                       (run.handbook)
      tag_vocab.json       tag text -> id, append-only                      (run.tag_vocab)
      teacher/             teacher logs, summaries, batch requests          (run.teacher_dir)
      cache/               the teacher result cache                         (run.teacher_cache)
      student/             the student's resumable training state           (run.student_work)
      student/model/       the exported student                             (run.student_model)
      eval/student_report/ the distillation report                          (run.student_report_dir)
      features/            Feast offline sources (parquet) + their vocab    (run.feature_table(name))
      feast/               Feast registry and SQLite online store           (run.feast_registry)
      retrieval/           two-tower model, evaluation, item embeddings     (run.retrieval_model)
      ranker/              LightGBM model + summary                         (run.ranker_model)
      ab_sim/              the simulated A/B experiment                     (run.simulation_dir)

Every file is written to a temporary name in the same folder, flushed to disk and renamed into
place, so a reader never sees a partial file and a crash leaves the previous version intact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from features.errors import NotFoundError
from features.schemas import TABLE_NAMES, validate

__all__ = ["RunDir", "atomic_dir", "atomic_path", "read_json", "write_json", "write_parquet"]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` only if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``final`` is
    left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder next to ``final``; swap it in whole only if the block succeeds.

    The previous ``final`` (if any) is moved aside, the staging folder renamed onto ``final``, then the
    old one removed. On any exception the staging folder is removed and ``final`` is left as it was.
    """
    final = Path(final)
    tmp, old = final.with_name(f".{final.name}.tmp"), final.with_name(f".{final.name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` to parquet atomically (zstd); returns the final path."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, compression="zstd")
    return Path(path)


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``obj`` as indented JSON atomically; returns the final path."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    return json.loads(path.read_text(encoding="utf-8"))


class RunDir:
    """A run directory: typed access to its tables, manifest and summary.

    Args:
        path: the folder; created on first write.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def tables_dir(self) -> Path:
        return self.path / "tables"

    @property
    def ground_truth_dir(self) -> Path:
        return self.path / "ground_truth"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    def table_path(self, name: str) -> Path:
        return self.tables_dir / f"{name}.parquet"

    # ---- tagging
    @property
    def handbook(self) -> Path:
        """The User Interest Handbook (``tagllm tag handbook``)."""
        return self.path / "handbook.yaml"

    @property
    def tag_vocab(self) -> Path:
        """Tag text -> integer id for the whole run (append-only; features, ranking and serving share it)."""
        return self.path / "tag_vocab.json"

    @property
    def teacher_dir(self) -> Path:
        """Teacher run logs (``<table>.log.jsonl``), summaries and batch request files."""
        return self.path / "teacher"

    def teacher_log(self, table: str) -> Path:
        return self.teacher_dir / f"{table}.log.jsonl"

    def teacher_summary(self, table: str) -> Path:
        return self.teacher_dir / f"{table}.summary.json"

    @property
    def teacher_requests(self) -> Path:
        """The batch request file ``tagllm tag export-requests`` writes by default."""
        return self.teacher_dir / "requests.jsonl"

    @property
    def teacher_cache(self) -> Path:
        """The teacher result cache (SQLite; successful results only)."""
        return self.path / "cache" / "teacher_cache.sqlite"

    @property
    def student_dir(self) -> Path:
        return self.path / "student"

    @property
    def student_model(self) -> Path:
        """The exported student (a model folder: ``tagging.student`` names the files inside)."""
        return self.student_dir / "model"

    @property
    def student_work(self) -> Path:
        """The student's training state (split, checkpoints, tokenizer): what a resumed ``tag distill``
        reads. The exported model is a sub-folder of it (:attr:`student_model`)."""
        return self.student_dir

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def student_report_dir(self) -> Path:
        """``tagllm tag report``'s default output folder."""
        return self.eval_dir / "student_report"

    # ---- features (Feast)
    @property
    def features_dir(self) -> Path:
        """The Feast offline sources (``feature_repo/`` reads them from here)."""
        return self.path / "features"

    def feature_table(self, name: str) -> Path:
        """A Feast source table, e.g. ``note_tags``, ``note_stats``, ``user_interests``."""
        return self.features_dir / f"{name}.parquet"

    @property
    def features_tag_vocab(self) -> Path:
        """The vocabulary the feature tables' tag ids refer to (a snapshot of :attr:`tag_vocab`)."""
        return self.features_dir / "tag_vocab.json"

    @property
    def feast_dir(self) -> Path:
        return self.path / "feast"

    @property
    def feast_registry(self) -> Path:
        """The Feast registry of the SQLite flavour (:meth:`feast_registry_for` names both)."""
        return self.feast_registry_for("sqlite")

    def feast_registry_for(self, online: str) -> Path:
        """The Feast registry of the ``online`` flavour ("sqlite" or "redis"). The stock ``feast`` CLI
        reads the same paths from ``feature_repo/feature_store*.yaml`` (a test checks they agree)."""
        return self.feast_dir / ("registry.db" if online == "sqlite" else "registry.redis.db")

    @property
    def feast_online_store(self) -> Path:
        """The SQLite online store (the Redis store lives in Redis)."""
        return self.feast_dir / "online_store.db"

    # ---- serving
    @property
    def serving_dir(self) -> Path:
        return self.path / "serving"

    @property
    def journal(self) -> Path:
        """The TagNotes journal: every accepted fresh note, fsync'd before the reply (:mod:`serving.journal`)."""
        return self.serving_dir / "tagnotes.journal"

    # ---- ranking
    @property
    def retrieval_dir(self) -> Path:
        return self.path / "retrieval"

    @property
    def retrieval_model(self) -> Path:
        return self.retrieval_dir / "model.pt"

    @property
    def retrieval_evaluation(self) -> Path:
        return self.retrieval_dir / "evaluation.parquet"

    @property
    def item_embeddings(self) -> Path:
        return self.retrieval_dir / "item_embeddings.parquet"

    @property
    def retrieval_summary(self) -> Path:
        return self.retrieval_dir / "summary.json"

    @property
    def ranker_dir(self) -> Path:
        return self.path / "ranker"

    @property
    def ranker_model(self) -> Path:
        return self.ranker_dir / "model.txt"

    @property
    def ranker_summary(self) -> Path:
        return self.ranker_dir / "summary.json"

    # ---- experiments
    @property
    def simulation_dir(self) -> Path:
        """The simulated A/B experiment's default output folder."""
        return self.path / "ab_sim"

    def has_table(self, name: str) -> bool:
        return self.table_path(name).exists()

    def require(self) -> RunDir:
        """Raise NotFoundError unless this is a prepared run directory."""
        if not self.manifest_path.exists():
            raise NotFoundError(
                f"{self.path} is not a prepared run directory (no manifest.json); "
                f"create one with `tagllm data prepare --out {self.path}`"
            )
        return self

    def manifest(self) -> dict[str, Any]:
        self.require()
        return dict(read_json(self.manifest_path))

    def read_table(self, name: str, *, check: bool = True) -> pd.DataFrame:
        """Read a canonical table; validates it against its schema unless ``check`` is False.

        Raises:
            NotFoundError: the table was not produced for this run.
            SchemaError: the stored table does not match its schema.
        """
        path = self.table_path(name)
        if not path.exists():
            have = [p.stem for p in sorted(self.tables_dir.glob("*.parquet"))]
            raise NotFoundError(
                f"table {name!r} not found in {self.tables_dir} (present: {', '.join(have) or 'none'})"
            )
        df = pd.read_parquet(path)
        return validate(name, df) if check and name in TABLE_NAMES else df

    def ground_truth_path(self, name: str) -> Path:
        return self.ground_truth_dir / f"{name}.parquet"

    def read_ground_truth(self, name: str) -> pd.DataFrame:
        path = self.ground_truth_path(name)
        if not path.exists():
            raise NotFoundError(f"ground truth {name!r} not found in {self.ground_truth_dir}")
        return pd.read_parquet(path)

    def write_tables(self, tables: Mapping[str, pd.DataFrame], *, subdir: str = "tables") -> None:
        """Replace ``subdir`` with exactly ``tables``, all or nothing.

        The tables are written into a staging folder first; only when every file is complete is the
        staging folder swapped in. An interrupted call leaves the previous folder untouched.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / subdir
        staging = Path(tempfile.mkdtemp(prefix=f".{subdir}.staging.", dir=self.path))
        try:
            for name, df in tables.items():
                write_parquet(df, staging / f"{name}.parquet")
            old = None
            if target.exists():
                old = self.path / f".{subdir}.old.{os.getpid()}"
                os.replace(target, old)
            os.replace(staging, target)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        write_json(dict(manifest), self.manifest_path)

    def summary(self) -> dict[str, Any]:
        return dict(read_json(self.summary_path)) if self.summary_path.exists() else {}

    def update_summary(self, section: str, figures: Mapping[str, Any]) -> dict[str, Any]:
        """Set one section of summary.json (atomically) and return the whole summary."""
        summary = self.summary()
        summary[section] = dict(figures)
        write_json(summary, self.summary_path)
        return summary
