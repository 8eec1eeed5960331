"""The arms: two trained variants (control without tags, the tag models) and the serving policies.

- control: two-tower ``category`` feature set and the ranker without tag features, over a catalog
  with no tags at all (so no tag-derived signal, ``note_n_tags`` included, reaches it);
- treatment: two-tower ``tags`` feature set on the run's (student) tags and the full ranker;
- tags_explore, tags_quota: the treatment's trained models (trained once, shared) behind their own
  :class:`~ranking.recommend.Recommender` (own live catalog, counts and user states), with the
  exploration policy (UCB by default) or the fixed fresh-note quota.

Both trained variants follow :func:`ranking.pipeline.ranker_stage`'s recipe with the same data and
seed: the serving two-tower model is trained on clicks before the cold-start cutoff; the ranker on
impressions of the ``window_days`` before the cutoff, with the retrieval-score feature from a second
two-tower model trained before that window (so the score is out-of-sample for the ranker's rows).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from features.io import RunDir
from ranking.data import RunData, build_training_examples, load_catalog
from ranking.pipeline import available_tag_sources
from ranking.recommend.exploration import Exploration
from tagllm.simulate.config import SimConfig

__all__ = ["Arm", "arm_policy", "resolve_treatment_tags", "train_arms"]

log = logging.getLogger(__name__)


@dataclass
class Arm:
    """A variant: its name, what it is (for the manifest), its live recommender, and whether its
    notes carry tags (fresh notes are published to it with their tags)."""

    name: str
    description: dict[str, Any]
    recommender: Any
    tagged: bool = True


def arm_policy(name: str, cfg: SimConfig) -> Exploration:
    """The serving policy of arm ``name``: none for control and treatment, ``cfg.exploration`` (seeded
    by ``cfg.seed``) for tags_explore, the quota for tags_quota."""
    if name == "tags_explore":
        return replace(cfg.exploration, seed=cfg.seed)
    if name == "tags_quota":
        return Exploration("quota", slot_every=cfg.quota_slot_every)
    return Exploration()


def resolve_treatment_tags(run: RunDir, wanted: str) -> str:
    """``wanted`` when the run has it; for ``student`` without student tags, the run's first
    available source (logged). Other missing sources fail when their catalog is loaded."""
    have = available_tag_sources(run)
    if wanted == "student" and "student" not in have:
        log.warning(
            "no student tags in %s (tables/tags.parquet): the treatment arm uses %r tags", run.path, have[0]
        )
        return have[0]
    return wanted


def _train_arm(name: str, data: RunData, feature_set: str, features: tuple[str, ...], cfg: SimConfig) -> Arm:
    from ranking.ranker import ranker_features, ranking_examples, train_ranker
    from ranking.retrieval.train import train

    t0 = time.perf_counter()
    rcfg = cfg.ranker
    tcfg = replace(cfg.retrieval, feature_set=feature_set, seed=cfg.seed)
    examples = build_training_examples(data)
    serving = train(data, examples, tcfg)
    window_start = data.cutoff_s - rcfg.window_days * 86400.0
    early = build_training_examples(data, end_s=window_start)
    scorer = train(data, early, tcfg)
    rex = ranking_examples(data, window_start, data.cutoff_s, replace(rcfg, seed=cfg.seed))
    ranker = train_ranker(ranker_features(data, rex, scorer), rex, replace(rcfg, seed=cfg.seed), features)
    rec = _recommender(name, serving, ranker, cfg)
    seconds = round(time.perf_counter() - t0, 2)
    log.info(
        "arm %s trained in %.1fs (%s tags, two-tower %s)", name, seconds, data.catalog.tag_source, feature_set
    )
    return Arm(
        name,
        {
            "tag_source": data.catalog.tag_source,
            "two_tower_feature_set": feature_set,
            "ranker_features": list(features),
            "train_examples": {"retrieval": len(examples), "ranker": len(rex)},
            "train_seconds": seconds,
            "cold_candidates": cfg.cold_candidates,
            "cold_slot_every": rec.cold_slot_every,
            "exploration": rec.exploration.describe(),
        },
        rec,
        tagged=feature_set != "category",
    )


def _recommender(name: str, model: Any, ranker: Any, cfg: SimConfig) -> Any:
    from ranking.recommend import Recommender

    return Recommender(
        model,
        ranker,
        version=f"sim-{name}",
        explain=False,
        cold_candidates=cfg.cold_candidates,
        exploration=arm_policy(name, cfg),
    )


def _policy_arm(name: str, treatment: Arm, cfg: SimConfig) -> Arm:
    """Arm ``name``: the treatment's trained models behind a recommender of its own with its policy."""
    t0 = time.perf_counter()
    old = treatment.recommender
    rec = _recommender(name, old.model, old.ranker, cfg)
    what = {
        "tags_explore": f"treatment + exploration ({rec.exploration.policy}: fresh and little-shown notes earn "
        "slots by the ranker's click probability plus its posterior uncertainty)",
        "tags_quota": f"treatment + the fixed fresh-note quota (every {rec.cold_slot_every}th slot: the "
        "best-ranked cold-start candidate)",
    }[name]
    desc = {
        **{k: v for k, v in treatment.description.items() if k not in ("train_seconds", "what")},
        "models": "the treatment's (trained once; only the serving policy differs)",
        "cold_slot_every": rec.cold_slot_every,
        "exploration": rec.exploration.describe(),
        "setup_seconds": round(time.perf_counter() - t0, 2),
        "what": what,
    }
    return Arm(name, desc, rec, tagged=True)


def train_arms(run: RunDir, cfg: SimConfig) -> dict[str, Arm]:
    """Train control and treatment (see the module docstring), wrap each in a Recommender, and add
    the policy arms of ``cfg.arms`` over the treatment's models; in ``cfg.arms`` order."""
    from ranking.data import load_run_data
    from ranking.ranker import FEATURES, TAG_FEATURES

    base = load_run_data(run, "none")
    source = resolve_treatment_tags(run, cfg.treatment_tags)
    tagged = base.with_catalog(load_catalog(run, source))
    control = _train_arm(
        "control", base, "category", tuple(f for f in FEATURES if f not in TAG_FEATURES), cfg
    )
    control.description["what"] = (
        "recommender without tag features (two-tower on ids + category; ranker without tag features)"
    )
    treatment = _train_arm("treatment", tagged, "tags", tuple(FEATURES), cfg)
    treatment.description["what"] = f"recommender with {source} tags (two-tower with tags; full ranker)"
    arms = {"control": control, "treatment": treatment}
    arms |= {name: _policy_arm(name, treatment, cfg) for name in cfg.arms if name not in arms}
    return {name: arms[name] for name in cfg.arms}
