"""The simulator's settings: one frozen dataclass, validated on construction, and the arms it knows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from features.errors import ConfigError
from ranking.ranker import RankerConfig
from ranking.recommend.exploration import Exploration
from ranking.retrieval.train import TrainConfig

__all__ = ["ARMS", "DEFAULT_QUOTA_SLOT_EVERY", "POLICY_ARMS", "TREATMENT_TAG_SOURCES", "SimConfig"]

TREATMENT_TAG_SOURCES = ("student", "teacher", "ground_truth", "reference")

#: Every arm the simulator can run, in assignment order (a user's hash bucket picks one of the arms
#: in this order). ``control``: no tags; ``treatment``: the tags (today's treatment, no exploration);
#: ``tags_explore``: the tags + the exploration policy (``exploration``, UCB by default);
#: ``tags_quota``: the tags + the fixed fresh-note quota (``cold_slot_every``). The three tag arms share
#: one trained two-tower model and ranker; only the serving policy differs.
ARMS = ("control", "treatment", "tags_explore", "tags_quota")
#: The arms that differ from ``treatment`` only by their serving policy.
POLICY_ARMS = ("tags_explore", "tags_quota")
#: The quota of ``tags_quota`` when ``cold_slot_every`` is not given: 2 of K = 10 slots.
DEFAULT_QUOTA_SLOT_EVERY = 5


def _int_at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}: got {value!r}; expected an integer >= {low}")


@dataclass(frozen=True)
class SimConfig:
    """How the simulated online A/B test runs.

    Args:
        days: experiment days (users randomized evenly to the ``arms``).
        pre_days: pre-period days before the experiment, everyone on control (CUPED covariates);
            0 disables CUPED.
        users: cap on simulated users (a random subset chosen by a salted hash); None = every user.
        k: notes shown per session (the slate; every shown note is an impression).
        candidates: retrieval candidates ranked per session (>= ``k``).
        sessions_per_day: mean sessions per user per day, scaled by each user's true activity.
        seed: seeds the assignment salt, the sessions, the responses and both arms' training.
        treatment_tags: tag source of the treatment arm; ``student`` falls back to the run's best
            available source (logged) when the run has no student tags.
        experiment: experiment name (assignment salt and the ``experiment`` column).
        retrieval: two-tower training settings for both arms (``feature_set`` is set per arm).
        ranker: LightGBM settings for both arms.
        batch_sessions: sessions served per batch (one user-tower forward and one ranker call);
            a batch sees the recommenders' state at its first session.
        progress: show a progress bar over the simulated days.
        fresh_notes_per_day: brand-new notes published every simulated day (pre-period and
            experiment), drawn from the data generator and added to both arms at their publication
            time (treatment with its tags, control with its category); 0 disables them.
        cold_start_days: an impression is cold-start when its note was published during the
            simulation less than this many days before it (the ``pv_ctr_cold_start`` segment);
            without fresh notes, cold start falls back to the catalog's notes published after the
            training cutoff.
        cold_candidates: every arm: extra candidates per session from the cold-start notes
            (:class:`~ranking.recommend.Recommender` ``cold_candidates``, the cold-start channel of
            candidate generation, the same in every arm; 0 = off).
        arms: the arms users are hashed into evenly (default: all of :data:`ARMS`; ``control`` and
            ``treatment`` always, in any order; ``("control", "treatment")`` is the two-arm test); events of the experiment days reach only the recommender of the arm
            that served them, so each arm keeps its own note counts and histories.
        cold_slot_every: ``tags_quota``: every N-th slot of the slate goes to the best-ranked
            cold-start candidate (None = :data:`DEFAULT_QUOTA_SLOT_EVERY`; only with a ``tags_quota`` arm).
        exploration: ``tags_explore``'s policy, ``ucb`` or ``thompson``
            (:class:`~ranking.recommend.Exploration`; Thompson draws are seeded by ``seed``).
    """

    days: int = 7
    pre_days: int = 3
    users: int | None = None
    k: int = 10
    candidates: int = 50
    sessions_per_day: float = 1.0
    seed: int = 0
    treatment_tags: str = "student"
    experiment: str = "tag-features"
    retrieval: TrainConfig = field(default_factory=TrainConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    batch_sessions: int = 64
    progress: bool = False
    fresh_notes_per_day: int = 60
    cold_start_days: float = 3.0
    cold_candidates: int = 20
    arms: tuple[str, ...] = ARMS
    cold_slot_every: int | None = None
    exploration: Exploration = field(default_factory=lambda: Exploration("ucb"))

    def __post_init__(self) -> None:
        _int_at_least("days", self.days, 1)
        _int_at_least("pre_days", self.pre_days, 0)
        if self.users is not None:
            _int_at_least("users", self.users, 2)
        _int_at_least("k", self.k, 1)
        _int_at_least("candidates", self.candidates, 1)
        if self.candidates < self.k:
            raise ConfigError(f"candidates: got {self.candidates!r}; expected an integer >= k ({self.k})")
        if isinstance(self.sessions_per_day, bool) or not (
            isinstance(self.sessions_per_day, int | float) and 0 < self.sessions_per_day <= 100
        ):
            raise ConfigError(
                f"sessions_per_day: got {self.sessions_per_day!r}; expected a number in (0, 100]"
            )
        _int_at_least("seed", self.seed, 0)
        _int_at_least("batch_sessions", self.batch_sessions, 1)
        _int_at_least("cold_candidates", self.cold_candidates, 0)
        self._check_arms()
        _int_at_least("fresh_notes_per_day", self.fresh_notes_per_day, 0)
        if self.fresh_notes_per_day > 10_000:
            raise ConfigError(
                f"fresh_notes_per_day: got {self.fresh_notes_per_day!r}; expected an integer in [0, 10000]"
            )
        if isinstance(self.cold_start_days, bool) or not (
            isinstance(self.cold_start_days, int | float) and 0 < self.cold_start_days <= 365
        ):
            raise ConfigError(f"cold_start_days: got {self.cold_start_days!r}; expected a number in (0, 365]")
        if self.treatment_tags not in TREATMENT_TAG_SOURCES:
            raise ConfigError(
                f"treatment_tags: got {self.treatment_tags!r}; expected one of {', '.join(TREATMENT_TAG_SOURCES)}"
            )
        if not isinstance(self.experiment, str) or not self.experiment.strip():
            raise ConfigError(f"experiment: got {self.experiment!r}; expected a non-empty name")
        if not isinstance(self.retrieval, TrainConfig):
            raise ConfigError(f"retrieval: got {type(self.retrieval).__name__}; expected a TrainConfig")
        if not isinstance(self.ranker, RankerConfig):
            raise ConfigError(f"ranker: got {type(self.ranker).__name__}; expected a RankerConfig")

    def _check_arms(self) -> None:
        arms = self.arms
        expected = f"distinct names among {', '.join(ARMS)}, with control and treatment"
        if isinstance(arms, str) or not isinstance(arms, tuple | list):
            raise ConfigError(f"arms: got {arms!r}; expected a tuple of {expected}")
        unknown = [a for a in arms if a not in ARMS]
        if unknown or len(set(arms)) != len(arms) or not {"control", "treatment"} <= set(arms):
            raise ConfigError(f"arms: got {tuple(arms)!r}; expected {expected}")
        object.__setattr__(self, "arms", tuple(a for a in ARMS if a in arms))  # the assignment order
        if self.cold_slot_every is not None:
            _int_at_least("cold_slot_every", self.cold_slot_every, 1)
            if "tags_quota" not in self.arms:
                raise ConfigError(
                    f"cold_slot_every: got {self.cold_slot_every!r} without a tags_quota arm; expected None "
                    "(only the tags_quota arm has the fresh-note quota: add it to arms)"
                )
        if not isinstance(self.exploration, Exploration) or not self.exploration.bandit:
            raise ConfigError(
                f"exploration: got {self.exploration!r}; expected Exploration('ucb', ...) or "
                "Exploration('thompson', ...) (tags_explore's policy)"
            )

    @property
    def quota_slot_every(self) -> int:
        """``tags_quota``'s N: every N-th slot goes to the best-ranked cold-start candidate."""
        return DEFAULT_QUOTA_SLOT_EVERY if self.cold_slot_every is None else self.cold_slot_every
