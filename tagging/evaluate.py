"""Tag-quality evaluation and the handbook's dimension-recovery metric.

**Tag quality** (:func:`evaluate_tags`), overall and per category, against gold tags. A note's gold
is a list of items, each a set of acceptable canonical forms (synthetic community: every surface form
of each true attribute value, from ``taxonomy``; KuaiRec/MovieLens: the cleaned reference tags, one
form each). A predicted tag matches an item *exactly* when its canonical form (or its space-free
form) is one of the item's forms, and *fuzzily* when it is a near-duplicate of one
(:func:`tagging.normalize.near_duplicate`: whole-word containment, or similarity >= 0.8). Each item
is matched at most once; precision, recall and F1 are micro-averaged over notes.

- ``redundancy``: near-duplicate pairs among a note's tags / all pairs of its tags (micro).
- ``boilerplate_rate``: share of tags that are boilerplate (the given list).
- ``granularity``: share of tags more specific than the note's category: not the category name,
  not boilerplate, not a stopword.
- ``handbook_rate``: share of tags that are handbook values of the note's category;
  ``dimension_coverage``: per category, the share of its handbook dimensions used by at least one
  tag, averaged over categories.

**Dimension recovery** (:func:`dimension_recovery`). For each true (category, dimension) group, every
handbook value of that category is mapped to the true value whose surface form it equals (after
:func:`~tagging.normalize.canonical`, leading/trailing stopwords removed; synonyms count). The
handbook dimension with the most distinct true values of the group is its match. *Purity* = share of
that handbook dimension's mapped values that belong to the true dimension; *coverage* = share of the
group's true values it contains. A group is **recovered** when purity >= 0.8 and coverage >= 0.5.
The headline is the share of groups recovered.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from tagging.handbook import STOPWORDS
from tagging.handbook_model import Handbook
from tagging.normalize import canonical, handbook_lookup, near_duplicate

__all__ = [
    "DimensionRecovery",
    "GroupRecovery",
    "TagQuality",
    "dimension_recovery",
    "evaluate_tags",
    "gold_from_reference",
    "gold_from_synthetic",
    "match_key",
]

PURITY_MIN = 0.8
COVERAGE_MIN = 0.5


def match_key(text: str) -> str:
    """Canonical form without leading/trailing stopwords ("The Ordinary" -> "ordinary")."""
    toks = canonical(text).split()
    while toks and toks[0] in STOPWORDS:
        toks = toks[1:]
    while toks and toks[-1] in STOPWORDS:
        toks = toks[:-1]
    return " ".join(toks)


# --------------------------------------------------------------------------- dimension recovery


@dataclass(frozen=True)
class GroupRecovery:
    category: str
    dimension: str
    n_true_values: int
    matched_dimension: str | None
    covered_values: int
    coverage: float
    purity: float
    recovered: bool


@dataclass(frozen=True)
class DimensionRecovery:
    """The headline (``recovered_share``) and one row per true group."""

    recovered_share: float
    n_groups: int
    n_recovered: int
    mean_purity: float
    mean_coverage: float
    groups: tuple[GroupRecovery, ...]

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["unrecovered"] = [f"{g.category}/{g.dimension}" for g in self.groups if not g.recovered]
        del d["groups"]
        return d


def dimension_recovery(
    handbook: Handbook,
    taxonomy: pd.DataFrame,
    *,
    purity_min: float = PURITY_MIN,
    coverage_min: float = COVERAGE_MIN,
) -> DimensionRecovery:
    """Score how well ``handbook`` recovers the true dimensions in ``taxonomy`` (module docstring).

    Args:
        handbook: the built (or edited) handbook.
        taxonomy: ground truth with columns category, dimension, value, surface_forms.
    """
    groups: list[GroupRecovery] = []
    for cat, tax in taxonomy.groupby("category", sort=True):
        key_to_true: dict[str, tuple[str, str]] = {}
        for dim, value, forms in zip(tax["dimension"], tax["value"], tax["surface_forms"], strict=True):
            for f in [value, *list(forms)]:
                key_to_true.setdefault(match_key(f), (dim, value))
        # handbook dimension -> {handbook value -> true (dim, value)}
        mapped: dict[str, dict[str, tuple[str, str]]] = {}
        for hd in handbook.section(str(cat)).dimensions:
            m: dict[str, tuple[str, str]] = {}
            for v in hd.values:
                for f in (v.value, *v.synonyms):
                    hit = key_to_true.get(match_key(f)) or key_to_true.get(match_key(f).replace(" ", ""))
                    if hit is not None:
                        m[v.value] = hit
                        break
            mapped[hd.name] = m
        for dim, dtax in tax.groupby("dimension", sort=True):
            n_true = int(dtax["value"].nunique())
            best, best_cov = None, 0
            for hd_name, m in mapped.items():
                cov = len({tv for td, tv in m.values() if td == dim})
                if cov > best_cov:
                    best, best_cov = hd_name, cov
            purity = 0.0
            if best is not None:
                m = mapped[best]
                purity = sum(1 for td, _ in m.values() if td == dim) / max(len(m), 1)
            coverage = best_cov / max(n_true, 1)
            groups.append(
                GroupRecovery(
                    str(cat),
                    str(dim),
                    n_true,
                    best,
                    best_cov,
                    round(coverage, 4),
                    round(purity, 4),
                    purity >= purity_min and coverage >= coverage_min,
                )
            )
    n = len(groups)
    rec = sum(g.recovered for g in groups)
    return DimensionRecovery(
        recovered_share=round(rec / n, 4) if n else 0.0,
        n_groups=n,
        n_recovered=rec,
        mean_purity=round(sum(g.purity for g in groups) / n, 4) if n else 0.0,
        mean_coverage=round(sum(g.coverage for g in groups) / n, 4) if n else 0.0,
        groups=tuple(groups),
    )


# --------------------------------------------------------------------------- gold tags

Gold = dict[str, list[frozenset[str]]]


def gold_from_synthetic(note_attributes: pd.DataFrame, taxonomy: pd.DataFrame) -> Gold:
    """note_id -> one item per true attribute value (its surface forms, canonical and space-free)."""
    forms = {
        (c, d, v): frozenset(
            {canonical(x) for x in [v, *list(f)]} | {canonical(x).replace(" ", "") for x in [v, *list(f)]}
        )
        for c, d, v, f in zip(
            taxonomy["category"],
            taxonomy["dimension"],
            taxonomy["value"],
            taxonomy["surface_forms"],
            strict=True,
        )
    }
    out: Gold = defaultdict(list)
    seen: set[tuple[str, str, str]] = set()
    for nid, c, d, v in zip(
        note_attributes["note_id"],
        note_attributes["category"],
        note_attributes["dimension"],
        note_attributes["value"],
        strict=True,
    ):
        key = (str(nid), str(d), str(v))
        if key in seen:
            continue
        seen.add(key)
        out[str(nid)].append(forms.get((c, d, v), frozenset({canonical(v)})))
    return dict(out)


def gold_from_reference(reference: Mapping[str, Iterable[str]]) -> Gold:
    """note_id -> one item per (already cleaned) reference tag."""
    return {nid: [frozenset({canonical(t)}) for t in tags if canonical(t)] for nid, tags in reference.items()}


# --------------------------------------------------------------------------- tag quality


@dataclass(frozen=True)
class TagQuality:
    n_notes: int
    tags_per_note: float
    precision: float
    recall: float
    f1: float
    fuzzy_precision: float
    fuzzy_recall: float
    fuzzy_f1: float
    redundancy: float
    boilerplate_rate: float
    granularity: float
    handbook_rate: float
    dimension_coverage: float


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _matches(pred: Sequence[str], gold: Sequence[frozenset[str]], fuzzy: bool) -> int:
    used = [False] * len(gold)
    hits = 0
    for t in pred:
        for i, item in enumerate(gold):
            if used[i]:
                continue
            ok = t in item or t.replace(" ", "") in item
            if not ok and fuzzy:
                ok = any(near_duplicate(t, f) for f in item)
            if ok:
                used[i] = True
                hits += 1
                break
    return hits


def _quality(
    pred: Mapping[str, Sequence[str]],
    gold: Mapping[str, Sequence[frozenset[str]]],
    categories: Mapping[str, str],
    note_ids: Sequence[str],
    boiler: set[str],
    handbook: Handbook | None,
) -> TagQuality:
    n_pred = n_gold = hit = fhit = pairs = dup = n_boiler = n_gran = n_hb = 0
    lookups: dict[str, dict[str, Any]] = {}
    used_dims: dict[str, set[str]] = defaultdict(set)
    for nid in note_ids:
        tags = list(dict.fromkeys(canonical(t) for t in pred.get(nid, ()) if canonical(t)))
        g = gold.get(nid, [])
        cat = categories.get(nid, "")
        n_pred += len(tags)
        n_gold += len(g)
        hit += _matches(tags, g, fuzzy=False)
        fhit += _matches(tags, g, fuzzy=True)
        for i in range(len(tags)):
            for j in range(i + 1, len(tags)):
                pairs += 1
                dup += near_duplicate(tags[i], tags[j])
        cat_c = canonical(cat)
        for t in tags:
            is_b = t in boiler
            n_boiler += is_b
            n_gran += not is_b and t != cat_c and t not in STOPWORDS
        if handbook is not None:
            if cat not in lookups:
                lookups[cat] = handbook_lookup(handbook, cat)
            for t in tags:
                entry = lookups[cat].get(t)
                if entry is not None:
                    n_hb += 1
                    used_dims[cat].add(entry.dimension)
    p = hit / n_pred if n_pred else 0.0
    r = hit / n_gold if n_gold else 0.0
    fp = fhit / n_pred if n_pred else 0.0
    fr = fhit / n_gold if n_gold else 0.0
    cov = []
    if handbook is not None:
        for cat in {categories.get(n, "") for n in note_ids}:
            dims = {d.name for d in handbook.section(cat).dimensions}
            if dims:
                cov.append(len(used_dims[cat] & dims) / len(dims))
    return TagQuality(
        n_notes=len(note_ids),
        tags_per_note=round(n_pred / max(len(note_ids), 1), 3),
        precision=round(p, 4),
        recall=round(r, 4),
        f1=round(_f1(p, r), 4),
        fuzzy_precision=round(fp, 4),
        fuzzy_recall=round(fr, 4),
        fuzzy_f1=round(_f1(fp, fr), 4),
        redundancy=round(dup / pairs, 4) if pairs else 0.0,
        boilerplate_rate=round(n_boiler / n_pred, 4) if n_pred else 0.0,
        granularity=round(n_gran / n_pred, 4) if n_pred else 0.0,
        handbook_rate=round(n_hb / n_pred, 4) if n_pred else 0.0,
        dimension_coverage=round(sum(cov) / len(cov), 4) if cov else 0.0,
    )


def evaluate_tags(
    pred: Mapping[str, Sequence[str]],
    gold: Mapping[str, Sequence[frozenset[str]]],
    categories: Mapping[str, str],
    *,
    note_ids: Sequence[str] | None = None,
    boilerplate: Iterable[str] = (),
    handbook: Handbook | None = None,
) -> dict[str, Any]:
    """Tag quality overall and per category (see module docstring).

    Args:
        pred: note_id -> predicted tag texts.
        gold: note_id -> gold items (sets of acceptable canonical forms).
        categories: note_id -> category.
        note_ids: the notes to score (default: every note in ``gold``).
        boilerplate: boilerplate phrases (for ``boilerplate_rate``).
        handbook: for ``handbook_rate`` and ``dimension_coverage``.

    Returns:
        ``{"overall": {...}, "per_category": {category: {...}}}``.
    """
    ids = list(note_ids) if note_ids is not None else list(gold)
    boiler = {canonical(b) for b in boilerplate}
    overall = _quality(pred, gold, categories, ids, boiler, handbook)
    by_cat: dict[str, list[str]] = defaultdict(list)
    for nid in ids:
        by_cat[categories.get(nid, "")].append(nid)
    per = {
        c: asdict(_quality(pred, gold, categories, n, boiler, handbook)) for c, n in sorted(by_cat.items())
    }
    return {"overall": asdict(overall), "per_category": per}


def tag_texts(tags_table: pd.DataFrame) -> dict[str, list[str]]:
    """A canonical ``tags`` table -> note_id -> tag texts."""
    return {
        str(n): [t["text"] for t in (ts if ts is not None else [])]
        for n, ts in zip(tags_table["note_id"], tags_table["tags"], strict=True)
    }


def count_tags(pred: Mapping[str, Sequence[str]]) -> Counter[str]:
    return Counter(canonical(t) for ts in pred.values() for t in ts)
