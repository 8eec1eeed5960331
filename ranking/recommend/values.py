"""The values the recommend pipeline takes and returns: filters, recommendations, what add_note did."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AddedNote", "Filters", "Recommendation"]


@dataclass(frozen=True)
class Filters:
    """Which notes a recommendation may return.

    Args:
        categories: keep only these categories (empty = every category).
        exclude_note_ids: never return these.
        include_seen: False (default) drops notes the user already engaged with.
        created_after_s: keep notes published after this epoch second (None = no limit).
        cold_start_only: keep only cold-start notes (published after the training cutoff or added live).
    """

    categories: tuple[str, ...] = ()
    exclude_note_ids: tuple[str, ...] = ()
    include_seen: bool = False
    created_after_s: float | None = None
    cold_start_only: bool = False

    @property
    def restrictive(self) -> bool:
        return bool(self.categories) or self.created_after_s is not None or self.cold_start_only


@dataclass(frozen=True)
class Recommendation:
    """One recommended (or ranked) note."""

    note_id: str
    score: float
    retrieval_score: float
    reasons: tuple[str, ...]
    category: str
    cold_start: bool


@dataclass(frozen=True)
class AddedNote:
    """What :meth:`~ranking.recommend.Recommender.add_note` did: the tags the model knows (used for
    the embedding) and the ones it has never seen (kept for GetNoteTags, not embedded)."""

    note_id: str
    known_tags: tuple[str, ...]
    unknown_tags: tuple[str, ...]
    index_size: int
    replaced: bool
