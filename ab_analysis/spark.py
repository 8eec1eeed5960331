"""The Spark engine of :mod:`ab_analysis.sql`: the same query text through Spark SQL (pyspark, lazy import).

Events are read with ``spark.read.parquet`` over the same files or glob; a pandas assignments table is
written to a temporary parquet file first (Spark reads it like the events; microsecond timestamps, since
Spark rejects parquet nanosecond timestamps). The session is ``local[1]`` unless the caller passes one
(``EngineConfig(engine="spark", spark=session)``); a session started here is stopped afterwards.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ab_analysis.errors import ABAnalysisError, InvalidArgumentError
from ab_analysis.sql import (
    ASSIGNMENTS,
    COLD_NOTES,
    EVENTS,
    SPARK,
    AssignmentsInput,
    EngineConfig,
    engine_error,
    resolve_events,
    type_family,
)

__all__ = ["SparkEngine", "local_session", "open_spark"]


class SparkEngine:
    """Spark SQL over temporary views; parameters bound by name (``:name``)."""

    dialect = SPARK

    def __init__(self, spark: Any) -> None:
        self.spark = spark

    def columns(self, table: str) -> dict[str, str]:
        return {name: type_family(t) for name, t in self.spark.table(table).dtypes}

    def fetch(self, sql: str, params: Mapping[str, object]) -> list[dict[str, Any]]:
        from py4j.protocol import Py4JJavaError
        from pyspark.errors import PySparkException

        try:
            df = self.spark.sql(sql, args=dict(params)) if params else self.spark.sql(sql)
            return [r.asDict() for r in df.collect()]
        except (PySparkException, Py4JJavaError) as exc:  # one line, not a JVM trace
            raise engine_error("spark", exc) from None


def local_session(
    master: str = "local[1]", driver_memory: str = "1g", conf: Mapping[str, str] | None = None
) -> Any:
    """A small local ``SparkSession`` (no UI or progress bar, UTC, few shuffle partitions).

    Args:
        master: Spark master URL.
        driver_memory: driver JVM heap.
        conf: more Spark settings (e.g. ``{"spark.sql.codegen.wholeStage": "false"}`` for tiny test data,
            where compiling generated code costs more than it saves).

    Raises:
        ABAnalysisError: pyspark is not installed (names the extra to install).
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ABAnalysisError(
            "engine='spark' needs pyspark (and Java 17+): pip install 'tagllm[spark]'"
        ) from None
    builder = (
        SparkSession.builder.master(master)
        .appName("ab_analysis.sql")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
    )
    for k, v in (conf or {}).items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


def _write_parquet(df: pd.DataFrame, path: Path) -> str:
    df.to_parquet(path, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    return str(path)


def _read(spark: Any, files: list[str], what: str) -> Any:
    from pyspark.errors import AnalysisException

    try:
        return spark.read.parquet(*files)
    except AnalysisException as exc:
        raise InvalidArgumentError(
            what, files[0] if len(files) == 1 else files, f"readable parquet ({exc})"
        ) from None


@contextlib.contextmanager
def open_spark(
    cfg: EngineConfig, files: list[str], assignments: AssignmentsInput, cold_notes: list[object] | None
) -> Iterator[SparkEngine]:
    """A :class:`SparkEngine` with the views ``ab_events``, ``ab_assignments`` (and ``ab_cold_notes``)."""
    own = cfg.spark is None
    spark = local_session(cfg.spark_master, cfg.spark_driver_memory) if own else cfg.spark
    views = [EVENTS, ASSIGNMENTS, COLD_NOTES]
    try:
        with tempfile.TemporaryDirectory(prefix="ab-sql-spark-") as tmp:
            _read(spark, files, "events").createOrReplaceTempView(EVENTS)
            if isinstance(assignments, pd.DataFrame):
                af = [_write_parquet(assignments, Path(tmp) / "assignments.parquet")]
            else:
                af = resolve_events(assignments)
                if any(f.endswith(".csv") for f in af):
                    raise InvalidArgumentError(
                        "assignments", str(assignments), "parquet or a DataFrame for engine='spark'"
                    )
            _read(spark, af, "assignments").createOrReplaceTempView(ASSIGNMENTS)
            if cold_notes is not None:
                path = _write_parquet(pd.DataFrame({"note_id": cold_notes}), Path(tmp) / "cold.parquet")
                spark.read.parquet(path).createOrReplaceTempView(COLD_NOTES)
            yield SparkEngine(spark)
    finally:
        for v in views:
            spark.catalog.dropTempView(v)
        if own:
            spark.stop()
