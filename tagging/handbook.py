"""Build the User Interest Handbook from data: per category, interest dimensions and their values.

Steps (each a small function; :func:`build_handbook` composes them):

1. **Candidates** (:func:`extract_candidates`): per note, phrases from title, body and image captions
   (English: word n-grams up to ``max_ngram`` that neither start nor end with a stopword; Chinese:
   jieba words of >= 2 characters) and the note's hashtags (``reference_tags``, whole), in canonical
   form (:func:`tagging.normalize.canonical`); a hashtag written without spaces ("creamwhite") is
   mapped to the text phrase it spells ("cream white"). For text phrases the left and right
   neighbouring words are recorded as context.
2. **Boilerplate** (:func:`boilerplate_phrases`), the documented data-driven rule. For a phrase with
   document frequency ``df >= boilerplate_min_df``, let ``r_c = df_c / N_c`` be its rate in category
   ``c`` (size-adjusted), ``q_c = r_c / sum(r)`` and ``H = -sum q_c log q_c / log(min(C, df))`` its
   normalized category entropy (1 = spread evenly over as many categories as it could be).
   The phrase is boilerplate when it occurs in at least ``boilerplate_min_categories`` categories and
   ``H >= boilerplate_entropy``. **Platform noise**: a hashtag whose words (jieba words / English
   words) are boilerplate *words* by the same rule (computed over hashtag words) for at least
   ``noise_word_share`` of its characters is boilerplate too, which catches the long tail of rare
   variants ("感谢快手官大大送上热门") that are too infrequent for the phrase rule.
   The platform-noise rule applies to CJK hashtags only (English slugs are one word). A phrase found
   in the *text* of at least half the notes that carry it is content (a colour several categories
   share) and is boilerplate only when ``H >= text_boilerplate_entropy``.
   ``extra_boilerplate`` adds hand-listed phrases. The handbook lists **every** boilerplate phrase
   (the rule's and ``extra_boilerplate``), most frequent first (document frequency over all notes,
   then text): the list is never truncated, since taggers, the normalizer and
   ``boilerplate_rate`` (:mod:`tagging.evaluate`) filter and measure by it. ``log_boilerplate``
   only sets how many of the most frequent ones the build log shows.
3. **Scores** per (category, phrase): specificity = smoothed PMI ``log((df_c+1)/(N_c+1)) -
   log((df+1)/(N+1))``; engagement lift (when interactions exist) = the geometric mean of the
   smoothed CTR, like-rate and mean-dwell of the notes containing the phrase over the category
   baseline (``engagement_prior`` pseudo-impressions at the baseline rate); weight = lift x
   specificity, scaled to [0, 1] within the category.
4. **Values**: when most notes carry hashtags (``hashtag_anchored``; auto when >= 30% do), a text
   phrase must also be used as a hashtag (space-free spelling, "creamwhite") in >= ``min_hashtag_df``
   notes of the category: creators' own tags anchor what counts as a value, and template fragments
   ("through and through") drop out. A phrase is kept for a category when ``df_c >= min_df``, it is not boilerplate,
   specificity >= ``min_specificity``, it is not generic to the category (in more than
   ``max_doc_share`` of its notes, like the category's own name), and it is not subsumed (a
   sub-phrase found inside one longer kept phrase in >= ``subsume_share`` of its notes).
5. **Dimensions** (:func:`tagging.handbook_dimensions.group_dimensions`): values of one dimension share
   left/right context words ("in *cream white*", "in *navy*") and rarely co-occur in one note. Each value gets a tf-idf
   weighted context vector; the distance of two values is the cosine distance of their vectors, set to
   1 when they co-occur in notes (at least twice) between ``max_cooccurrence`` and ``synonym_ratio``
   times as often as chance (independent attributes), and to 0 above ``synonym_ratio`` (synonyms); average-link
   hierarchical clustering (scipy) is cut at ``cluster_distance``. A dimension is named from its
   dominant non-stopword context word. Values without context (hashtag-only) go to ``"topic"``.
   **Synonyms** (:func:`tagging.handbook_dimensions.merge_synonyms`): two values of one dimension that
   co-occur in at least three notes, ``synonym_ratio`` times as often as chance, and in at least ``synonym_share`` of the more
   frequent one's notes ("moisturiser" / "face cream", "glassy" / "glass skin": a post names its
   attribute twice, in two words) become one value, the heavier one, with the other as its synonym;
   a note then gets one tag, not two for the same thing. ``synonym_share: null`` turns this off.
6. An optional ``describe`` hook (e.g. an LLM) may rename, merge and describe the dimensions.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.errors import ConfigError
from tagging.handbook_dimensions import group_dimensions, merge_synonyms
from tagging.handbook_model import Dimension, DimensionValue, Handbook, HandbookSection
from tagging.normalize import canonical, is_cjk
from tagging.stopwords import STOPWORDS

__all__ = [
    "STOPWORDS",
    "CategoryStats",
    "DescribeHook",
    "HandbookConfig",
    "boilerplate_phrases",
    "build_handbook",
    "extract_candidates",
    "is_platform_noise",
    "segment",
]

log = logging.getLogger(__name__)

DescribeHook = Callable[[str, list[dict[str, Any]]], list[dict[str, Any]]]
"""(category, dimensions as dicts {name, description, values:[{value, weight, synonyms, examples}],
context}) -> edited dimensions in the same form (rename, merge, describe)."""


@dataclass(frozen=True)
class HandbookConfig:
    """Knobs of :func:`build_handbook` (see the module docstring for what each rule does)."""

    max_ngram: int = 3
    use_text: bool = True
    use_hashtags: bool = True
    min_df: int = 3
    max_doc_share: float = 0.5
    min_specificity: float = 0.5
    subsume_share: float = 0.7
    boilerplate_min_df: int = 5
    boilerplate_min_categories: int = 3
    boilerplate_entropy: float = 0.6
    noise_word_share: float = 0.5
    text_boilerplate_entropy: float = 0.9
    hashtag_anchored: bool | None = None
    min_hashtag_df: int = 2
    extra_boilerplate: tuple[str, ...] = ()
    engagement_prior: float = 50.0
    max_cooccurrence: float = 0.5
    synonym_ratio: float = 5.0
    synonym_share: float | None = 0.2
    cluster_distance: float = 0.75
    min_context: int = 2
    max_values_per_category: int = 300
    max_values_per_dimension: int = 60
    examples_per_value: int = 3
    log_boilerplate: int = 20

    def __post_init__(self) -> None:
        def num(x: object) -> bool:
            return isinstance(x, int | float) and not isinstance(x, bool)

        checks = {  # name -> (ok, expected form)
            "max_ngram": (num(self.max_ngram) and self.max_ngram >= 1, "an integer >= 1"),
            "min_df": (num(self.min_df) and self.min_df >= 1, "an integer >= 1"),
            "max_doc_share": (num(self.max_doc_share) and 0 < self.max_doc_share <= 1, "a number in (0, 1]"),
            "boilerplate_entropy": (
                num(self.boilerplate_entropy) and 0 <= self.boilerplate_entropy <= 1,
                "a number in [0, 1]",
            ),
            "cluster_distance": (
                num(self.cluster_distance) and 0 < self.cluster_distance <= 1,
                "a number in (0, 1]",
            ),
            "max_cooccurrence": (num(self.max_cooccurrence) and self.max_cooccurrence > 0, "a number > 0"),
            "synonym_share": (
                self.synonym_share is None or (num(self.synonym_share) and 0 < self.synonym_share <= 1),
                "a number in (0, 1], or null to keep synonyms apart",
            ),
            "log_boilerplate": (num(self.log_boilerplate) and self.log_boilerplate >= 0, "an integer >= 0"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ConfigError(f"HandbookConfig.{name}: got {getattr(self, name)!r}; expected {expected}")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> HandbookConfig:
        """From a YAML mapping; unknown keys are a ConfigError naming them."""
        known = set(cls.__dataclass_fields__)
        if "max_boilerplate_listed" in raw:
            raise ConfigError(
                "handbook config key 'max_boilerplate_listed' was removed: the boilerplate list is never "
                "truncated (every phrase the rule finds is listed); use log_boilerplate to choose how "
                "many the build log shows"
            )
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"unknown handbook config key(s) {unknown}; expected some of {sorted(known)}")
        kwargs = dict(raw)
        if "extra_boilerplate" in kwargs:
            kwargs["extra_boilerplate"] = tuple(kwargs["extra_boilerplate"] or ())
        return cls(**kwargs)


# --------------------------------------------------------------------------- candidates


_jieba: Any = None


def segment(text: str) -> list[str]:
    """Words of a canonical text: jieba for CJK (imported lazily), whitespace otherwise."""
    global _jieba
    if not is_cjk(text):
        return text.split()
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        _jieba = jieba
    return [w for w in _jieba.lcut(text) if w.strip()]


@dataclass
class NoteCandidates:
    """One note's phrases: text phrases with their (left, right) context words, and hashtags."""

    text: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    hashtags: set[str] = field(default_factory=set)

    def phrases(self) -> set[str]:
        return set(self.text) | self.hashtags


def _text_phrases(text: str, max_ngram: int, out: dict[str, list[tuple[str, str]]]) -> None:
    c = canonical(text)
    if not c:
        return
    toks = segment(c)
    cjk = is_cjk(c)
    n_max = 1 if cjk else max_ngram
    for i in range(len(toks)):
        for n in range(1, n_max + 1):
            if i + n > len(toks):
                break
            gram = toks[i : i + n]
            if gram[0] in STOPWORDS or gram[-1] in STOPWORDS:
                continue
            phrase = "".join(gram) if cjk else " ".join(gram)
            if cjk and len(phrase) < 2:
                continue
            if not cjk and (len(phrase) < 2 or phrase.isdigit()):
                continue
            left = toks[i - 1] if i > 0 else "<s>"
            right = toks[i + n] if i + n < len(toks) else "</s>"
            out.setdefault(phrase, []).append((left, right))


def extract_candidates(notes: pd.DataFrame, config: HandbookConfig) -> list[NoteCandidates]:
    """Per note (row order), its candidate phrases (see module docstring, step 1).

    Hashtags are mapped to the text phrase they spell (see :func:`_map_hashtags_to_phrases`), so
    these are exactly the candidates :func:`build_handbook` works with.
    """
    has_tags = config.use_hashtags and "reference_tags" in notes.columns
    out: list[NoteCandidates] = []
    caps = notes["image_captions"] if "image_captions" in notes.columns else [()] * len(notes)
    tags = notes["reference_tags"] if has_tags else [()] * len(notes)
    for title, body, images, hashtags in zip(notes["title"], notes["body"], caps, tags, strict=True):
        cand = NoteCandidates()
        if config.use_text:
            for text in (title, body, *(images if images is not None else ())):
                _text_phrases(str(text or ""), config.max_ngram, cand.text)
        for h in hashtags if hashtags is not None else ():
            c = canonical(h)
            if c:
                cand.hashtags.add(c)
        out.append(cand)
    _map_hashtags_to_phrases(out)
    return out


# --------------------------------------------------------------------------- boilerplate


def _normalized_entropy(counts: Mapping[str, int], sizes: Mapping[str, int]) -> float:
    rates = np.array([counts[c] / max(sizes[c], 1) for c in counts], dtype=float)
    df = sum(counts.values())
    k = min(len(sizes), df)
    if k < 2 or rates.sum() <= 0:
        return 0.0
    q = rates / rates.sum()
    q = q[q > 0]
    return float(-(q * np.log(q)).sum() / math.log(k))


def _spread_phrases(
    docs: Iterable[tuple[str, Iterable[str]]], sizes: Mapping[str, int], config: HandbookConfig
) -> tuple[set[str], dict[str, Counter[str]]]:
    by_phrase: dict[str, Counter[str]] = defaultdict(Counter)
    for category, phrases in docs:
        for p in set(phrases):
            by_phrase[p][category] += 1
    out = set()
    for p, counts in by_phrase.items():
        df = sum(counts.values())
        if df < config.boilerplate_min_df or len(counts) < config.boilerplate_min_categories:
            continue
        if _normalized_entropy(counts, sizes) >= config.boilerplate_entropy:
            out.add(p)
    return out, by_phrase


def boilerplate_phrases(
    categories: Sequence[str], candidates: Sequence[NoteCandidates], config: HandbookConfig
) -> tuple[set[str], set[str]]:
    """The documented data-driven boilerplate rule (module docstring, step 2).

    Returns:
        (boilerplate phrases, boilerplate words used for the platform-noise rule).
    """
    sizes = Counter(categories)
    phrases, by_phrase = _spread_phrases(
        ((c, n.phrases()) for c, n in zip(categories, candidates, strict=True)), sizes, config
    )
    in_text: Counter[str] = Counter(p for n in candidates for p in n.text)
    # a phrase written in the text of most notes that have it is content (a colour shared by several
    # categories), not a platform tag: it needs a near-uniform spread to count as boilerplate
    phrases = {
        p
        for p in phrases
        if in_text[p] < 0.5 * sum(by_phrase[p].values())
        or _normalized_entropy(by_phrase[p], sizes) >= config.text_boilerplate_entropy
    }
    tag_words = (
        (c, {w for h in n.hashtags for w in segment(h) if w not in STOPWORDS})
        for c, n in zip(categories, candidates, strict=True)
    )
    noise_words, _ = _spread_phrases(tag_words, sizes, config)
    for n in candidates:
        for h in n.hashtags:
            if h not in phrases and is_cjk(h) and is_platform_noise(h, noise_words, config.noise_word_share):
                phrases.add(h)
    phrases |= {canonical(b) for b in config.extra_boilerplate}
    return phrases, noise_words


def is_platform_noise(phrase: str, noise_words: set[str] | frozenset[str], share: float) -> bool:
    """The platform-noise rule: boilerplate words cover >= ``share`` of the phrase's characters.

    Digits are neutral (neither noise nor content), so "2020穿搭" is judged on "穿搭" alone.
    """
    ws = [w for w in segment(phrase) if not w.isdigit()]
    total = sum(len(w) for w in ws)
    covered = sum(len(w) for w in ws if w in noise_words or w in STOPWORDS)
    return total > 0 and covered / total >= share


# --------------------------------------------------------------------------- engagement


def _note_engagement(interactions: pd.DataFrame | None) -> pd.DataFrame | None:
    if interactions is None or len(interactions) == 0:
        return None
    ev = interactions.assign(note_id=interactions["note_id"].astype(str))
    g = ev.groupby("note_id")
    out = pd.DataFrame(
        {
            "imp": g["event"].apply(lambda s: int((s == "impression").sum())),
            "click": g["event"].apply(lambda s: int((s == "click").sum())),
            "like": g["event"].apply(lambda s: int(s.isin(["like", "collect", "share", "comment"]).sum())),
        }
    )
    if "dwell_seconds" in ev.columns:
        out["dwell"] = g["dwell_seconds"].sum(min_count=1).fillna(0.0)
    else:
        out["dwell"] = 0.0
    out["imp"] = out[["imp", "click"]].max(axis=1)  # logs without impressions: clicks are exposures
    return out


@dataclass
class CategoryStats:
    """Counts for one category: notes, phrase document frequencies, contexts, co-occurrence input."""

    n_notes: int = 0
    df: Counter[str] = field(default_factory=Counter)
    contexts: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    note_phrases: list[set[str]] = field(default_factory=list)
    note_ids: list[str] = field(default_factory=list)


def _lift(
    phrases_of_notes: list[set[str]], note_ids: list[str], eng: pd.DataFrame | None, prior: float
) -> dict[str, float]:
    if eng is None:
        return {}
    rows = eng.reindex(note_ids).fillna(0.0)
    imp, click, like, dwell = (rows[c].to_numpy(float) for c in ("imp", "click", "like", "dwell"))
    if imp.sum() <= 0:
        return {}
    base = {
        "ctr": click.sum() / imp.sum(),
        "like": like.sum() / imp.sum(),
        "dwell": dwell.sum() / max(click.sum(), 1),
    }
    acc: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(4))
    for i, ps in enumerate(phrases_of_notes):
        vec = np.array([imp[i], click[i], like[i], dwell[i]])
        for p in ps:
            acc[p] += vec
    out = {}
    for p, (i_, c_, l_, d_) in acc.items():
        ctr = (c_ + prior * base["ctr"]) / (i_ + prior)
        lk = (l_ + prior * base["like"]) / (i_ + prior)
        dw = (
            (d_ + prior * base["ctr"] * base["dwell"]) / (c_ + prior * base["ctr"])
            if base["dwell"] > 0
            else 1.0
        )
        lifts = [
            ctr / base["ctr"] if base["ctr"] > 0 else 1.0,
            lk / base["like"] if base["like"] > 0 else 1.0,
        ]
        lifts.append(dw / base["dwell"] if base["dwell"] > 0 else 1.0)
        out[p] = float(np.exp(np.mean(np.log(np.maximum(lifts, 1e-6)))))
    return out


# --------------------------------------------------------------------------- build


def _check_notes(notes: pd.DataFrame) -> None:
    for col in ("note_id", "category", "title", "body"):
        if col not in notes.columns:
            raise ConfigError(
                f"build_handbook: notes has no column {col!r}; expected a canonical notes table"
            )


def _listed_boilerplate(
    candidates: Sequence[NoteCandidates], boiler: set[str]
) -> tuple[list[str], Counter[str]]:
    """Every boilerplate phrase, most frequent first, and its document frequency over all notes (the
    real one: the per-category counts leave boilerplate out)."""
    boiler_df: Counter[str] = Counter(p for cand in candidates for p in cand.phrases() & boiler)
    return sorted(boiler, key=lambda b: (-boiler_df[b], b)), boiler_df


@dataclass
class _Counts:
    """Per-category statistics of the non-boilerplate phrases, their document frequency over all
    notes and, per category, how many notes carry each as a hashtag."""

    stats: dict[str, CategoryStats] = field(default_factory=lambda: defaultdict(CategoryStats))
    total_df: Counter[str] = field(default_factory=Counter)
    tag_df: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


def _count(
    categories: Sequence[str], note_ids: Sequence[str], candidates: Sequence[NoteCandidates], boiler: set[str]
) -> _Counts:
    counts = _Counts()
    for cat, nid, cand in zip(categories, note_ids, candidates, strict=True):
        s = counts.stats[cat]
        s.n_notes += 1
        ps = cand.phrases() - boiler
        s.df.update(ps)
        counts.total_df.update(ps)
        s.note_phrases.append(ps)
        s.note_ids.append(nid)
        counts.tag_df[cat].update(cand.hashtags - boiler)
        for p, ctxs in cand.text.items():
            if p in boiler:
                continue
            for left, right in ctxs:
                s.contexts[p][f"L:{left}"] += 1
                s.contexts[p][f"R:{right}"] += 1
    return counts


def _weighted_values(
    s: CategoryStats,
    total_df: Counter[str],
    tag_df: Counter[str] | None,
    n_total: int,
    eng: pd.DataFrame | None,
    config: HandbookConfig,
) -> tuple[list[str], dict[str, float]]:
    """One category's kept values, heaviest first, and their raw weights (module docstring, steps 3-4);
    ``tag_df`` is given when values must be anchored by hashtags."""
    spec = {
        p: math.log((d + 1) / (s.n_notes + 1)) - math.log((total_df[p] + 1) / (n_total + 1))
        for p, d in s.df.items()
        if d >= config.min_df
    }
    kept = [
        p
        for p, sp in spec.items()
        if sp >= config.min_specificity and s.df[p] <= config.max_doc_share * s.n_notes
    ]
    if tag_df is not None:
        kept = [p for p in kept if tag_df[p] >= config.min_hashtag_df]
    kept = _drop_subsumed(kept, s, config)
    lift = _lift([ps & set(kept) for ps in s.note_phrases], s.note_ids, eng, config.engagement_prior)
    raw_w = {p: max(spec[p], 0.0) * lift.get(p, 1.0) * math.log1p(s.df[p]) for p in kept}
    return sorted(kept, key=lambda p: (-raw_w[p], p))[: config.max_values_per_category], raw_w


def _dimension_dicts(
    kept: list[str], raw_w: Mapping[str, float], s: CategoryStats, config: HandbookConfig
) -> list[dict[str, Any]]:
    """One category's dimensions in the :data:`DescribeHook` form."""
    top = max(raw_w[p] for p in kept) or 1.0
    examples = _examples(kept, s, config.examples_per_value)
    dims: list[dict[str, Any]] = []
    for name, members, ctx in group_dimensions(kept, s, config):
        merged = merge_synonyms(members, s, raw_w, config)[: config.max_values_per_dimension]
        values = [
            {
                "value": p,
                "weight": round(raw_w[p] / top, 4),
                "synonyms": syns,
                "examples": examples.get(p, []),
            }
            for p, syns in merged
        ]
        description = f"values seen with: {', '.join(ctx[:3])}" if ctx else ""
        dims.append({"name": name, "description": description, "values": values, "context": ctx})
    return dims


def _section(cat: str, n_notes: int, dims: Sequence[Mapping[str, Any]]) -> HandbookSection:
    return HandbookSection(
        description=f"{cat}: {n_notes} notes",
        dimensions=tuple(
            Dimension(
                name=d["name"],
                description=d.get("description", ""),
                values=tuple(DimensionValue(**v) for v in d["values"]),
            )
            for d in dims
            if d["values"]
        ),
    )


def build_handbook(
    notes: pd.DataFrame,
    interactions: pd.DataFrame | None = None,
    *,
    config: HandbookConfig | None = None,
    describe: DescribeHook | None = None,
    built_from: str = "",
) -> Handbook:
    """Build a handbook from a canonical ``notes`` table (and ``interactions`` when there are any).

    Args:
        notes: canonical notes (title, body, image_captions, category; reference_tags optional).
        interactions: canonical interactions, for engagement weights (optional).
        config: builder knobs; defaults to :class:`HandbookConfig`.
        describe: optional hook (e.g. an LLM) to rename, merge and describe each category's dimensions.
        built_from: provenance string stored in the handbook.

    Returns:
        A versioned :class:`Handbook` (categories with at least one kept value).

    Raises:
        ConfigError: ``notes`` lacks a needed column.
    """
    config = config or HandbookConfig()
    _check_notes(notes)
    categories = [str(c) for c in notes["category"]]
    candidates = extract_candidates(notes, config)
    boiler, noise_words = boilerplate_phrases(categories, candidates, config)
    listed, boiler_df = _listed_boilerplate(candidates, boiler)
    log.info(
        "handbook: %d notes, %d boilerplate phrases (all listed; most frequent: %s), %d noise words",
        len(notes),
        len(listed),
        ", ".join(f"{b} ({boiler_df[b]})" for b in listed[: config.log_boilerplate]),
        len(noise_words),
    )
    counts = _count(categories, [str(n) for n in notes["note_id"]], candidates, boiler)
    anchored = config.hashtag_anchored
    if anchored is None:
        anchored = sum(bool(c.hashtags) for c in candidates) >= 0.3 * max(len(candidates), 1)
    eng = _note_engagement(interactions)
    sections: dict[str, HandbookSection] = {}
    for cat in sorted(counts.stats):
        s = counts.stats[cat]
        tag_df = counts.tag_df[cat] if anchored else None
        kept, raw_w = _weighted_values(s, counts.total_df, tag_df, len(notes), eng, config)
        if not kept:
            continue
        dims = _dimension_dicts(kept, raw_w, s, config)
        if describe is not None:
            dims = describe(cat, dims)
        sections[cat] = _section(cat, s.n_notes, dims)
    return Handbook(built_from=built_from, boilerplate=tuple(listed), categories=sections).with_version()


def _map_hashtags_to_phrases(candidates: Sequence[NoteCandidates]) -> None:
    """Hashtags are written without spaces ("creamwhite"): map each to the text phrase it spells."""
    compact: dict[str, str] = {}
    for cand in candidates:
        for p in cand.text:
            if " " in p:
                compact.setdefault(p.replace(" ", ""), p)
    for cand in candidates:
        cand.hashtags = {compact.get(h.replace(" ", ""), h) for h in cand.hashtags}


def _drop_subsumed(kept: list[str], s: CategoryStats, config: HandbookConfig) -> list[str]:
    kept_set = set(kept)
    longer_of: dict[str, list[str]] = defaultdict(list)
    for p in kept:
        toks = p.split()
        for n in range(1, len(toks)):
            for i in range(len(toks) - n + 1):
                sub = " ".join(toks[i : i + n])
                if sub in kept_set:
                    longer_of[sub].append(p)
    # 1. a phrase seen mostly inside longer kept phrases ("white" in "cream white", "bone white")
    out = [p for p in kept if sum(s.df[q] for q in longer_of.get(p, [])) < config.subsume_share * s.df[p]]
    # 2. a longer phrase that is a kept phrase plus a context word ("cream white version") goes
    out_set = set(out)
    extension = {
        q
        for p in out
        for q in longer_of.get(p, [])
        if q in out_set and s.df[q] < config.subsume_share * s.df[p]
    }
    return [p for p in out if p not in extension]


def _examples(kept: Sequence[str], s: CategoryStats, k: int) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    keep = set(kept)
    for nid, ps in zip(s.note_ids, s.note_phrases, strict=True):
        for p in ps & keep:
            if len(out[p]) < k:
                out[p].append(nid)
    return out
