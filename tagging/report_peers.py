"""The peers of the student report: which exist, how each is built, and the closed-set threshold.

- :data:`PEERS` and :func:`make_peer`: ``closed-set`` (:class:`~tagging.peers.ClosedSetTagger`,
  k=:data:`CLOSED_SET_K`), ``offline`` (the handbook teacher), ``yake``, ``keybert``, ``hashtags``
  (:class:`HashtagTagger`) and ``known-tags`` (:class:`KnownTagsTagger`).
- :func:`tune_threshold`: the closed-set peer predicts a tag when its probability reaches a threshold;
  its default (0.3) predicts almost nothing over hundreds of rare labels, so the report picks the
  threshold of :data:`THRESHOLD_GRID` with the best F1 vs the teacher on the student's *validation*
  notes (never the test notes it is scored on) and applies it to the test notes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from features.errors import ConfigError, NotFoundError
from tagging.handbook_model import Handbook
from tagging.normalize import canonical, drop_redundant, is_cjk
from tagging.types import NoteInput, Tag, Tagger, TagResult

if TYPE_CHECKING:
    from tagging.peers import ClosedSetTagger

__all__ = [
    "CLOSED_SET_K",
    "PEERS",
    "THRESHOLD_GRID",
    "HashtagTagger",
    "KnownTagsTagger",
    "ThresholdChoice",
    "make_peer",
    "tune_threshold",
]

PEERS: tuple[str, ...] = ("closed-set", "offline", "yake", "keybert", "hashtags", "known-tags")
HASHTAG_RE = re.compile(r"[#＃]([\w·]+)")
# a letter or digit of a space-separated script: a Latin-script tag must not touch one (CJK may)
_WORD_CHAR = r"[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]"
CLOSED_SET_K = 300
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 11))  # 0.05 .. 0.5


class HashtagTagger:
    """The creator's hashtags (``#tag`` / full-width ``＃tag`` in title and body), canonical, minus
    the boilerplate; a note without hashtags gets no tags.

    Args:
        boilerplate: phrases to leave out (e.g. ``handbook.boilerplate``).
    """

    name = "hashtags"
    version = "hashtags-v1"

    def __init__(self, boilerplate: Iterable[str] = ()) -> None:
        self._boiler = {canonical(b) for b in boilerplate}

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        out = []
        for n in notes:
            found = HASHTAG_RE.findall(n.title) + HASHTAG_RE.findall(n.body)
            texts = dict.fromkeys(canonical(h) for h in found)
            tags = tuple(Tag(t, "other", 1.0) for t in texts if t and t not in self._boiler)
            out.append(TagResult(n.note_id, tags))
        return out


class KnownTagsTagger:
    """Every known tag (from training answers) whose canonical text occurs verbatim in the note's
    canonical title + body: as whole words for Latin-script tags (CJK characters around them count as
    a word boundary), as a substring for CJK ones.
    Near-duplicates are dropped, the longer (more specific) tag kept.

    Args:
        train_tags: note_id -> tag texts of the training answers.
        boilerplate: phrases never predicted.
    """

    name = "known-tags"

    def __init__(self, train_tags: Mapping[str, Sequence[str]], *, boilerplate: Iterable[str] = ()) -> None:
        counts = Counter(canonical(t) for ts in train_tags.values() for t in ts)
        boiler = {canonical(b) for b in boilerplate}
        self._vocab = sorted(
            (t for t in counts if t and t not in boiler), key=lambda t: (-len(t), -counts[t], t)
        )
        self._word_re: dict[str, re.Pattern[str]] = {}
        self.version = f"known-tags-{len(self._vocab)}"

    def _occurs(self, tag: str, text: str) -> bool:
        if tag not in text:
            return False
        if is_cjk(tag):
            return True
        pat = self._word_re.get(tag)
        if pat is None:
            pat = self._word_re[tag] = re.compile(rf"(?<!{_WORD_CHAR}){re.escape(tag)}(?!{_WORD_CHAR})")
        return pat.search(text) is not None

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        out = []
        for n in notes:
            text = canonical(f"{n.title}\n{n.body}")
            hits = [Tag(t, "other", 1.0) for t in self._vocab if self._occurs(t, text)]
            out.append(TagResult(n.note_id, drop_redundant(hits)))
        return out


def make_peer(
    name: str, hb: Handbook | None, train: Sequence[NoteInput], train_tags: Mapping[str, Sequence[str]]
) -> Tagger:
    """The peer ``name`` of :data:`PEERS`, trained on ``train`` notes with ``train_tags`` where it learns.

    Raises:
        NotFoundError: ``offline`` without a handbook. ConfigError: an unknown name.
    """
    boiler = hb.boilerplate if hb is not None else ()
    if name == "closed-set":
        from tagging.peers import ClosedSetTagger

        return ClosedSetTagger(train, train_tags, k=CLOSED_SET_K)
    if name == "offline":
        if hb is None:
            raise NotFoundError(
                "the offline teacher needs a handbook: pass --handbook or build RUN/handbook.yaml"
            )
        from tagging.teachers import make_teacher

        return make_teacher("offline", hb)
    if name == "yake":
        from tagging.peers import YakeTagger

        return YakeTagger()
    if name == "keybert":
        from tagging.peers import KeyBertTagger

        return KeyBertTagger()
    if name == "hashtags":
        return HashtagTagger(boiler)
    if name == "known-tags":
        return KnownTagsTagger(train_tags, boilerplate=boiler)
    raise ConfigError(f"peer {name!r} is not known; expected some of: {', '.join(PEERS)}")


@dataclass(frozen=True)
class ThresholdChoice:
    """The closed-set threshold picked on validation notes.

    ``n_notes`` validation notes scored; ``f1_by_threshold`` the exact F1 at each grid value (empty,
    and ``threshold`` the tagger's default, when there were no validation notes to tune on).
    """

    threshold: float
    n_notes: int
    f1_by_threshold: dict[float, float]


def tune_threshold(
    tagger: ClosedSetTagger,
    notes: Sequence[NoteInput],
    f1: Callable[[Mapping[str, Sequence[str]]], float],
    grid: Sequence[float] = THRESHOLD_GRID,
) -> ThresholdChoice:
    """The threshold of ``grid`` whose tags of ``notes`` score the best ``f1`` (ties: the one nearest
    the tagger's default); the tagger is left unchanged.

    Args:
        tagger: a fitted closed-set tagger.
        notes: validation notes (not the notes the peer is scored on).
        f1: note_id -> predicted tag texts -> F1 vs the teacher on ``notes``.
        grid: candidate thresholds.
    """
    if not notes or not grid:
        return ThresholdChoice(float(tagger.threshold), len(notes), {})
    probs = tagger.probabilities(notes)
    scores = {
        float(t): f1({r.note_id: [x.text for x in r.tags] for r in tagger.tags_at(notes, probs, t)})
        for t in grid
    }
    best = max(scores, key=lambda t: (scores[t], -abs(t - tagger.threshold)))
    return ThresholdChoice(best, len(notes), scores)
