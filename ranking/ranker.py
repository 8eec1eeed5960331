"""LightGBM ranker on tag-match features, note stats and the retrieval score.

Examples are impressions (label 1 when the user clicked the note within ``label_window_s`` after
it); for runs without impressions (MovieLens) each positive gets ``negatives`` random notes that
existed at its time. Every feature is point-in-time: user profiles and note stats count events
strictly before the example's timestamp.

Features (:data:`FEATURES`; :data:`TAG_FEATURES` are the ones that need tags):

- tag_overlap, tag_weighted, tag_jaccard: the note's tags vs the user's engagement-weighted tag
  profile (count, profile weight x note confidence, Jaccard);
- dim_overlap, dim_weighted, dim_match_share: per-dimension matches — the note's dimensions present
  in the user's dimension profile, their weight, and the share of the note's dimensions where a tag
  matches;
- cat_affinity: the user's share of engagement in the note's category;
- note_impressions, note_clicks, note_ctr, note_age_days, note_n_tags: note stats;
- user_history: engagements in the user's window;
- retrieval_score: two-tower user . item (when a retrieval model is given).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.errors import ConfigError, NotFoundError
from ranking.data import Examples, NoteCatalog, RunData, ragged_gather, user_states

__all__ = [
    "FEATURES",
    "TAG_FEATURES",
    "Ranker",
    "RankerConfig",
    "feature_columns",
    "ranker_features",
    "ranking_examples",
    "train_ranker",
]

log = logging.getLogger(__name__)

TAG_FEATURES = (
    "tag_overlap",
    "tag_weighted",
    "tag_jaccard",
    "dim_overlap",
    "dim_weighted",
    "dim_match_share",
)
FEATURES = (
    *TAG_FEATURES,
    "cat_affinity",
    "note_impressions",
    "note_clicks",
    "note_ctr",
    "note_age_days",
    "note_n_tags",
    "user_history",
    "retrieval_score",
)
OBJECTIVES = ("binary", "lambdarank")


@dataclass(frozen=True)
class RankerConfig:
    """Ranker data and LightGBM settings.

    Args:
        objective: ``binary`` (CTR) or ``lambdarank`` (groups = user x day).
        n_estimators: boosting rounds.
        learning_rate: shrinkage.
        num_leaves: leaves per tree.
        window_days: training examples come from this many days before the cutoff.
        history_len: engagements in a user's profile.
        label_window_s: a click within this many seconds after an impression labels it 1.
        negatives: random negatives per positive when the run has no impressions.
        max_examples: subsample training examples to at most this many (0 = all).
        seed: sampling and LightGBM seed.
    """

    objective: str = "binary"
    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    window_days: float = 14.0
    history_len: int = 50
    label_window_s: float = 3600.0
    negatives: int = 4
    max_examples: int = 200_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective: got {self.objective!r}; expected one of {', '.join(OBJECTIVES)}")
        for name in ("n_estimators", "num_leaves", "history_len", "negatives"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)!r}; expected an integer >= 1")
        if not self.window_days > 0:
            raise ConfigError(f"window_days: got {self.window_days!r}; expected a number > 0")

    def lgb_params(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": 20,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "seed": self.seed,
            "num_threads": 1,
            "verbose": -1,
        }


def ranking_examples(
    data: RunData, start_s: float, end_s: float, config: RankerConfig | None = None
) -> Examples:
    """Labeled (user, note, ts) rows in ``[start_s, end_s)`` with point-in-time histories."""
    config = config or RankerConfig()
    rng = np.random.default_rng(config.seed)
    inter = data.interactions
    in_window = (inter.ts >= start_s) & (inter.ts < end_s)
    imp = inter.select(in_window & (inter.event == "impression"))
    if len(imp):
        clicks = inter.select(inter.event == "click")
        left = pd.DataFrame({"u": imp.user, "n": imp.note, "ts": imp.ts, "row": np.arange(len(imp))})
        right = pd.DataFrame({"u": clicks.user, "n": clicks.note, "ts": clicks.ts, "hit": 1.0})
        joined = pd.merge_asof(
            left.sort_values("ts"),
            right.sort_values("ts"),
            on="ts",
            by=["u", "n"],
            direction="forward",
            tolerance=config.label_window_s,
        ).sort_values("row")
        users, notes, ts = imp.user, imp.note, imp.ts
        label = joined["hit"].fillna(0.0).to_numpy(np.float32)
    else:
        pos = inter.select(in_window & (inter.weight > 0))
        if not len(pos):
            raise NotFoundError(
                "ranker: no impressions and no engagements in the training window (window_days)"
            )
        order = np.argsort(data.catalog.created_s)
        created_sorted = data.catalog.created_s[order]
        k = config.negatives
        n_avail = np.searchsorted(created_sorted, pos.ts, side="right")
        neg = order[(rng.random((len(pos), k)) * np.maximum(n_avail, 1)[:, None]).astype(np.int64)]
        users = np.concatenate([pos.user, np.repeat(pos.user, k)])
        notes = np.concatenate([pos.note, neg.ravel()])
        ts = np.concatenate([pos.ts, np.repeat(pos.ts, k)])
        label = np.concatenate([np.ones(len(pos)), np.zeros(len(pos) * k)]).astype(np.float32)
    rows = np.arange(len(users))
    if config.max_examples and len(rows) > config.max_examples:
        rows = np.sort(rng.choice(len(rows), config.max_examples, replace=False))
    return user_states(
        data, users[rows], ts[rows], history_len=config.history_len, label=label[rows], note=notes[rows]
    )


def _pair_keys(rows: np.ndarray, vals: np.ndarray, width: int) -> np.ndarray:
    return rows.astype(np.int64) * width + vals.astype(np.int64)


def _profile(
    rows: np.ndarray, vals: np.ndarray, w: np.ndarray, width: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique (row, val) keys with per-row normalized summed weights."""
    keys, inv = np.unique(_pair_keys(rows, vals, width), return_inverse=True)
    wsum = np.bincount(inv, weights=w)
    tot = np.bincount(keys // width, weights=wsum, minlength=n)
    return keys, wsum / np.where(tot[keys // width] > 0, tot[keys // width], 1.0)


def _lookup(keys: np.ndarray, weights: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(keys) == 0:
        return np.zeros(len(q), bool), np.zeros(len(q))
    idx = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    found = keys[idx] == q
    return found, np.where(found, weights[idx], 0.0)


def _note_counts(data: RunData, event: str, notes: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Events of ``event`` on each note strictly before ``ts``."""
    inter = data.interactions
    m = inter.event == event
    n, t = inter.note[m], inter.ts[m]
    order = np.lexsort((t, n))
    n, t = n[order], t[order]
    t0 = min(float(t.min()) if len(t) else 0.0, float(ts.min())) - 1.0
    span = int(np.ceil((max(float(t.max()) if len(t) else 0.0, float(ts.max())) - t0) * 1000)) + 2
    key = n * span + ((t - t0) * 1000).astype(np.int64)
    q = notes * span + ((ts - t0) * 1000).astype(np.int64)
    return (np.searchsorted(key, q, side="left") - np.searchsorted(key, notes * span, side="left")).astype(
        np.float64
    )


def ranker_features(
    data: RunData,
    ex: Examples,
    retrieval: Any = None,
    *,
    note_stats: tuple[np.ndarray, np.ndarray] | None = None,
    retrieval_scores: np.ndarray | None = None,
    shared_history: bool = False,
) -> pd.DataFrame:
    """One row of :data:`FEATURES` per example.

    Args:
        data: the run.
        ex: examples with point-in-time histories.
        retrieval: a RetrievalModel for ``retrieval_score`` (None and no ``retrieval_scores`` -> 0).
        note_stats: (impressions, clicks) per note index, already as of every example's time — the
            serving path keeps them live instead of counting the interaction log per request.
        retrieval_scores: (len(ex),) precomputed user . item scores (serving keeps embeddings).
        shared_history: every example belongs to one user at one time and ``ex`` carries that single
            history once (``hist_ptr`` of length 2): the profile is built once, not per candidate.
    """
    return pd.DataFrame(
        feature_columns(
            data,
            ex,
            retrieval,
            note_stats=note_stats,
            retrieval_scores=retrieval_scores,
            shared_history=shared_history,
        )
    )


def feature_columns(
    data: RunData,
    ex: Examples,
    retrieval: Any = None,
    *,
    note_stats: tuple[np.ndarray, np.ndarray] | None = None,
    retrieval_scores: np.ndarray | None = None,
    shared_history: bool = False,
) -> dict[str, np.ndarray]:
    """:func:`ranker_features` as a dict of (len(ex),) float arrays (no DataFrame: the serving path)."""
    c = data.catalog
    b = len(ex)
    notes = ex.note
    if (notes < 0).any():
        raise ConfigError("ranker_features: every example needs a note (note index >= 0)")
    if shared_history and len(ex.hist_ptr) != 2:
        raise ConfigError(
            f"shared_history: ex carries {len(ex.hist_ptr) - 1} histories; expected exactly one (hist_ptr of length 2)"
        )
    profiles = _profiles(c, ex, shared_history)
    matches, ntl = _match_columns(c, notes, profiles, b)
    if note_stats is not None:
        impressions = note_stats[0][notes].astype(np.float64)
        clicks = note_stats[1][notes].astype(np.float64)
    else:
        impressions = _note_counts(data, "impression", notes, ex.ts)
        clicks = _note_counts(data, "click", notes, ex.ts)
    score = _retrieval_score(ex, retrieval, retrieval_scores, shared_history)
    return {
        **matches,
        "note_impressions": impressions,
        "note_clicks": clicks,
        "note_ctr": (clicks + 0.5) / (impressions + 5.0),
        "note_age_days": (ex.ts - c.created_s[notes]) / 86400.0,
        "note_n_tags": ntl.astype(np.float64),
        "user_history": np.diff(ex.hist_ptr).astype(np.float64)[profiles.urow],
        "retrieval_score": score,
    }


@dataclass(frozen=True)
class _Profiles:
    """Each history's tag, dimension and category profile (:func:`_profile`: sorted keys, weights).

    Attributes:
        urow: (B,) example -> profile row.
        n_hist: profile rows (1 with a shared history, else B).
    """

    urow: np.ndarray
    n_hist: int
    tag: tuple[np.ndarray, np.ndarray]
    dim: tuple[np.ndarray, np.ndarray]
    cat: tuple[np.ndarray, np.ndarray]


def _profiles(c: NoteCatalog, ex: Examples, shared_history: bool) -> _Profiles:
    b = len(ex)
    n_hist = 1 if shared_history else b
    urow = np.zeros(b, np.int64) if shared_history else np.arange(b)
    hrow = np.repeat(np.arange(n_hist), np.diff(ex.hist_ptr))
    pos, tl = ragged_gather(c.tag_ptr, ex.hist_note)
    prow = np.repeat(hrow, tl)
    pw = np.repeat(ex.hist_weight.astype(np.float64), tl) * c.tag_conf[pos]
    return _Profiles(
        urow,
        n_hist,
        tag=_profile(prow, c.tag_vals[pos], pw, c.num_tags + 1, n_hist),
        dim=_profile(prow, c.tag_dims[pos], pw, len(c.dimensions) + 1, n_hist),
        cat=_profile(
            hrow,
            c.category[ex.hist_note],
            ex.hist_weight.astype(np.float64),
            len(c.categories) + 1,
            n_hist,
        ),
    )


def _match_columns(
    c: NoteCatalog, notes: np.ndarray, profiles: _Profiles, b: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The tag / dimension / category match features of each (example, note), and each note's tag count."""
    urow = profiles.urow
    v = c.num_tags + 1
    n_dims = len(c.dimensions) + 1
    n_cats = len(c.categories) + 1
    npos, ntl = ragged_gather(c.tag_ptr, notes)
    nrow = np.repeat(np.arange(b), ntl)
    found, w = _lookup(*profiles.tag, _pair_keys(urow[nrow], c.tag_vals[npos], v))
    overlap = np.bincount(nrow, weights=found, minlength=b)
    weighted = np.bincount(nrow, weights=w * c.tag_conf[npos], minlength=b)
    prof_size = np.bincount(profiles.tag[0] // v, minlength=profiles.n_hist).astype(np.float64)[urow]
    union = ntl + prof_size - overlap
    # Per-dimension: the note's distinct dimensions, whether the user has weight there, and whether a tag matched.
    nd_keys = _pair_keys(nrow, c.tag_dims[npos], n_dims)
    uniq_nd = np.unique(nd_keys)
    d_row = uniq_nd // n_dims
    d_found, d_w = _lookup(*profiles.dim, urow[d_row] * n_dims + uniq_nd % n_dims)
    matched_nd = np.unique(nd_keys[found])
    n_note_dims = np.bincount(d_row, minlength=b).astype(np.float64)
    _, cat_aff = _lookup(*profiles.cat, _pair_keys(urow, c.category[notes], n_cats))
    columns = {
        "tag_overlap": overlap,
        "tag_weighted": weighted,
        "tag_jaccard": np.where(union > 0, overlap / np.maximum(union, 1), 0.0),
        "dim_overlap": np.bincount(d_row, weights=d_found, minlength=b),
        "dim_weighted": np.bincount(d_row, weights=d_w, minlength=b),
        "dim_match_share": np.bincount(matched_nd // n_dims, minlength=b) / np.maximum(n_note_dims, 1),
        "cat_affinity": cat_aff,
    }
    return columns, ntl


def _retrieval_score(
    ex: Examples, retrieval: Any, retrieval_scores: np.ndarray | None, shared_history: bool
) -> np.ndarray:
    """(B,) user . item scores: given, from the retrieval model (in batches of 8192), or zeros."""
    b = len(ex)
    if retrieval_scores is not None:
        return np.asarray(retrieval_scores, dtype=np.float64)
    if retrieval is None:
        return np.zeros(b)
    if shared_history:
        raise ConfigError(
            "shared_history: pass retrieval_scores (the retrieval model needs one row per example)"
        )
    import torch

    with torch.no_grad():
        users_v = np.concatenate(
            [
                retrieval.model.user_embedding(
                    retrieval.encoder.encode(ex.take(np.arange(i, min(i + 8192, b))))
                ).numpy()
                for i in range(0, b, 8192)
            ]
        )
    # the note's age at each example's time (the freshness bias of the request it was shown in)
    return (users_v * retrieval.item_embeddings(ex.note, at_s=ex.ts)).sum(axis=1)


@dataclass
class Ranker:
    """A trained LightGBM booster and the features it uses."""

    booster: Any
    features: tuple[str, ...]
    config: RankerConfig

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """(len(frame),) scores; ``frame`` needs :attr:`features` columns."""
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ConfigError(f"ranker features missing: {missing}; expected columns {list(self.features)}")
        return np.asarray(self.booster.predict(frame[list(self.features)].to_numpy(np.float32)))

    def predict_columns(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """:meth:`predict` on :func:`feature_columns` output (no DataFrame; the serving path)."""
        missing = [f for f in self.features if f not in columns]
        if missing:
            raise ConfigError(f"ranker features missing: {missing}; expected columns {list(self.features)}")
        x = np.column_stack([columns[f] for f in self.features]).astype(np.float32)
        return np.asarray(self.booster.predict(x, num_threads=1))

    def importance(self) -> dict[str, float]:
        gains = self.booster.feature_importance(importance_type="gain")
        total = float(gains.sum()) or 1.0
        return {f: round(float(g) / total, 4) for f, g in zip(self.features, gains, strict=True)}


def _groups(ex: Examples) -> np.ndarray:
    return ex.user.astype(np.int64) * 100_000 + (ex.ts // 86400).astype(np.int64)


def train_ranker(
    frame: pd.DataFrame,
    ex: Examples,
    config: RankerConfig | None = None,
    features: tuple[str, ...] = FEATURES,
) -> Ranker:
    """Fit LightGBM on ``frame`` (rows aligned with ``ex``; labels ``ex.label``)."""
    import lightgbm as lgb

    config = config or RankerConfig()
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ConfigError(f"features: unknown {unknown}; expected a subset of {list(FEATURES)}")
    x = frame[list(features)].to_numpy(np.float32)
    y = ex.label
    if config.objective == "lambdarank":
        g = _groups(ex)
        order = np.argsort(g, kind="stable")
        x, y = x[order], y[order]
        _, counts = np.unique(g[order], return_counts=True)
        dataset = lgb.Dataset(x, y, group=counts, feature_name=list(features))
    else:
        dataset = lgb.Dataset(x, y, feature_name=list(features))
    booster = lgb.train(config.lgb_params(), dataset, num_boost_round=config.n_estimators)
    return Ranker(booster, tuple(features), config)
