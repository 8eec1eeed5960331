"""Users with latent fine-grained preferences, and the interaction logs they produce.

Logging policy: each impression picks a category from the user's preferred categories (or, with
probability ``explore``, any category), then a note of that category weighted by quality and by how
long it has been exposed. Because impressions already follow the user's categories, the category
alone explains little; the click probability is driven by the fine-grained match::

    P(click) = sigmoid(base + match_weight * match + quality_weight * quality + user_bias
                       + category_weight * [note category is preferred])

where ``match`` is the sum of the user's preference weights over the note's true attributes.
Dwell seconds are lognormal (longer with match); like / collect / comment / share follow a click.
Everything per interaction is vectorised with numpy.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from features.datasets.synthetic.notes import NotesResult, us_to_utc
from features.datasets.synthetic.sizes import GeneratorConfig
from features.datasets.synthetic.taxonomy import Category, Taxonomy
from features.schemas import EVENTS

__all__ = [
    "BehaviorParams",
    "UsersResult",
    "click_logit",
    "dwell_log_median",
    "engagement_logit",
    "make_interactions",
    "make_users",
    "preference_match",
]

log = logging.getLogger(__name__)

_DAY_US = 86_400 * 1_000_000
_SEC_US = 1_000_000
_MAX_CATS = 3


@dataclass(frozen=True)
class BehaviorParams:
    """Parameters of users and of the logging/click model (logits unless noted).

    Attributes:
        new_user_share: share of users created in the last ``new_user_days`` of the window.
        new_user_days: length of that period (capped at a quarter of the window).
        explore: share of impressions drawn from any category.
        exposure_days: notes younger than this get proportionally fewer impressions.
        recency_power: > 1 puts a note's impressions soon after it is published.
        click_base, match_weight, quality_weight, category_weight, user_bias_sd: click model.
        dwell_median_s, dwell_sigma, dwell_match: lognormal dwell of clicks.
        engage_base, engage_match: per event after a click (like, collect, comment, share).
    """

    new_user_share: float = 0.12
    new_user_days: float = 14.0
    explore: float = 0.2
    exposure_days: float = 14.0
    recency_power: float = 2.0
    click_base: float = -2.5
    match_weight: float = 1.8
    quality_weight: float = 0.3
    category_weight: float = 0.15
    user_bias_sd: float = 0.3
    dwell_median_s: float = 18.0
    dwell_sigma: float = 0.75
    dwell_match: float = 0.45
    engage_base: tuple[float, float, float, float] = (-1.6, -2.4, -3.3, -3.6)
    engage_match: tuple[float, float, float, float] = (1.1, 1.1, 0.7, 0.7)


@dataclass
class UsersResult:
    """Users as a table, ground truth, and arrays for the interaction model.

    Attributes:
        users: the canonical ``users`` table (+ ``segment``: new / light / regular / heavy).
        preferences: ground truth ``user_preferences`` (user_id, category, dimension, value, weight).
        categories: ground truth ``user_categories`` (user_id, category, weight).
        created_us: (U,) account creation, microseconds since the epoch.
        activity: (U,) relative activity, mean 1.
        bias: (U,) click-logit offset.
        cat_idx: (U, 3) preferred category indices, padded by repeating the first.
        cat_cum: (U, 3) cumulative category weights, padded with 1.0.
        pref_keys: (P,) sorted ``user * V + vid`` of every preference.
        pref_weight: (P,) weights aligned with ``pref_keys``.
    """

    users: pd.DataFrame
    preferences: pd.DataFrame
    categories: pd.DataFrame
    created_us: np.ndarray
    activity: np.ndarray
    bias: np.ndarray
    cat_idx: np.ndarray
    cat_cum: np.ndarray
    pref_keys: np.ndarray
    pref_weight: np.ndarray


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def make_users(
    cfg: GeneratorConfig,
    taxonomy: Taxonomy,
    popularity: np.ndarray,
    rng: np.random.Generator,
    pref_rng: random.Random,
    start_us: int,
    end_us: int,
    params: BehaviorParams | None = None,
) -> UsersResult:
    """Sample users, their preferred categories and fine-grained (dimension, value) preferences.

    Args:
        cfg: resolved options.
        taxonomy: the taxonomy.
        popularity: (V,) value popularity; preferences lean towards popular values (flattened).
        rng: numpy generator for creation times, activity and bias.
        pref_rng: Python generator for the per-user preference draws.
        start_us, end_us: the window, microseconds since the epoch.
        params: behaviour parameters.

    Returns:
        Users, ground truth and arrays for :func:`make_interactions`.
    """
    params = params or BehaviorParams()
    n = cfg.n_users
    created, activity, bias, segment = _user_state(n, rng, params, start_us, end_us)
    user_ids = np.array([f"u{i:05d}" for i in range(n)], dtype=object)
    prefs = _Preferences.empty(n)
    flat_pop = np.sqrt(popularity)
    for u in tqdm(range(n), desc="users", disable=not cfg.progress, leave=False):
        prefs.draw_user(u, user_ids[u], taxonomy, flat_pop, pref_rng)
    order = np.argsort(np.asarray(prefs.keys, dtype=np.int64), kind="stable")
    users = pd.DataFrame(
        {"user_id": user_ids, "created_at": us_to_utc(created), "segment": segment.astype(object)}
    )
    return UsersResult(
        users=users,
        preferences=pd.DataFrame(prefs.gt_pref),
        categories=pd.DataFrame(prefs.gt_cat),
        created_us=created,
        activity=activity,
        bias=bias,
        cat_idx=prefs.cat_idx,
        cat_cum=prefs.cat_cum,
        pref_keys=np.asarray(prefs.keys, dtype=np.int64)[order],
        pref_weight=np.asarray(prefs.weights)[order],
    )


def _user_state(
    n: int, rng: np.random.Generator, params: BehaviorParams, start_us: int, end_us: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Creation time (us), activity, click bias and segment of ``n`` users (in this draw order)."""
    is_new = rng.random(n) < params.new_user_share
    new_span = min(params.new_user_days * _DAY_US, (end_us - start_us) / 4)
    created = np.where(
        is_new,
        end_us - _DAY_US // 2 - rng.random(n) * max(new_span - _DAY_US // 2, _SEC_US),
        start_us - rng.random(n) * 365 * _DAY_US,
    ).astype(np.int64)
    activity = rng.lognormal(0.0, 0.7, n) / np.exp(0.7**2 / 2)
    bias = rng.normal(0.0, params.user_bias_sd, n)
    segment = np.where(
        is_new, "new", np.where(activity < 0.6, "light", np.where(activity < 1.5, "regular", "heavy"))
    )
    return created, activity, bias, segment


@dataclass
class _Preferences:
    """Preferred categories (cumulative weights for sampling) and (value, weight) preferences, user by user."""

    cat_idx: np.ndarray
    cat_cum: np.ndarray
    keys: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    gt_pref: dict[str, list] = field(
        default_factory=lambda: {"user_id": [], "category": [], "dimension": [], "value": [], "weight": []}
    )
    gt_cat: dict[str, list] = field(default_factory=lambda: {"user_id": [], "category": [], "weight": []})

    @classmethod
    def empty(cls, n: int) -> _Preferences:
        return cls(np.zeros((n, _MAX_CATS), dtype=np.int64), np.ones((n, _MAX_CATS)))

    def draw_user(
        self, u: int, user_id: str, taxonomy: Taxonomy, flat_pop: np.ndarray, pref_rng: random.Random
    ) -> None:
        """Draw user ``u``'s 1-3 categories, their weights and 2-4 preferred values in each."""
        n_cats_total = len(taxonomy.categories)
        k = min(pref_rng.choices((1, 2, 3), weights=(0.35, 0.4, 0.25))[0], n_cats_total)
        cats = pref_rng.sample(range(n_cats_total), k)
        raw = [pref_rng.gammavariate(2.0, 1.0) for _ in cats]
        cw = [w / sum(raw) for w in raw]
        self.cat_idx[u, :] = cats[0]
        self.cat_idx[u, :k] = cats
        self.cat_cum[u, :k] = np.cumsum(cw)
        self.cat_cum[u, k - 1 :] = 1.0
        for c, w in zip(cats, cw, strict=True):
            cat = taxonomy.categories[c]
            self.gt_cat["user_id"].append(user_id)
            self.gt_cat["category"].append(cat.name)
            self.gt_cat["weight"].append(round(w, 4))
            self._draw_values(u, user_id, cat, taxonomy, flat_pop, pref_rng)

    def _draw_values(
        self,
        u: int,
        user_id: str,
        cat: Category,
        taxonomy: Taxonomy,
        flat_pop: np.ndarray,
        pref_rng: random.Random,
    ) -> None:
        n_values = len(taxonomy.values)
        candidates = [v for d in cat.dimensions for v in d.values]
        cand_w = [float(flat_pop[v.vid]) for v in candidates]
        chosen: dict[int, None] = {}
        n_prefs = pref_rng.choices((2, 3, 4), weights=(0.35, 0.4, 0.25))[0]
        while len(chosen) < n_prefs:
            chosen[pref_rng.choices(candidates, weights=cand_w)[0].vid] = None
        for vid in chosen:
            value = taxonomy.values[vid]
            weight = round(pref_rng.uniform(0.6, 1.4), 3)
            self.keys.append(u * n_values + vid)
            self.weights.append(weight)
            self.gt_pref["user_id"].append(user_id)
            self.gt_pref["category"].append(value.category)
            self.gt_pref["dimension"].append(value.dimension)
            self.gt_pref["value"].append(value.name)
            self.gt_pref["weight"].append(weight)


def _pick_notes(
    category: np.ndarray, notes: NotesResult, weight: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Draw one note per impression from its category, proportionally to ``weight``."""
    note = np.empty(len(category), dtype=np.int64)
    for c in np.unique(category):
        rows = np.flatnonzero(category == c)
        members = np.flatnonzero(notes.category == c)
        cum = np.cumsum(weight[members])
        pos = np.searchsorted(cum, rng.random(len(rows)) * cum[-1], side="right")
        note[rows] = members[np.minimum(pos, len(members) - 1)]
    return note


def preference_match(
    users: UsersResult, notes: NotesResult, u: np.ndarray, note: np.ndarray, n_values: int
) -> np.ndarray:
    """Sum of the user's preference weights over the note's true attributes, per impression."""
    match = np.zeros(len(u))
    for j in range(notes.attr_vids.shape[1]):
        vid = notes.attr_vids[note, j]
        key = u * n_values + vid
        pos = np.minimum(np.searchsorted(users.pref_keys, key), len(users.pref_keys) - 1)
        hit = (vid >= 0) & (users.pref_keys[pos] == key)
        match += np.where(hit, users.pref_weight[pos], 0.0)
    return match


def click_logit(
    params: BehaviorParams, match: np.ndarray, quality: np.ndarray, bias: np.ndarray, preferred: np.ndarray
) -> np.ndarray:
    """Click logit per impression (the module docstring's formula); ``preferred`` is 0/1."""
    return (
        params.click_base
        + params.match_weight * match
        + params.quality_weight * quality
        + bias
        + params.category_weight * preferred
    )


def dwell_log_median(params: BehaviorParams, match: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """``mu`` of the lognormal dwell seconds of clicks."""
    return np.log(params.dwell_median_s) + params.dwell_match * match + 0.1 * quality


def engagement_logit(
    params: BehaviorParams, event: int, match: np.ndarray, quality: np.ndarray
) -> np.ndarray:
    """Logit of engagement ``event`` (0..3: like, collect, comment, share) after a click."""
    return params.engage_base[event] + params.engage_match[event] * match + 0.2 * quality


def make_interactions(
    cfg: GeneratorConfig,
    taxonomy: Taxonomy,
    notes: NotesResult,
    users: UsersResult,
    rng: np.random.Generator,
    start_us: int,
    end_us: int,
    params: BehaviorParams | None = None,
) -> pd.DataFrame:
    """Simulate impressions, clicks and engagements over the window.

    Args:
        cfg: resolved options (``impressions_per_user`` sets the volume).
        taxonomy: the taxonomy.
        notes: sampled notes.
        users: sampled users.
        rng: numpy generator.
        start_us, end_us: the window, microseconds since the epoch.
        params: behaviour parameters.

    Returns:
        The canonical ``interactions`` table sorted by ts: every ts >= the note's created_at and
        <= ``end_us``; ``dwell_seconds`` set on clicks only (NaN otherwise).
    """
    params = params or BehaviorParams()
    u, note, ts = _impressions(cfg, taxonomy, notes, users, rng, start_us, end_us, params)
    n = len(u)
    match = preference_match(users, notes, u, note, len(taxonomy.values))
    preferred = (users.cat_idx[u] == notes.category[note][:, None]).any(axis=1)
    logit = click_logit(params, match, notes.quality[note], users.bias[u], preferred)
    ci = np.flatnonzero(rng.random(n) < _sigmoid(logit))
    click_ts = ts[ci] + rng.integers(_SEC_US, 20 * _SEC_US, size=len(ci))
    mu = dwell_log_median(params, match[ci], notes.quality[note[ci]])
    dwell = np.round(np.clip(rng.lognormal(mu, params.dwell_sigma), 1.0, 1_200.0), 1)

    parts_u, parts_n, parts_ts, parts_ev, parts_dw = [u, u[ci]], [note, note[ci]], [ts, click_ts], [], []
    parts_ev += [np.zeros(n, np.int8), np.ones(len(ci), np.int8)]
    parts_dw += [np.full(n, np.nan), dwell]
    for e in range(2, 2 + len(params.engage_base)):
        p = _sigmoid(engagement_logit(params, e - 2, match[ci], notes.quality[note[ci]]))
        hit = np.flatnonzero(rng.random(len(ci)) < p)
        parts_u.append(u[ci[hit]])
        parts_n.append(note[ci[hit]])
        parts_ts.append(click_ts[hit] + (rng.random(len(hit)) * dwell[hit] * _SEC_US).astype(np.int64))
        parts_ev.append(np.full(len(hit), e, np.int8))
        parts_dw.append(np.full(len(hit), np.nan))
    out = _interaction_frame(users, notes, parts_u, parts_n, parts_ts, parts_ev, parts_dw)
    log.info("simulated %d impressions, %d clicks, %d interaction rows", n, len(ci), len(out))
    return out


def _impressions(
    cfg: GeneratorConfig,
    taxonomy: Taxonomy,
    notes: NotesResult,
    users: UsersResult,
    rng: np.random.Generator,
    start_us: int,
    end_us: int,
    params: BehaviorParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Impressions as (user row, note row, ts us): per-user volume, category, note and time, in this draw order."""
    n_cats = len(taxonomy.categories)
    # Impressions stop 30 minutes before the end so clicks and engagements stay inside the window.
    last_us = end_us - 1_800 * _SEC_US
    active = (end_us - np.maximum(users.created_us, start_us)) / (end_us - start_us)
    counts = np.maximum(rng.poisson(cfg.impressions_per_user * users.activity * active), 1)
    u = np.repeat(np.arange(cfg.n_users), counts)
    n = len(u)

    pick = (rng.random(n)[:, None] > users.cat_cum[u]).sum(axis=1)
    category = np.where(rng.random(n) < params.explore, rng.integers(n_cats, size=n), users.cat_idx[u, pick])
    present = np.unique(notes.category)
    missing = ~np.isin(category, present)  # categories without notes (only with tiny n_notes)
    category[missing] = rng.choice(present, size=int(missing.sum()))

    age_days = (end_us - notes.created_us) / _DAY_US
    weight = np.exp(0.5 * notes.quality) * np.clip(age_days / params.exposure_days, 0.05, 1.0) ** 0.7
    note = _pick_notes(category, notes, weight, rng)
    lo = np.maximum(np.maximum(notes.created_us[note], users.created_us[u]), start_us)
    lo = np.minimum(lo, last_us)
    ts = lo + ((last_us - lo) * rng.random(n) ** params.recency_power).astype(np.int64)
    return u, note, ts


def _interaction_frame(
    users: UsersResult,
    notes: NotesResult,
    parts_u: list[np.ndarray],
    parts_n: list[np.ndarray],
    parts_ts: list[np.ndarray],
    parts_ev: list[np.ndarray],
    parts_dw: list[np.ndarray],
) -> pd.DataFrame:
    """The canonical interactions table from per-event-kind parts, sorted by (ts, event)."""
    all_ts = np.concatenate(parts_ts)
    all_ev = np.concatenate(parts_ev)
    order = np.lexsort((all_ev, all_ts))
    user_ids = users.users["user_id"].to_numpy()
    note_ids = notes.notes["note_id"].to_numpy()
    events = np.array(EVENTS, dtype=object)
    return pd.DataFrame(
        {
            "user_id": user_ids[np.concatenate(parts_u)[order]],
            "note_id": note_ids[np.concatenate(parts_n)[order]],
            "ts": us_to_utc(all_ts[order]),
            "event": events[all_ev[order]],
            "dwell_seconds": np.concatenate(parts_dw)[order],
        }
    )
