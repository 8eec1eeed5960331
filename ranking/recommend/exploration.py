"""Exploration policies: how fresh and little-shown notes earn slots in a returned list.

- ``none``: the ranker's order.
- ``quota``: a fixed fresh-note quota — every ``slot_every``-th slot goes to the best-ranked cold-start
  candidate (:func:`ranking.retrieval.evaluate.with_cold_slots`); the baseline.
- ``ucb`` and ``thompson``: each candidate's click probability is a Beta posterior whose mean is the
  ranker's estimate p̂(u, i) and whose concentration is ``prior_impressions + impressions(i)``: the
  model's estimate is worth ``prior_impressions`` (n0) impressions of evidence, and every impression of
  the note the recommender has counted adds one. ``ucb`` orders by ``mean + ucb_beta * sd``,
  ``thompson`` by one draw from the posterior (a seeded generator). A note never shown has the widest
  posterior (sd = sqrt(p̂(1 - p̂) / (n0 + 1))); one with thousands of impressions gets almost no bonus.

Why the mean stays p̂ rather than ``(n0 p̂ + clicks) / (n0 + impressions)``: the ranker already reads
the note's live impressions and clicks (its ``note_impressions``, ``note_clicks`` and ``note_ctr``
features come from the same counts), so adding the clicks again would count them twice; and as a note's
impressions grow that update replaces the user's personal p̂ by the note's global CTR, so a note with a
few hundred impressions would rank the same for every user. The counts therefore set how sure the
estimate is, and the ranker sets what it is.

Example::

    policy = Exploration("ucb", prior_impressions=20, ucb_beta=1.0)
    keys = exploration_keys(policy, p_hat, impressions, rng)   # order candidates by -keys
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from features.errors import ConfigError

if TYPE_CHECKING:
    from ranking.ranker import Ranker

__all__ = ["POLICIES", "Exploration", "check_click_probabilities", "exploration_keys", "posterior_sd"]

POLICIES = ("none", "quota", "ucb", "thompson")
#: p̂ is clipped to [_EPS, 1 - _EPS] so that both Beta parameters stay positive.
_EPS = 1e-6


def _number(name: str, value: Any, *, low: float, low_open: bool, expected: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (low_open and value == low):
        raise ConfigError(f"{name}: got {value!r}; expected {expected}")
    return float(value)


@dataclass(frozen=True)
class Exploration:
    """An exploration policy (see the module docstring), validated on construction.

    Args:
        policy: ``none``, ``quota``, ``ucb`` or ``thompson``.
        slot_every: ``quota`` only: every N-th slot goes to the best-ranked cold-start candidate not yet
            listed (an integer >= 1); 0 for the other policies.
        prior_impressions: ``ucb``/``thompson``: n0, the impressions' worth of evidence the ranker's
            estimate carries for a note never shown (> 0; larger = less exploration).
        ucb_beta: ``ucb``: the bonus in posterior standard deviations (>= 0; 0 = the ranker's order).
        seed: ``thompson``: seed of the recommender's generator (same seed and calls = same lists).

    Raises:
        ConfigError: a bad value, naming the field and the expected form.
    """

    policy: str = "none"
    slot_every: int = 0
    prior_impressions: float = 20.0
    ucb_beta: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"exploration: got {self.policy!r}; expected one of {', '.join(POLICIES)}")
        every = self.slot_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ConfigError(f"exploration.slot_every: got {every!r}; expected an integer >= 0")
        if self.policy == "quota" and every < 1:
            raise ConfigError(
                f"exploration.slot_every: got {every!r}; expected an integer >= 1 with policy 'quota'"
            )
        if self.policy != "quota" and every:
            raise ConfigError(
                f"exploration.slot_every: got {every!r} with policy {self.policy!r}; expected 0 "
                "(only the 'quota' policy has slots)"
            )
        _number(
            "exploration.prior_impressions",
            self.prior_impressions,
            low=0.0,
            low_open=True,
            expected="a number > 0 (impressions of evidence)",
        )
        _number("exploration.ucb_beta", self.ucb_beta, low=0.0, low_open=False, expected="a number >= 0")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"exploration.seed: got {self.seed!r}; expected an integer >= 0")

    @classmethod
    def of(cls, value: Exploration | str | None) -> Exploration:
        """``value`` itself, a policy name with the default parameters, or ``none`` for None.

        Raises:
            ConfigError: another type, or a bad policy name.
        """
        if value is None:
            return cls()
        if isinstance(value, Exploration):
            return value
        if isinstance(value, str):
            return cls(value)
        raise ConfigError(
            f"exploration: got {type(value).__name__}; expected an Exploration or one of {', '.join(POLICIES)}"
        )

    @property
    def bandit(self) -> bool:
        """True for the posterior policies (``ucb``, ``thompson``), which need click probabilities."""
        return self.policy in ("ucb", "thompson")

    def describe(self) -> dict[str, Any]:
        """The policy and the parameters it uses (for manifests and logs)."""
        if self.policy == "quota":
            return {"policy": "quota", "slot_every": self.slot_every}
        if self.policy == "ucb":
            return {"policy": "ucb", "prior_impressions": self.prior_impressions, "ucb_beta": self.ucb_beta}
        if self.policy == "thompson":
            return {"policy": "thompson", "prior_impressions": self.prior_impressions, "seed": self.seed}
        return {"policy": "none"}


def posterior_sd(p_hat: np.ndarray, impressions: np.ndarray, prior_impressions: float) -> np.ndarray:
    """(C,) standard deviation of Beta(p̂ N, (1 - p̂) N), N = ``prior_impressions + impressions``:
    sqrt(p̂ (1 - p̂) / (N + 1))."""
    p = np.clip(np.asarray(p_hat, np.float64), _EPS, 1.0 - _EPS)
    n = prior_impressions + np.asarray(impressions, np.float64)
    return np.sqrt(p * (1.0 - p) / (n + 1.0))


def exploration_keys(
    policy: Exploration, p_hat: np.ndarray, impressions: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(C,) the keys ``policy`` orders candidates by, highest first.

    Args:
        policy: the policy (``none`` and ``quota`` return ``p_hat`` itself: the quota acts on slots).
        p_hat: (C,) the ranker's click probabilities.
        impressions: (C,) each candidate note's counted impressions.
        rng: ``thompson``'s generator (one Beta draw per candidate).
    """
    if not policy.bandit or not len(p_hat):
        return np.asarray(p_hat, np.float64)
    p = np.clip(np.asarray(p_hat, np.float64), _EPS, 1.0 - _EPS)
    if policy.policy == "ucb":
        return p + policy.ucb_beta * posterior_sd(p, impressions, policy.prior_impressions)
    n = policy.prior_impressions + np.asarray(impressions, np.float64)
    return rng.beta(p * n, (1.0 - p) * n)


def check_click_probabilities(policy: Exploration, ranker: Ranker | None) -> None:
    """The posterior policies read the ranker's scores as click probabilities: they need a ranker
    trained with the ``binary`` objective.

    Raises:
        ConfigError: ``ucb``/``thompson`` without a ranker, or with a ranker of another objective.
    """
    if not policy.bandit:
        return
    if ranker is None:
        raise ConfigError(
            f"exploration: got {policy.policy!r} without a ranker; expected a ranker with the binary "
            "objective (the policy reads its scores as click probabilities) or exploration none/quota"
        )
    params = getattr(ranker.booster, "params", None) or {}
    objective = str(params.get("objective", ranker.config.objective))
    if objective.split()[0] != "binary":
        raise ConfigError(
            f"exploration: got {policy.policy!r} with a {objective!r} ranker; expected the binary objective "
            "(click probabilities) or exploration none/quota"
        )
