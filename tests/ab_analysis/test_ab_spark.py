"""The same SQL on Spark (pyspark, local[1]): equal to duckdb and to the in-memory event path.

One module-scoped SparkSession (~15 s to start); the data are small so the whole module stays under a
minute. Skipped only when pyspark or a Java runtime is missing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ab_analysis.analysis import analyze_events
from ab_analysis.errors import InvalidArgumentError, MissingColumnError
from ab_analysis.metrics import default_metrics
from ab_analysis.sql import EngineConfig, analyze_sql
from tests.ab_analysis.test_ab_sql import (
    assert_same_report,
    make_logs,
    metrics_with_cuped,
    write_parts,
)

pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'tagllm[spark]')")
if shutil.which("java") is None:
    pytest.skip("no Java runtime on PATH: Spark needs Java 17+", allow_module_level=True)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from ab_analysis.spark import local_session

    conf = {  # tiny data: JIT and codegen warm-up dominate, so compile less
        "spark.sql.shuffle.partitions": "1",
        "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
        "spark.sql.codegen.wholeStage": "false",
    }
    session = local_session("local[1]", "1g", conf)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    events, assignments = make_logs(n_users=500, seed=11)
    return events, assignments, write_parts(events, tmp_path_factory.mktemp("spark-events"))


def test_spark_equals_duckdb_and_in_memory(spark: Any, logs: tuple[pd.DataFrame, pd.DataFrame, str]) -> None:
    events, assignments, glob = logs
    kw: dict[str, Any] = {"experiment": "tags", "cold_start_notes": range(10), "segments": ["user_type"]}
    mdefs = metrics_with_cuped()
    sp = analyze_sql(glob, assignments, mdefs, engine=EngineConfig("spark", spark=spark), **kw)
    dk = analyze_sql(glob, assignments, mdefs, engine="duckdb", **kw)
    mem = analyze_events(events, assignments, mdefs, **kw)
    assert_same_report(sp, dk)
    assert_same_report(sp, mem, daily_looks=True)
    assert sp.metadata is not None and mem.metadata is not None
    assert (
        sp.metadata["engine"] == "spark" and sp.metadata["dropped_events"] == mem.metadata["dropped_events"]
    )
    assert sp.result("view_duration_per_user").capped_at is not None
    assert sp.result("ctr_cuped").result.theta != 0


def test_spark_three_arms_and_cold_column(spark: Any, tmp_path: Path) -> None:
    events, assignments = make_logs(n_users=450, arms=("control", "t1", "t2"), seed=12)
    glob = write_parts(events, tmp_path / "three", parts=2)
    mdefs = default_metrics()  # cold start from the events' is_cold_start column here
    kw: dict[str, Any] = {"treatment": ("t1", "t2"), "experiment": "tags"}
    sp = analyze_sql(glob, assignments, mdefs, engine=EngineConfig("spark", spark=spark), **kw)
    assert_same_report(sp, analyze_sql(glob, assignments, mdefs, **kw))
    assert_same_report(sp, analyze_events(events, assignments, mdefs, **kw), daily_looks=True)
    assert sp.arms == ("control", "t1", "t2")


def test_spark_errors(spark: Any, logs: tuple[pd.DataFrame, pd.DataFrame, str], tmp_path: Path) -> None:
    _, assignments, glob = logs
    cfg = EngineConfig("spark", spark=spark)
    with pytest.raises(MissingColumnError, match=r"assignments table: column 'tier'.*'platform'"):
        analyze_sql(glob, assignments, engine=cfg, experiment="tags", segments=["tier"])
    with pytest.raises(InvalidArgumentError, match=r"empty/\*\.parquet"):
        analyze_sql(str(tmp_path / "empty" / "*.parquet"), assignments, engine=cfg, experiment="tags")
    assert spark.catalog.listTables() == [] or all(t.name != "ab_events" for t in spark.catalog.listTables())
