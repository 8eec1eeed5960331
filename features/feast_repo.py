"""Apply, materialize and push: thin wrappers over Feast for one run directory.

The Feast repo (``feature_repo/``) holds declarations and two configs (SQLite, Redis) whose paths all
sit under ``$TAGLLM_RUN_DIR``; these wrappers set that variable (and ``TAGLLM_REDIS``) for the duration
of each call, so the stock ``feast`` CLI and this module see the same repo::

    RUN_DIR/features/{note_tags,note_stats,user_interests}.parquet   offline sources (duckdb reads them)
    RUN_DIR/features/tag_vocab.json                                   tag ids used (0 = padding)
    RUN_DIR/feast/registry.db, online_store.db                        SQLite flavour
    RUN_DIR/feast/registry.redis.db                                   Redis flavour (data in redis-server)

``import feast`` takes seconds: it happens inside the functions here, never at import time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from features.compute import FeatureConfig, FeatureTables, compute_feature_tables
from features.errors import ConfigError, MissingDependencyError, NotFoundError
from features.io import RunDir

if TYPE_CHECKING:
    from feast import FeatureStore

__all__ = [
    "FEATURE_REPO",
    "FEATURE_VIEWS",
    "FeastSettings",
    "OnlineStoreKind",
    "apply",
    "feature_stage",
    "materialize",
    "open_store",
    "push_note_tags",
    "write_feature_tables",
]

log = logging.getLogger(__name__)

FEATURE_REPO = Path(
    os.environ.get("TAGLLM_FEATURE_REPO") or Path(__file__).resolve().parents[1] / "feature_repo"
)
FEATURE_VIEWS = ("note_tags", "note_stats", "user_interests")
PUSH_SOURCE = "note_tags_push"
OnlineStoreKind = Literal["sqlite", "redis"]
ONLINE_STORES: tuple[str, ...] = ("sqlite", "redis")

# Parquet types of the list columns, matching the Feast schema (Array(Float32) etc.).
_ARROW_LISTS = {
    "tag_texts": "string",
    "tag_ids": "int64",
    "tag_dimensions": "string",
    "tag_confidences": "float32",
    "top_tags": "string",
    "top_tag_ids": "int64",
    "top_tag_weights": "float32",
    "top_dimensions": "string",
    "top_dimension_weights": "float32",
}


@dataclass(frozen=True)
class FeastSettings:
    """Which run and which online store.

    Args:
        run_dir: the run directory (made absolute).
        online: ``sqlite`` (default; RUN_DIR/feast/online_store.db) or ``redis``.
        redis: ``HOST:PORT`` of a redis-server (required with ``online="redis"``).
    """

    run_dir: Path
    online: OnlineStoreKind = "sqlite"
    redis: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir).resolve())
        if self.online not in ONLINE_STORES:
            raise ConfigError(f"online: got {self.online!r}; expected one of {', '.join(ONLINE_STORES)}")
        if self.online == "redis" and not self.redis:
            raise ConfigError("redis: required with online='redis'; expected HOST:PORT (e.g. 127.0.0.1:6379)")

    @property
    def yaml_path(self) -> Path:
        name = "feature_store.yaml" if self.online == "sqlite" else "feature_store.redis.yaml"
        return FEATURE_REPO / name

    @property
    def features_dir(self) -> Path:
        return RunDir(self.run_dir).features_dir

    @property
    def feast_dir(self) -> Path:
        return RunDir(self.run_dir).feast_dir

    @property
    def sqlite_path(self) -> Path:
        return RunDir(self.run_dir).feast_online_store

    @property
    def registry(self) -> Path:
        """This flavour's Feast registry file."""
        return RunDir(self.run_dir).feast_registry_for(self.online)

    def env(self) -> dict[str, str]:
        env = {"TAGLLM_RUN_DIR": str(self.run_dir)}
        if self.redis:
            env["TAGLLM_REDIS"] = self.redis
        return env


@contextlib.contextmanager
def _feast_env(settings: FeastSettings) -> Iterator[None]:
    """Set the variables feature_repo/ reads, restoring the previous values afterwards."""
    old = {k: os.environ.get(k) for k in settings.env()}
    os.environ.update(settings.env())
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _import_feast() -> Any:
    try:
        import feast
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependencyError("feast", "serve", "Feast features") from exc
    return feast


def open_store(settings: FeastSettings) -> FeatureStore:
    """A ``FeatureStore`` over feature_repo/ with this run's paths (imports feast: seconds)."""
    feast = _import_feast()
    with _feast_env(settings):
        return feast.FeatureStore(repo_path=str(FEATURE_REPO), fs_yaml_file=settings.yaml_path)


def _definitions(settings: FeastSettings) -> list[Any]:
    """Import feature_repo/definitions.py afresh (its paths depend on TAGLLM_RUN_DIR) and return its
    Feast objects, as `feast apply` would collect them."""
    feast = _import_feast()
    kinds = (feast.Entity, feast.FeatureView, feast.FeatureService, feast.PushSource, feast.FileSource)
    path = FEATURE_REPO / "definitions.py"
    spec = importlib.util.spec_from_file_location(f"_tagllm_feature_repo_{time.monotonic_ns()}", path)
    if spec is None or spec.loader is None:  # pragma: no cover - file is part of the checkout
        raise NotFoundError(f"{path}: cannot load the Feast declarations")
    module = importlib.util.module_from_spec(spec)
    with _feast_env(settings):
        spec.loader.exec_module(module)
    return [v for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, kinds)]


def write_feature_tables(run_dir: str | Path, config: FeatureConfig | None = None) -> FeatureTables:
    """Compute the feature tables and write them (atomically) to RUN_DIR/features/."""
    import pyarrow as pa

    tables = compute_feature_tables(run_dir, config)
    run = RunDir(Path(run_dir).resolve())
    for name, df in tables.as_dict().items():
        arrow = pa.Table.from_pandas(df, preserve_index=False)
        for col, typ in _ARROW_LISTS.items():
            if col in arrow.column_names:
                idx = arrow.column_names.index(col)
                arrow = arrow.set_column(idx, col, arrow.column(col).cast(pa.list_(pa.type_for_alias(typ))))
        from features.io import atomic_path

        with atomic_path(run.feature_table(name)) as tmp:
            import pyarrow.parquet as pq

            pq.write_table(arrow, tmp, compression="zstd")
    tables.vocab.save(run.features_tag_vocab)
    return tables


def _enable_wal(path: Path) -> None:
    # WAL lets readers run while materialize/push write (no SQLITE_BUSY, each read is a snapshot).
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def apply(
    settings: FeastSettings, *, compute: bool = True, config: FeatureConfig | None = None
) -> dict[str, Any]:
    """Compute feature tables (unless ``compute`` is False) and `feast apply` the repo.

    Raises:
        NotFoundError: the run directory or its tables/tags are missing.
    """
    run = RunDir(settings.run_dir).require()
    t0 = time.perf_counter()
    figures: dict[str, Any] = {}
    if compute:
        tables = write_feature_tables(run.path, config)
        figures.update(tables.figures)
    else:
        missing = [v for v in FEATURE_VIEWS if not (settings.features_dir / f"{v}.parquet").exists()]
        if missing:
            raise NotFoundError(
                f"feature tables {', '.join(missing)} not found in {settings.features_dir}; "
                "run `tagllm features apply` without --no-compute first"
            )
    t1 = time.perf_counter()
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    objects = _definitions(settings)
    store = open_store(settings)
    with _feast_env(settings):
        store.apply(objects)
    if settings.online == "sqlite":
        _enable_wal(settings.sqlite_path)
    figures.update(
        {
            "online_store": settings.online,
            "objects": len(objects),
            "compute_seconds": round(t1 - t0, 3),
            "apply_seconds": round(time.perf_counter() - t1, 3),
        }
    )
    return figures


def _event_range(settings: FeastSettings) -> tuple[datetime, datetime]:
    import pyarrow.parquet as pq

    lo: datetime | None = None
    for view in FEATURE_VIEWS:
        path = settings.features_dir / f"{view}.parquet"
        if not path.exists():
            raise NotFoundError(
                f"{path} not found; run `tagllm features apply --run {settings.run_dir}` first"
            )
        col = pq.read_table(path, columns=["event_timestamp"]).column(0)
        if len(col):
            first = pd.Timestamp(col.to_pandas().min()).to_pydatetime()
            lo = first if lo is None else min(lo, first)
    now = datetime.now(UTC)
    return (lo or now) - timedelta(seconds=1), now + timedelta(seconds=1)


def materialize(
    settings: FeastSettings,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    views: list[str] | None = None,
    store: FeatureStore | None = None,
) -> dict[str, Any]:
    """Load the latest row per entity with event time in [start, end] into the online store.

    Defaults cover every row of the feature tables (their first event time until now).
    """
    lo, hi = _event_range(settings)
    start, end = start or lo, end or hi
    bad = [v for v in views or [] if v not in FEATURE_VIEWS]
    if bad:
        raise ConfigError(f"views: got {bad!r}; expected some of {', '.join(FEATURE_VIEWS)}")
    store = store or open_store(settings)
    t0 = time.perf_counter()
    with _feast_env(settings):
        store.materialize(start_date=start, end_date=end, feature_views=views or list(FEATURE_VIEWS))
    return {
        "online_store": settings.online,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "views": views or list(FEATURE_VIEWS),
        "materialize_seconds": round(time.perf_counter() - t0, 3),
    }


def note_tags_frame(records: list[Mapping[str, Any]], vocab: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Rows for the ``note_tags_push`` source from ``{note_id, tags: [{text, dimension, confidence}],
    tagger_version, created_at?}`` records (tag ids from ``vocab``; unknown texts map to 0)."""
    now = pd.Timestamp.now(tz="UTC")
    rows = []
    for i, r in enumerate(records):
        for key in ("note_id", "tags", "tagger_version"):
            if key not in r:
                raise ConfigError(f"records[{i}]: missing {key!r}; expected note_id, tags, tagger_version")
        tags = list(r["tags"])
        texts = [str(t["text"]) for t in tags]
        rows.append(
            {
                "note_id": str(r["note_id"]),
                "event_timestamp": pd.Timestamp(r.get("created_at") or now),
                "created": now,
                "tag_texts": texts,
                "tag_ids": [int((vocab or {}).get(t, 0)) for t in texts],
                "tag_dimensions": [str(t["dimension"]) for t in tags],
                "tag_confidences": [float(t["confidence"]) for t in tags],
                "tagger_version": str(r["tagger_version"]),
                "n_tags": len(texts),
            }
        )
    return pd.DataFrame(rows)


def push_note_tags(store: FeatureStore, frame: pd.DataFrame) -> None:
    """Write fresh note tags (a :func:`note_tags_frame`) straight to the online store."""
    from feast.data_source import PushMode

    store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)


def feature_stage(run_dir: str | Path) -> dict[str, Any]:
    """The demo stage: compute + apply + materialize into SQLite; writes summary.json ``features``.

    Returns:
        Headline figures: rows per feature table, vocabulary, seconds per step, online rows.
    """
    t0 = time.perf_counter()
    settings = FeastSettings(Path(run_dir))
    figures = apply(settings)
    figures.update(materialize(settings))
    with contextlib.closing(sqlite3.connect(settings.sqlite_path)) as conn:
        figures["online_entities"] = {
            v: conn.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "tagllm_{v}"').fetchone()[0]
            for v in FEATURE_VIEWS
        }
    figures["seconds"] = round(time.perf_counter() - t0, 3)
    for k in ("start", "end", "views"):
        figures.pop(k, None)
    RunDir(run_dir).update_summary("features", figures)
    return figures
