"""Size presets and option checking for the synthetic community.

A preset fixes the counts; explicit ``n_notes`` / ``n_users`` / ``days`` override it. Interaction
volume follows from ``impressions_per_user`` (clicks and engagements add roughly 20% on top).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from features.errors import ConfigError

__all__ = ["OPTIONS", "PRESETS", "GeneratorConfig", "SizePreset", "resolve_config"]


@dataclass(frozen=True)
class SizePreset:
    """Counts of one size.

    Attributes:
        n_notes: notes published over the window.
        n_users: users (readers); authors are separate ids.
        days: length of the window in days.
        impressions_per_user: mean impressions per fully active user.
    """

    n_notes: int
    n_users: int
    days: int
    impressions_per_user: float


PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset(n_notes=300, n_users=120, days=60, impressions_per_user=105.0),
    "small": SizePreset(n_notes=4_000, n_users=1_500, days=60, impressions_per_user=155.0),
    "medium": SizePreset(n_notes=20_000, n_users=8_000, days=60, impressions_per_user=120.0),
    "large": SizePreset(n_notes=100_000, n_users=40_000, days=60, impressions_per_user=35.0),
}

OPTIONS: tuple[str, ...] = ("seed", "size", "n_notes", "n_users", "days", "progress")


@dataclass(frozen=True)
class GeneratorConfig:
    """Resolved options of one generation run.

    Attributes:
        seed: random seed (same seed and options give identical tables).
        size: preset name.
        n_notes, n_users, days: final counts after overrides.
        impressions_per_user: mean impressions per fully active user (from the preset, scaled by
            ``days`` when it is overridden, so activity per day stays the same).
        progress: show progress bars.
    """

    seed: int
    size: str
    n_notes: int
    n_users: int
    days: int
    impressions_per_user: float
    progress: bool = False


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"option {name}={value!r} is invalid; expected a positive integer")
    return int(value)


def resolve_config(
    *,
    seed: Any = 0,
    size: Any = "small",
    n_notes: Any = None,
    n_users: Any = None,
    days: Any = None,
    progress: Any = False,
) -> GeneratorConfig:
    """Check the options and apply the preset.

    Args:
        seed: non-negative integer.
        size: one of :data:`PRESETS`.
        n_notes, n_users, days: positive integers overriding the preset, or ``None``.
        progress: show progress bars.

    Returns:
        The resolved config.

    Raises:
        ConfigError: naming the option, echoing the value and saying what is expected.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"option seed={seed!r} is invalid; expected a non-negative integer")
    if not isinstance(size, str) or size not in PRESETS:
        raise ConfigError(f"option size={size!r} is not known; expected one of: {', '.join(PRESETS)}")
    preset = PRESETS[size]
    n_notes_ = preset.n_notes if n_notes is None else _positive_int("n_notes", n_notes)
    n_users_ = preset.n_users if n_users is None else _positive_int("n_users", n_users)
    days_ = preset.days if days is None else _positive_int("days", days)
    return GeneratorConfig(
        seed=int(seed),
        size=size,
        n_notes=n_notes_,
        n_users=n_users_,
        days=days_,
        impressions_per_user=preset.impressions_per_user * days_ / preset.days,
        progress=bool(progress),
    )
