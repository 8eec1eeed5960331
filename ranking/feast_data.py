"""Feast point-in-time training inputs (``feature_source="feast"``): the user tower's tag bag (``u_tags``)
comes from the run's Feast store instead of the parquet history — ``FeatureClient(run).training_set(labels, service="retrieval")``, a
point-in-time join that picks each user's latest daily ``user_interests`` snapshot with
``event_timestamp <= t`` (snapshots are stamped at the end of a day, so a label at ``t`` sees the
snapshot of the last engagement day before ``t``'s day). Its ``top_tag_ids`` are Feast vocabulary ids
(RUN/features/tag_vocab.json); :meth:`FeastInterests.bags` maps them to a catalog's ids through the
tag texts. The other user bags (user id, history notes, their categories) stay history-based.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.errors import NotFoundError
from features.io import RunDir
from features.vocab import TagVocabulary
from ranking.data import Examples, NoteCatalog, RunData, UserTagBags, build_training_examples

__all__ = ["FeastInterests", "feast_training_examples", "feast_user_interests", "require_feast_store"]

log = logging.getLogger(__name__)


def feast_training_examples(
    run: RunDir,
    data: RunData,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    positive_events: Sequence[str] = ("click",),
    history_len: int = 30,
) -> Examples:
    """:func:`~ranking.data.build_training_examples` with each example's user tag bag from Feast.

    The labels (user_id, note_id, event_timestamp) go through
    ``FeatureClient(run).training_set(labels, service="retrieval")`` and each example's user tag bag
    is the point-in-time ``user_interests`` row (top_tag_ids/top_tag_weights, mapped to the catalog's
    ids, see :func:`feast_user_interests`); the history (user id, notes, categories) stays
    parquet-based. The item side is a pure function of the note, so :class:`NoteCatalog` stays as is.

    Args:
        run: the run directory whose Feast store to read.
        data: the same run's data (``load_run_data(run, tag_source)``).
        start_s, end_s, positive_events, history_len: as :func:`~ranking.data.build_training_examples`.

    Raises:
        NotFoundError: the run has no Feast store; no positives.
    """
    require_feast_store(run)
    ex = build_training_examples(
        data, start_s=start_s, end_s=end_s, positive_events=positive_events, history_len=history_len
    )
    interests = feast_user_interests(run, data, ex.user, ex.ts, ex.note)
    return ex.with_user_tags(interests.bags(data.catalog)[0])


def require_feast_store(run: RunDir) -> RunDir:
    """Check that ``run`` has its own applied Feast store with the ``user_interests`` source.

    Raises:
        NotFoundError: naming the missing paths and the commands that create them.
    """
    needed = [
        run.feast_registry,
        run.feature_table("user_interests"),
        run.features_tag_vocab,
    ]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise NotFoundError(
            f"feature_source='feast': the run has no Feast store ({', '.join(missing)} not found); "
            f"run `tagllm features apply --run {run.path}` then `tagllm features materialize --run "
            f"{run.path}` (the demo's `features` stage does both), or use feature_source='parquet'"
        )
    return run


@dataclass(frozen=True)
class FeastInterests:
    """Point-in-time ``user_interests`` (top_tag_ids, top_tag_weights) per example, in Feast ids.

    Attributes:
        ptr: (B+1,) CSR offsets into ``ids`` / ``weight``.
        ids: (T,) Feast tag ids (RUN/features/tag_vocab.json; 0 = padding).
        weight: (T,) time-decayed interest weights.
        feast_texts: Feast tag id -> tag text.
        rows_without_snapshot: rows with no snapshot valid at label time (null: empty bag).
        seconds: wall time of the Feast training-set call.
    """

    ptr: np.ndarray
    ids: np.ndarray
    weight: np.ndarray
    feast_texts: Mapping[int, str]
    rows_without_snapshot: int
    seconds: float

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def bags(self, catalog: NoteCatalog) -> tuple[UserTagBags, dict[str, Any]]:
        """Map the Feast ids onto ``catalog``'s tag ids through the tag texts (the two vocabularies
        differ); ids whose text the catalog lacks are dropped and counted.

        Returns:
            (the bags, figures: tag entries, dropped entries, rows without a snapshot, empty bags).
        """
        size = max(max(self.feast_texts, default=0), int(self.ids.max()) if len(self.ids) else 0) + 1
        lut = np.zeros(size, np.int64)
        for fid, text in self.feast_texts.items():
            lut[fid] = catalog.vocab.get(text, 0)
        vals = lut[self.ids]
        keep = vals > 0
        row = np.repeat(np.arange(len(self)), np.diff(self.ptr))
        lens = np.bincount(row[keep], minlength=len(self)).astype(np.int64)
        bags = UserTagBags(
            np.concatenate([[0], np.cumsum(lens)]).astype(np.int64), vals[keep], self.weight[keep]
        )
        dropped = int((~keep).sum())
        if dropped:
            log.warning(
                "feast user_interests: %d of %d tag entries have no id in the %s catalog: dropped",
                dropped,
                len(vals),
                catalog.tag_source,
            )
        figures = {
            "tag_entries": len(vals),
            "dropped_not_in_catalog": dropped,
            "rows_without_snapshot": self.rows_without_snapshot,
            "empty_bags": int((lens == 0).sum()),
        }
        return bags, figures


def feast_user_interests(
    run: RunDir,
    data: RunData,
    users: np.ndarray,
    ts: np.ndarray,
    notes: np.ndarray | None = None,
    *,
    client: Any = None,
) -> FeastInterests:
    """The Feast point-in-time ``user_interests`` row for each (user, ts) label.

    With ``notes`` (every entry >= 0) the labels carry note_id and go through the ``retrieval``
    FeatureService (as training labels do); without, only the two user_interests features are asked
    for (user-only rows, e.g. test users at the cutoff).

    Args:
        run: the run directory whose Feast store to read (imports feast: seconds).
        data: the run data (maps indices to ids).
        users: (B,) user indices.
        ts: (B,) label times, epoch seconds.
        notes: optional (B,) note indices.
        client: an open ``features.client.FeatureClient`` of this run (default: one is opened).

    Raises:
        NotFoundError: the run has no Feast store.
    """
    run = require_feast_store(run)
    labels = pd.DataFrame(
        {
            "user_id": data.user_ids[users],
            # Whole microseconds (Feast's offline store casts to us), rounded down: never later than t.
            "event_timestamp": pd.to_datetime(
                np.floor(np.asarray(ts, dtype=float) * 1e6).astype(np.int64), unit="us", utc=True
            ),
        }
    )
    with_notes = notes is not None and len(notes) > 0 and bool((np.asarray(notes) >= 0).all())
    if with_notes:
        labels.insert(1, "note_id", data.catalog.note_ids[np.asarray(notes)])
    own = client is None
    if own:
        from features.client import FeatureClient

        client = FeatureClient(run.path)
    try:
        t0 = time.perf_counter()
        if with_notes:
            df = client.training_set(labels, service="retrieval")
        else:
            df = client.training_set(
                labels, features=["user_interests:top_tag_ids", "user_interests:top_tag_weights"]
            )
        seconds = time.perf_counter() - t0
    finally:
        if own:
            client.close()
    ids_col = df["top_tag_ids"].tolist()
    w_col = df["top_tag_weights"].tolist()
    present = [x is not None and not (isinstance(x, float) and np.isnan(x)) for x in ids_col]
    lens = np.array([len(x) if p else 0 for x, p in zip(ids_col, present, strict=True)], np.int64)
    flat_ids = [int(i) for x, p in zip(ids_col, present, strict=True) if p for i in x]
    flat_w = [float(v) for x, p in zip(w_col, present, strict=True) if p for v in x]
    vocab = TagVocabulary.load(run.features_tag_vocab)
    log.info(
        "feast retrieval training set: %d rows in %.2f s (%.0f rows/s)",
        len(df),
        seconds,
        len(df) / max(seconds, 1e-9),
    )
    return FeastInterests(
        ptr=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
        ids=np.array(flat_ids, np.int64),
        weight=np.array(flat_w, np.float32),
        feast_texts={int(i): str(t) for t, i in vocab.items()},
        rows_without_snapshot=int(len(present) - sum(present)),
        seconds=seconds,
    )
