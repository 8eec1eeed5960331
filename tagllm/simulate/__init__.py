"""A simulated online A/B test of tag features on the synthetic community.

Users are randomized evenly by a salted hash of user_id to **control** (the recommender without tag
features) and **treatment** (with the run's student tags), and optionally to **tags_explore** and
**tags_quota** (the treatment's models with an exploration policy or a fixed fresh-note quota); each
arm is the real in-memory recommend pipeline (:class:`ranking.recommend.Recommender`: two-tower
retrieval + LightGBM ranker), trained the same way on the same data. Sessions are served by the user's arm, every shown note is an
impression, and the synthetic users answer with the data generator's own click / dwell /
engagement model from their true preferences; the events feed back into the serving arm's
recommender (``observe``), so histories and note stats evolve. A pre-period with everyone on control gives the
CUPED covariates. The logs are written in ``ab_analysis``'s input format and analysed with it.

Modules: ``config`` (SimConfig, the arms), ``truth`` (the generator's response model), ``arms``
(training the two variants, the policy arms), ``fresh`` (new notes published every simulated day),
``engine`` (assignment and the session loop), ``metrics`` (the metric definitions), ``compare``
(per-arm figures and pairwise comparisons of a multi-arm run), ``stage`` (outputs, analysis, summary).

Example::

    from tagllm.simulate import SimConfig, simulate_stage
    figures = simulate_stage("runs/demo", SimConfig(days=7, pre_days=3, seed=0))
    figures["metrics"]["pv_ctr_cold_start"]["lift"], figures["html"]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tagllm.simulate.config import SimConfig
    from tagllm.simulate.stage import METRIC_NAMES, SIMULATION_LABEL, simulate_stage

__all__ = ["METRIC_NAMES", "SIMULATION_LABEL", "SimConfig", "simulate_stage"]


def __getattr__(name: str) -> Any:
    # Lazy: `tagllm ab simulate --help` imports this package and must not import torch (config does).
    if name == "SimConfig":
        from tagllm.simulate.config import SimConfig

        return SimConfig
    if name in ("METRIC_NAMES", "SIMULATION_LABEL", "simulate_stage"):
        from tagllm.simulate import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'tagllm.simulate' has no attribute {name!r}")
