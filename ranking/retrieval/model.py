"""Two-tower retrieval model in TorchRec: one weighted ``EmbeddingBagCollection`` over a
``KeyedJaggedTensor``, a user tower and an item tower.

Features (which ones are used is :class:`FeatureSet`):

==========  =====  ==================================================  ==========
feature     tower  values                                              table
==========  =====  ==================================================  ==========
user_id     user   the user's id (0 = unseen user)                     user_id
u_notes     user   note ids of the last H engagements, weighted         note_id
u_cats      user   categories of those notes, weighted                  category
u_tags      user   tag ids of those notes, weight = event x confidence  tag
                   (or ``Examples.user_tags`` when set, e.g. from Feast)
note_id     item   the note's id; 0 for unseen notes and with dropout   note_id
i_cat       item   the note's category                                  category
i_tags      item   the note's tag ids, weight = confidence              tag
==========  =====  ==================================================  ==========

User and item bags share the ``tag`` and ``category`` tables, so a brand-new note embeds from its
tags alone, in the same space the users' histories were learned in. Weights are normalized to sum 1
per bag, so SUM pooling is a weighted mean. Every KJT carries all keys of its feature set; a
user-only or item-only batch gives the other side's keys zero lengths.

``import torchrec`` takes seconds: this module imports it at import time, so import this module
lazily (``ranking`` itself does not).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from features.errors import ConfigError
from ranking.data import Examples, NoteCatalog, RunData, ragged_gather

__all__ = [
    "AGE_EDGES_DAYS",
    "FEATURE_SETS",
    "FeatureEncoder",
    "TwoTower",
    "TwoTowerConfig",
    "age_bucket",
    "in_batch_softmax_loss",
]

# Feature set name -> (user features, item features). Tag models keep ids and category too.
FEATURE_SETS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "ids": (("user_id", "u_notes"), ("note_id",)),
    "category": (("user_id", "u_notes", "u_cats"), ("note_id", "i_cat")),
    "tags": (("user_id", "u_notes", "u_cats", "u_tags"), ("note_id", "i_cat", "i_tags")),
}
_TABLE_OF = {
    "user_id": "user_id",
    "u_notes": "note_id",
    "note_id": "note_id",
    "u_cats": "category",
    "i_cat": "category",
    "u_tags": "tag",
    "i_tags": "tag",
}
WIDE_KEYS = ("u_tags_w", "i_tags_w")  # pooled-output names of the wide part of the tag bags

# Note age buckets (days) of the ``i_age`` feature: [0, 1), [1, 3), [3, 7), [7, 14), [14, 30), [30, inf).
AGE_EDGES_DAYS = (1.0, 3.0, 7.0, 14.0, 30.0)


def age_bucket(age_s: np.ndarray) -> np.ndarray:
    """Bucket ids 1..len(AGE_EDGES_DAYS)+1 of note ages in seconds (negative ages count as 0)."""
    days = np.maximum(np.asarray(age_s, dtype=np.float64), 0.0) / 86400.0
    return 1 + np.searchsorted(np.asarray(AGE_EDGES_DAYS), days, side="right").astype(np.int64)


Part = Literal["both", "user", "item"]


@dataclass(frozen=True)
class TwoTowerConfig:
    """Sizes of the two-tower model.

    Args:
        num_users: rows of the user-id table (ids 0..num_users-1; 0 = unseen).
        num_notes: rows of the note-id table (0 = unseen / dropped out).
        num_tags: rows of the tag table (0 = padding).
        num_categories: rows of the category table (0 = unknown).
        feature_set: one of :data:`FEATURE_SETS`.
        embedding_dim: D of every table.
        hidden_dim: width of each tower's hidden layer.
        out_dim: size of the (L2-normalized) tower outputs.
        temperature: softmax temperature on cosine similarities.
        content_skip: add a linear path from the content bags (category, tags) to each tower's
            output, through one projection shared by both towers, so the score holds a direct
            learned content-overlap term (what a cold-start note is scored by).
        feature_norm: LayerNorm each pooled bag before the towers. TorchRec initializes a table
            uniformly in +-1/sqrt(rows), so the 9-row category table starts ~8x larger than
            the 500-row tag table, and a mean over ~90 history tags shrinks it further: without
            the norm the towers fit the category first and underuse the tags.
        freshness: a learned score bias per note age bucket (:data:`AGE_EDGES_DAYS`), the age
            taken at the request: in training, the age of every in-batch candidate at the time of
            the row's user (notes not yet published then are masked out); in scoring, the age at
            the index's time carried by the KJT key ``i_age`` (a note created after it counts as
            age 0). The model learns how much more a note of each age is clicked — fresh notes
            are shown far more — which is what lets id-free fresh notes compete with warm notes'
            ids in one pool (cf. the "example age" feature of Covington et al., 2016). The bias
            rides in one extra vector dimension (user side 1, item side T x bias), so an
            inner-product index ranks by cosine/T + bias with no change (:attr:`vector_dim`).
        wide_dim: > 0 adds a "wide" content term: the tag table gets ``wide_dim`` more columns
            (they start as random near-orthogonal unit rows; the first ``embedding_dim`` columns
            feed the towers as before), whose pooled user and note tag bags are appended, times a
            learned gain g, to both vectors (one lookup serves both parts), so the score holds
            g^2 (t_user . t_note) — at the start ~ the plain weighted tag overlap, then learned —
            next to the towers' cosine. The towers compress ~500+ tags into 32 dimensions; this
            term keeps the fine-grained overlap a cold note is best scored by. 0 = off.
        freshness_scale: multiplies the age bias in scoring (not in training); chosen on a
            held-out window by :mod:`ranking.retrieval.calibrate`.
        exact_tags: an exact tag-overlap term: score += g (t_user . (w * t_note)), over the raw
            (normalized) tag bags of user and note, with a learned weight w per tag and a learned
            gain g; no compression, so at the start it is the tag-overlap heuristic itself. In
            training it is computed sparsely (the note bags have a few tags each); in scoring
            both vectors carry ``num_tags`` more entries (user: its bag; note: T g w * bag).
        cold_overlap: weight c >= 0 of a content-overlap term for notes without an id (cold-start
            notes; id 0) in queries over cold-start notes only (the cold-start channel, a
            ``cold_start_only`` filter, the offline ``segment`` pool): score += c (t_user . t_note +
            k_user . k_note) over the normalized tag bags t and category bags k — the tag-overlap
            heuristic's own score — stacked on the towers' score, the note's bags centred on the
            catalog's mean bag (:meth:`TwoTower.set_cold_overlap`). It is not trained: c is chosen
            on a held-out window by :mod:`ranking.retrieval.calibrate` (the trained towers rank cold
            notes among cold notes below the raw overlap; with c x overlap stacked they rank them
            above it). Notes with an id hold zeros there. Both vectors carry ``num_tags +
            num_categories`` more entries (:attr:`overlap_slice`; note: its centred bags or zeros;
            user: its bags times the query's weight). 0 = off.
        overlap_exposure: b >= 0: the user's tag bag in the cold-start overlap term is taken minus b x
            the tag bag of the notes the user was last shown (its impressions; :func:`user_embedding`'s
            ``exposure``, :data:`ranking.data.EXPOSURE_LEN` of them). A user is shown notes by its
            categories, so its engagements carry the common tags of what it is shown whatever it
            likes; engagement share minus exposure share keeps what it picks among them (on the
            medium run the heuristic's segment Recall@50 went from 0.158 to 0.178). Chosen with c on
            the held-out window. 0 = off (models saved before it).
        overlap_confidence: the note's tag bag in that term holds each tag's confidence (what the
            tag-overlap heuristic reads) instead of its share of the note's confidences (the
            encoder's ``i_tags``); :meth:`TwoTower.item_embedding` then needs each note's
            ``tag_mass`` (its confidences' sum). With ``overlap_exposure`` the shares lost most of the
            gain (medium run, heuristic minus exposure: segment Recall@50 0.178 on confidences,
            0.169 on shares; the window 0.098 / 0.091). False for models saved before it.
        shared_overlap: the same term's weight in queries over every note (the shared index):
            0 by default, so warm and cold notes compete exactly as without the term (a weight that
            ranks cold notes well among themselves lifts the best-matching ones over every warm
            note: on the medium run c = 2 took warm Recall@50 from 0.049 to 0.004).
        The flags default to False so models saved before them load unchanged;
        :class:`ranking.retrieval.train.TrainConfig` turns them on.
    """

    num_users: int
    num_notes: int
    num_tags: int
    num_categories: int
    feature_set: str = "tags"
    embedding_dim: int = 32
    hidden_dim: int = 64
    out_dim: int = 32
    temperature: float = 0.05
    content_skip: bool = False
    feature_norm: bool = False
    freshness: bool = False
    freshness_scale: float = 1.0
    wide_dim: int = 0
    exact_tags: bool = False
    cold_overlap: float = 0.0
    shared_overlap: float = 0.0
    overlap_exposure: float = 0.0
    overlap_confidence: bool = False

    def __post_init__(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError(
                f"feature_set: got {self.feature_set!r}; expected one of {', '.join(FEATURE_SETS)}"
            )
        for name in ("num_users", "num_notes", "num_tags", "num_categories", "embedding_dim", "out_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: got {getattr(self, name)!r}; expected an integer >= 1")
        if not self.temperature > 0:
            raise ConfigError(f"temperature: got {self.temperature!r}; expected a number > 0")
        for name in ("cold_overlap", "shared_overlap", "overlap_exposure"):
            if not 0 <= getattr(self, name) < float("inf"):
                raise ConfigError(f"{name}: got {getattr(self, name)!r}; expected a number >= 0 (0 = off)")

    @property
    def user_features(self) -> tuple[str, ...]:
        return FEATURE_SETS[self.feature_set][0]

    @property
    def item_features(self) -> tuple[str, ...]:
        return FEATURE_SETS[self.feature_set][1]

    @property
    def has_wide(self) -> bool:
        """True when the wide tag term is on (``wide_dim`` > 0 and the feature set has tags)."""
        return self.wide_dim > 0 and "u_tags" in self.user_features

    @property
    def has_exact(self) -> bool:
        """True when the exact tag-overlap term is on (``exact_tags`` and the feature set has tags)."""
        return self.exact_tags and "u_tags" in self.user_features

    @property
    def has_cold_overlap(self) -> bool:
        """True when the cold-start overlap term is on (``cold_overlap`` > 0 and the feature set has tags)."""
        return self.cold_overlap > 0 and self.supports_cold_overlap

    @property
    def supports_cold_overlap(self) -> bool:
        """True when the feature set has the tag and category bags the overlap term reads."""
        return "u_tags" in self.user_features and "u_cats" in self.user_features

    @property
    def overlap_dim(self) -> int:
        """Entries of the cold-start overlap term in each vector (0 when it is off)."""
        return self.num_tags + self.num_categories if self.has_cold_overlap else 0

    @property
    def overlap_slice(self) -> slice:
        """Where the overlap term's entries sit in a vector (empty when it is off)."""
        start = (
            self.out_dim + (self.wide_dim if self.has_wide else 0) + (self.num_tags if self.has_exact else 0)
        )
        return slice(start, start + self.overlap_dim)

    def query(self, vectors: np.ndarray, *, cold_only: bool = False) -> np.ndarray:
        """User vectors made with overlap weight 1 (``user_embedding(kjt, overlap_weight=1.0)``) as
        the query of a search over every note (``shared_overlap``) or over cold-start notes only
        (``cold_overlap``); a copy when the term is on, ``vectors`` itself otherwise."""
        if not self.has_cold_overlap:
            return vectors
        out = np.array(vectors, dtype=np.float32, copy=True)
        out[..., self.overlap_slice] *= self.cold_overlap if cold_only else self.shared_overlap
        return out

    @property
    def vector_dim(self) -> int:
        """Size of the vectors :meth:`TwoTower.user_embedding` / ``item_embedding`` return."""
        return (
            self.out_dim
            + (self.wide_dim if self.has_wide else 0)
            + (self.num_tags if self.has_exact else 0)
            + self.overlap_dim
            + (1 if self.freshness else 0)
        )

    @property
    def content_pairs(self) -> list[tuple[str, str]]:
        """(user key, item key) pairs of content bags over a shared table, e.g. (u_tags, i_tags)."""
        pairs = [("u_cats", "i_cat"), ("u_tags", "i_tags")]
        return [(u, i) for u, i in pairs if u in self.user_features and i in self.item_features]

    @property
    def keys(self) -> list[str]:
        return [*self.user_features, *self.item_features]

    def tables(self) -> list[EmbeddingBagConfig]:
        rows = {
            "user_id": self.num_users,
            "note_id": self.num_notes,
            "category": self.num_categories,
            "tag": self.num_tags,
        }
        by_table: dict[str, list[str]] = {}
        for key in self.keys:
            by_table.setdefault(_TABLE_OF[key], []).append(key)
        return [
            EmbeddingBagConfig(
                name=table,
                embedding_dim=self.embedding_dim + (self.wide_dim if table == "tag" and self.has_wide else 0),
                num_embeddings=rows[table],
                feature_names=feats,
                pooling=PoolingType.SUM,
            )
            for table, feats in by_table.items()
        ]


def _tower(in_dim: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out))


class TwoTower(nn.Module):
    """User and item towers over one weighted EmbeddingBagCollection.

    Args:
        config: sizes and feature set.
        device: where the tables live (``torch.device("meta")`` before DistributedModelParallel).

    Example::

        model = TwoTower(TwoTowerConfig(num_users=10, num_notes=20, num_tags=30, num_categories=4))
        users, items = model(kjt)        # (B, out_dim) each, L2-normalized
    """

    def __init__(self, config: TwoTowerConfig, device: torch.device | None = None) -> None:
        super().__init__()
        self.config = config
        self.ebc = EmbeddingBagCollection(tables=config.tables(), is_weighted=True, device=device)
        d = config.embedding_dim
        self.user_tower = _tower(d * len(config.user_features), config.hidden_dim, config.out_dim)
        self.item_tower = _tower(d * len(config.item_features), config.hidden_dim, config.out_dim)
        self.norms = nn.ModuleDict({k: nn.LayerNorm(d) for k in config.keys}) if config.feature_norm else None
        self.wide_gain = nn.Parameter(torch.ones(())) if config.has_wide else None
        if config.has_wide and device is None:
            table = self.ebc.embedding_bags["tag"].weight
            with torch.no_grad():
                table[:, d:].normal_(0.0, 1.0 / config.wide_dim**0.5)
        self.tag_weight = nn.Parameter(torch.ones(config.num_tags)) if config.has_exact else None
        self.exact_gain = nn.Parameter(torch.ones(())) if config.has_exact else None
        pairs = config.content_pairs if config.content_skip else []
        self.content_proj = nn.Linear(d * len(pairs), config.out_dim, bias=False) if pairs else None
        if config.has_cold_overlap:  # filled by set_cold_overlap (saved with the weights)
            self.register_buffer("overlap_center", torch.zeros(config.overlap_dim))
        # Row b = the logit bias of a candidate in age bucket b (row 0 unused); zero at the start.
        self.age_bias = nn.Embedding(len(AGE_EDGES_DAYS) + 2, 1) if config.freshness else None
        if self.age_bias is not None:
            nn.init.zeros_(self.age_bias.weight)
        # hour of age -> bucket id (hours past the last edge share the last bucket)
        last = int(AGE_EDGES_DAYS[-1] * 24) + 1
        self._hour_bucket: torch.Tensor
        self.register_buffer(
            "_hour_bucket", torch.from_numpy(age_bucket(np.arange(last) * 3600.0)), persistent=False
        )

    def set_cold_overlap(
        self, weight: float, center: torch.Tensor | None = None, exposure: float = 0.0
    ) -> None:
        """Turn the cold-start overlap term on with ``weight`` (0 = off) around ``center``, the mean
        content bag of the catalog's notes (``overlap_dim`` entries; needed when weight > 0), the user's
        tag bag taken minus ``exposure`` x the bag of what it was shown (``overlap_exposure``)."""
        self.config = replace(self.config, cold_overlap=float(weight), overlap_exposure=float(exposure))
        if not self.config.has_cold_overlap:
            self._buffers.pop("overlap_center", None)
            return
        if center is None or tuple(center.shape) != (self.config.overlap_dim,):
            raise ConfigError(
                f"center: got {None if center is None else tuple(center.shape)}; expected a tensor of "
                f"shape ({self.config.overlap_dim},) (num_tags + num_categories)"
            )
        self.register_buffer("overlap_center", center.detach().clone().float())

    def content_center(
        self, batches: Iterable[tuple[KeyedJaggedTensor, torch.Tensor | None]]
    ) -> torch.Tensor:
        """(num_tags + num_categories,) mean item content bag (:meth:`item_embedding`'s) over item
        batches (kjt, tag_mass)."""
        total = torch.zeros(self.config.num_tags + self.config.num_categories)
        count = 0
        for kjt, tag_mass in batches:
            bags = self._item_overlap_bags(kjt, tag_mass)
            total += bags.sum(dim=0)
            count += len(bags)
        return total / max(count, 1)

    def _pooled(self, kjt: KeyedJaggedTensor) -> dict[str, torch.Tensor]:
        kt = self.ebc(kjt)
        out: dict[str, torch.Tensor] = {}
        d = self.config.embedding_dim
        for key, emb in kt.to_dict().items():
            name = key.split("@", 1)[0]  # shared tables name outputs "feature@table"
            if emb.shape[1] > d:  # the tag table with the wide columns: split them off
                out[WIDE_KEYS[0] if name == "u_tags" else WIDE_KEYS[1]] = emb[:, d:]
                emb = emb[:, :d]
            out[name] = self.norms[name](emb) if self.norms is not None else emb
        return out

    def forward(self, kjt: KeyedJaggedTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: kjt with every key of the feature set, batch B. Returns (users (B, O), items (B, O))."""
        pooled = self._pooled(kjt)
        return self._user(pooled), self._item(pooled)

    def _user(self, pooled: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([pooled[k] for k in self.config.user_features], dim=1)
        return self._with_wide(F.normalize(self.user_tower(x) + self._skip(pooled, 0), dim=1), pooled, 0)

    def _item(self, pooled: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([pooled[k] for k in self.config.item_features], dim=1)
        return self._with_wide(F.normalize(self.item_tower(x) + self._skip(pooled, 1), dim=1), pooled, 1)

    def _with_wide(self, vec: torch.Tensor, pooled: dict[str, torch.Tensor], side: int) -> torch.Tensor:
        if self.wide_gain is None:
            return vec
        return torch.cat([vec, self.wide_gain * pooled[WIDE_KEYS[side]]], dim=1)

    def _skip(self, pooled: dict[str, torch.Tensor], side: int) -> torch.Tensor | float:
        # One projection for both sides: the score gets (P c_user) . (P c_item) over the shared
        # tag/category tables, a learned tag overlap that needs no note id.
        if self.content_proj is None:
            return 0.0
        c = torch.cat([pooled[pair[side]] for pair in self.config.content_pairs], dim=1)
        return self.content_proj(c)

    def _dense_bag(self, kjt: KeyedJaggedTensor, key: str, width: int | None = None) -> torch.Tensor:
        """(B, width) dense matrix of a bag's weights (the KJT's ``key``); width default num_tags."""
        jt = kjt[key]
        lengths = jt.lengths()
        rows = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        out = torch.zeros(len(lengths), self.config.num_tags if width is None else width)
        return out.index_put_((rows, jt.values()), jt.weights(), accumulate=True)

    def _content_bags(self, kjt: KeyedJaggedTensor, side: int) -> torch.Tensor:
        """(B, overlap_dim) the tag bag then the category bag of one side (0 user, 1 item)."""
        tags, cats = ("u_tags", "u_cats") if side == 0 else ("i_tags", "i_cat")
        return torch.cat(
            [self._dense_bag(kjt, tags), self._dense_bag(kjt, cats, self.config.num_categories)], dim=1
        )

    def _user_overlap_bags(self, kjt: KeyedJaggedTensor, exposure: torch.Tensor | None) -> torch.Tensor:
        """(B, overlap_dim) the users' bags in the cold-start overlap term: the tag bag minus
        ``overlap_exposure`` x ``exposure`` (when given), then the category bag."""
        bags = self._content_bags(kjt, 0)
        b = self.config.overlap_exposure
        if not b or exposure is None:
            return bags
        t = self.config.num_tags
        if tuple(exposure.shape) != (len(bags), t):
            raise ConfigError(
                f"exposure: got shape {tuple(exposure.shape)}; expected ({len(bags)}, {t}) (one tag bag per user)"
            )
        return torch.cat([bags[:, :t] - b * exposure.to(bags.dtype), bags[:, t:]], dim=1)

    def _item_overlap_bags(self, kjt: KeyedJaggedTensor, tag_mass: torch.Tensor | None) -> torch.Tensor:
        """(B, overlap_dim) the notes' bags in the cold-start overlap term (``overlap_confidence``:
        the tag shares times ``tag_mass``, i.e. the confidences)."""
        bags = self._content_bags(kjt, 1)
        if not self.config.overlap_confidence:
            return bags
        if tag_mass is None or tuple(tag_mass.shape) != (len(bags),):
            raise ConfigError(
                f"tag_mass: got {None if tag_mass is None else tuple(tag_mass.shape)}; expected a tensor of "
                f"shape ({len(bags)},) (each note's sum of tag confidences; the model has overlap_confidence)"
            )
        t = self.config.num_tags
        return torch.cat([bags[:, :t] * tag_mass[:, None].to(bags.dtype), bags[:, t:]], dim=1)

    def tag_overlap(self, kjt: KeyedJaggedTensor) -> torch.Tensor | float:
        """(B, B) logit term g (t_user_i . (w * t_note_j)) of every (row, in-batch note) pair,
        sparse over the note bags; 0.0 without ``exact_tags``."""
        if self.tag_weight is None or self.exact_gain is None:
            return 0.0
        users = self._dense_bag(kjt, "u_tags")  # (B, T)
        jt = kjt["i_tags"]
        lengths = jt.lengths()
        col = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        vals = jt.values()
        per_entry = users[:, vals] * (jt.weights() * self.tag_weight[vals])[None, :]  # (B, nnz)
        out = torch.zeros(len(users), len(lengths), dtype=per_entry.dtype)
        return self.exact_gain * out.index_add(1, col, per_entry)

    def user_embedding(
        self,
        kjt: KeyedJaggedTensor,
        *,
        cold_only: bool = False,
        overlap_weight: float | None = None,
        exposure: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, vector_dim) user vectors; item keys of ``kjt`` may be empty. With the cold-start
        overlap term, its entries are the user's bags times ``overlap_weight``, by default the
        weight of the query: ``cold_overlap`` for a search over cold-start notes only
        (``cold_only``), ``shared_overlap`` for one over every note; ``exposure`` (B, num_tags): the
        L1-normalized tag bag of what each user was shown, taken ``overlap_exposure`` times from its
        tag bag there (None: nothing shown)."""
        users = self._user(self._pooled(kjt))
        if self.tag_weight is not None:
            users = torch.cat([users, self._dense_bag(kjt, "u_tags")], dim=1)
        if self.config.has_cold_overlap:
            if overlap_weight is None:
                overlap_weight = self.config.cold_overlap if cold_only else self.config.shared_overlap
            users = torch.cat([users, overlap_weight * self._user_overlap_bags(kjt, exposure)], dim=1)
        if self.age_bias is None:
            return users
        return torch.cat([users, torch.ones(len(users), 1, dtype=users.dtype)], dim=1)

    def item_embedding(self, kjt: KeyedJaggedTensor, tag_mass: torch.Tensor | None = None) -> torch.Tensor:
        """(B, vector_dim) item vectors; user keys of ``kjt`` may be empty. With ``freshness`` the
        last entry is temperature x the age bias of the key ``i_age`` (user . item = cos + T b).
        ``tag_mass`` (B,): each note's sum of tag confidences, needed by a cold-start overlap term
        with ``overlap_confidence``."""
        items = self._item(self._pooled(kjt))
        if self.tag_weight is not None and self.exact_gain is not None:
            t_gain = self.config.temperature * self.exact_gain
            items = torch.cat([items, t_gain * self._dense_bag(kjt, "i_tags") * self.tag_weight], dim=1)
        if self.config.has_cold_overlap:
            ids = kjt["note_id"].values()
            if len(ids) != len(items):
                raise ConfigError(
                    f"note_id: got {len(ids)} values for {len(items)} items; expected one per item"
                )
            weight = (ids == 0).to(items.dtype)
            centered = self._item_overlap_bags(kjt, tag_mass) - self.get_buffer("overlap_center")[None, :]
            items = torch.cat([items, weight[:, None] * centered], dim=1)
        if self.age_bias is None:
            return items
        bucket = kjt["i_age"].values()
        if len(bucket) != len(items):
            raise ConfigError(
                f"i_age: got {len(bucket)} values for {len(items)} items; expected one per item"
            )
        scale = self.config.temperature * self.config.freshness_scale
        return torch.cat([items, scale * self.age_bias(bucket)], dim=1)

    def pair_bias(
        self, age: torch.Tensor, *, mask_unpublished: bool = False, unit_s: float = 1.0
    ) -> torch.Tensor | float:
        """Logit bias of each (row, candidate) age (any shape; in seconds, or in units of ``unit_s``
        seconds, e.g. 3600 for ages already in hours); 0.0 without ``freshness``.

        Ages are floored to whole hours and mapped to buckets through a per-hour lookup table: one
        ``take`` forward and one ``bincount`` backward (``torch.bucketize`` on a 512 x 512 batch was
        ~4x slower, autograd's own index backward ~2x).

        ``mask_unpublished``: negative ages (a candidate published after the row's time) get
        ``-inf``, i.e. they are not negatives of that row; on a square matrix the diagonal (the
        row's own positive) is never masked. This folds the validity mask into the same lookup.
        """
        if self.age_bias is None:
            return 0.0
        last = len(self._hour_bucket)
        lut = self.age_bias.weight[self._hour_bucket, 0]  # (hours,) differentiable
        # the first op makes a new tensor (the caller's ``age`` is never modified): no extra copy
        hours = age * (unit_s / 3600.0) if unit_s != 3600.0 else age
        if not mask_unpublished:
            return _LutGather.apply(lut, hours.clamp(0.0, float(last - 1)).long())
        lut = torch.cat([lut.new_full((1,), float("-inf")), lut])
        idx = (hours + 1.0).clamp_(0.0, float(last)).long()  # (-1 h, 0) -> 0: unpublished
        if idx.dim() == 2 and idx.shape[0] == idx.shape[1]:
            idx.diagonal().clamp_(min=1)
        return _LutGather.apply(lut, idx)


class _LutGather(torch.autograd.Function):
    """``table[idx]`` whose backward is one ``bincount`` (autograd's index backward is a sorted
    scatter-add over every element: slow when a few table entries receive 262k gradients)."""

    @staticmethod
    def forward(ctx: Any, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.size = table.numel()
        return torch.take(table, idx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (idx,) = ctx.saved_tensors
        g = torch.bincount(idx.reshape(-1), weights=grad.reshape(-1), minlength=ctx.size)
        return g.to(grad.dtype), None


def in_batch_softmax_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    log_q: torch.Tensor,
    note: torch.Tensor,
    temperature: float,
    bias: torch.Tensor | float = 0.0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sampled softmax over the batch's items with logQ popularity correction.

    Args:
        users: (B, O) user embeddings.
        items: (B, O) embeddings of each user's positive item.
        log_q: (B,) log sampling probability of each item (its share of training positives).
        note: (B,) note index of each item; duplicates of the positive are masked out.
        temperature: divides the cosine logits.
        bias: (B, B) logit bias of candidate j for row i (e.g. :meth:`TwoTower.pair_bias`), or 0.
        valid: (B, B) bool, False where candidate j cannot be shown to row i (published later);
            the diagonal is always kept.

    Returns:
        scalar mean cross-entropy.
    """
    offset = -log_q[None, :] if isinstance(bias, float) and bias == 0.0 else bias - log_q[None, :]
    logits = torch.addmm(offset, users, items.T, alpha=1.0 / temperature)
    rows, cols = _same_note_pairs(note)
    if len(rows):
        logits[rows, cols] = float("-inf")  # another row's copy of my positive is not a negative
    if valid is not None:
        invalid = ~valid
        invalid.fill_diagonal_(False)
        logits = logits.masked_fill(invalid, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(users), device=users.device))


def _same_note_pairs(note: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(i, j), i != j, where rows i and j hold the same note; built only over the rows whose note
    repeats in the batch (a few), not as a B x B comparison."""
    _, inv, counts = torch.unique(note, return_inverse=True, return_counts=True)
    idx = torch.nonzero(counts[inv] > 1).squeeze(1)
    if len(idx) == 0:
        return idx, idx
    sub = note[idx]
    same = sub[:, None] == sub[None, :]
    same.fill_diagonal_(False)
    i, j = torch.nonzero(same, as_tuple=True)
    return idx[i], idx[j]


class FeatureEncoder:
    """Turns :class:`Examples` and note indices into KeyedJaggedTensors for one feature set.

    Args:
        data: the run (catalog with the tag source).
        feature_set: one of :data:`FEATURE_SETS`.
        train_users: user indices seen in training (they get ids 1..; others 0).
        train_notes: note indices seen in training (ids 1..; others, e.g. cold-start notes, 0).
        freshness: encode the ``i_age`` key, each item's age bucket at ``at_s`` (not an embedding
            table: it picks the age bias, see ``TwoTowerConfig.freshness``).
    """

    def __init__(
        self,
        data: RunData,
        feature_set: str,
        train_users: np.ndarray,
        train_notes: np.ndarray,
        freshness: bool = False,
    ) -> None:
        if feature_set not in FEATURE_SETS:
            raise ConfigError(f"feature_set: got {feature_set!r}; expected one of {', '.join(FEATURE_SETS)}")
        self.catalog: NoteCatalog = data.catalog
        self.feature_set = feature_set
        self.freshness = freshness
        self.reference_s = data.cutoff_s  # item ages are taken at this time unless told otherwise
        self.user_map = np.zeros(data.num_users, np.int64)
        users = np.unique(train_users)
        self.user_map[users] = np.arange(1, len(users) + 1)
        self.note_map = np.zeros(data.catalog.num_notes, np.int64)
        notes = np.unique(train_notes)
        self.note_map[notes] = np.arange(1, len(notes) + 1)

    def config(self, **kwargs: object) -> TwoTowerConfig:
        """A :class:`TwoTowerConfig` sized for this encoder (``kwargs`` override the defaults)."""
        return TwoTowerConfig(
            num_users=int(self.user_map.max()) + 1,
            num_notes=int(self.note_map.max()) + 1,
            num_tags=self.catalog.num_tags,
            num_categories=len(self.catalog.categories) + 1,
            feature_set=self.feature_set,
            freshness=self.freshness,
            **kwargs,  # type: ignore[arg-type]
        )

    def _user_bags(self, ex: Examples) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        c = self.catalog
        lens = np.diff(ex.hist_ptr)
        row = np.repeat(np.arange(len(ex)), lens)
        w = ex.hist_weight.astype(np.float64)
        bags = {
            "user_id": (self.user_map[ex.user], np.ones(len(ex)), np.ones(len(ex), np.int64)),
            "u_notes": (self.note_map[ex.hist_note], _normalize(w, row, len(ex)), lens),
            "u_cats": (c.category[ex.hist_note], _normalize(w, row, len(ex)), lens),
        }
        if "u_tags" in FEATURE_SETS[self.feature_set][0] and ex.user_tags is not None:
            # A precomputed bag (e.g. Feast's point-in-time user_interests), already in catalog ids.
            ut = ex.user_tags
            ulens = np.diff(ut.ptr)
            urow = np.repeat(np.arange(len(ex)), ulens)
            bags["u_tags"] = (ut.vals, _normalize(ut.weight.astype(np.float64), urow, len(ex)), ulens)
        elif "u_tags" in FEATURE_SETS[self.feature_set][0]:
            pos, tlens = ragged_gather(c.tag_ptr, ex.hist_note)
            tw = np.repeat(w, tlens) * c.tag_conf[pos]
            trow = np.repeat(row, tlens)
            per_ex = np.bincount(row, weights=tlens, minlength=len(ex)).astype(np.int64)
            bags["u_tags"] = (c.tag_vals[pos], _normalize(tw, trow, len(ex)), per_ex)
        return bags

    def _item_bags(
        self,
        notes: np.ndarray,
        note_dropout: float | np.ndarray,
        rng: np.random.Generator | None,
        at_s: float | np.ndarray | None,
    ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        c = self.catalog
        ids = self.note_map[notes]
        if np.any(np.asarray(note_dropout) > 0) and rng is not None:
            ids = np.where(rng.random(len(ids)) < note_dropout, 0, ids)
        ones = np.ones(len(notes))
        one = np.ones(len(notes), np.int64)
        bags = {"note_id": (ids, ones, one), "i_cat": (c.category[notes], ones, one)}
        if self.freshness:
            at = self.reference_s if at_s is None else at_s
            bags["i_age"] = (age_bucket(np.asarray(at, dtype=np.float64) - c.created_s[notes]), ones, one)
        pos, tlens = ragged_gather(c.tag_ptr, notes)
        bags["i_tags"] = (
            c.tag_vals[pos],
            _normalize(
                c.tag_conf[pos].astype(np.float64), np.repeat(np.arange(len(notes)), tlens), len(notes)
            ),
            tlens,
        )
        return bags

    def encode(
        self,
        ex: Examples | None = None,
        notes: np.ndarray | None = None,
        *,
        note_dropout: float | np.ndarray = 0.0,
        rng: np.random.Generator | None = None,
        at_s: float | np.ndarray | None = None,
    ) -> KeyedJaggedTensor:
        """KJT for a batch: user bags from ``ex`` and/or item bags from ``notes`` (default ``ex.note``).

        Args:
            ex: examples (user side), or None for an item-only batch.
            notes: (B,) note indices (item side), or None for a user-only batch when ``ex.note`` is -1.
            note_dropout: probability of replacing a note id by 0 (training only); a scalar or one
                probability per row (exposure-dependent dropout).
            rng: random generator for the dropout.
            at_s: when the items are scored (epoch seconds, scalar or per row), for the ``i_age``
                feature; default ``reference_s`` (the run's cutoff: the index's time).
        """
        if ex is None and notes is None:
            raise ConfigError("encode: pass ex (user side), notes (item side) or both")
        if notes is None and ex is not None and (ex.note >= 0).all():
            notes = ex.note
        batch = len(ex) if ex is not None else len(notes)  # type: ignore[arg-type]
        user_keys, item_keys = FEATURE_SETS[self.feature_set]
        bags: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        if ex is not None:
            bags.update(self._user_bags(ex))
        if notes is not None:
            if len(notes) != batch:
                raise ConfigError(f"encode: notes has {len(notes)} rows, ex has {batch}")
            bags.update(self._item_bags(notes, note_dropout, rng, at_s))
        empty = (np.zeros(0, np.int64), np.zeros(0), np.zeros(batch, np.int64))
        keys = [*user_keys, *item_keys, *(("i_age",) if self.freshness else ())]  # i_age: no table
        parts = [bags.get(k, empty) for k in keys]
        return KeyedJaggedTensor(
            keys=keys,
            values=torch.from_numpy(np.concatenate([p[0] for p in parts]).astype(np.int64)),
            weights=torch.from_numpy(np.concatenate([p[1] for p in parts]).astype(np.float32)),
            lengths=torch.from_numpy(np.concatenate([p[2] for p in parts]).astype(np.int64)),
        )


def _normalize(w: np.ndarray, row: np.ndarray, n: int) -> np.ndarray:
    """Scale ``w`` so each row's weights sum to 1 (rows with zero total stay zero)."""
    tot = np.bincount(row, weights=w, minlength=n)
    return w / np.where(tot[row] > 0, tot[row], 1.0)
