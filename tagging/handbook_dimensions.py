"""Handbook step 5: group one category's values into dimensions and fold synonymous values together.

See :mod:`tagging.handbook` (module docstring, step 5) for the rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from tagging.stopwords import STOPWORDS

if TYPE_CHECKING:
    from tagging.handbook import CategoryStats, HandbookConfig

__all__ = ["group_dimensions", "merge_synonyms"]


def _cooccurrence(values: Sequence[str], stats: CategoryStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Notes in which each pair of ``values`` occurs together (V, V), their document frequencies (V,)
    and the co-occurrence chance predicts (V, V)."""
    index = {p: i for i, p in enumerate(values)}
    co = np.zeros((len(values), len(values)))
    for ps in stats.note_phrases:
        present = [index[p] for p in ps if p in index]
        for a in present:
            for b in present:
                co[a, b] += 1
    df = np.array([stats.df[p] for p in values], dtype=float)
    expected = np.outer(df, df) / max(stats.n_notes, 1)
    return co, df, expected


def _context_distance(values: Sequence[str], stats: CategoryStats, config: HandbookConfig) -> np.ndarray:
    """Cosine distance of the values' tf-idf context vectors (V, V), set to 1 for independent
    attributes and to 0 for synonyms by their co-occurrence."""
    feats = sorted({f for v in values for f in stats.contexts[v]})
    col = {f: j for j, f in enumerate(feats)}
    mat = np.zeros((len(values), len(feats)))
    for i, v in enumerate(values):
        for f, n in stats.contexts[v].items():
            mat[i, col[f]] = n
    tf = mat / mat.sum(axis=1, keepdims=True)
    idf = np.log((1 + len(values)) / (1 + (mat > 0).sum(axis=0))) + 1
    x = tf * idf
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    dist = np.clip(1 - x @ x.T, 0, 1)
    co, _, expected = _cooccurrence(values, stats)
    ratio = co / np.maximum(expected, 1e-9)
    # different dimensions co-occur about as often as chance; one dimension's values almost never;
    # synonyms of one value (title says "off-white", body "cream white") far more often.
    dist[(co >= 2) & (ratio >= config.max_cooccurrence) & (ratio < config.synonym_ratio)] = 1.0
    dist[(co >= 3) & (ratio >= config.synonym_ratio)] = 0.0
    np.fill_diagonal(dist, 0.0)
    return dist


def _cluster(values: Sequence[str], stats: CategoryStats, config: HandbookConfig) -> list[list[str]]:
    """Average-link clusters of ``values`` (at least two) cut at ``config.cluster_distance``."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    dist = _context_distance(values, stats, config)
    z = linkage(squareform(dist, checks=False), method="average")
    labels = fcluster(z, t=config.cluster_distance, criterion="distance")
    return [[v for v, lb in zip(values, labels, strict=True) if lb == lab] for lab in sorted(set(labels))]


def _context_words(members: Sequence[str], stats: CategoryStats) -> list[str]:
    """The five most frequent context words of a group (no stopwords, digits or the group's values)."""
    ctx: Counter[str] = Counter()
    for v in members:
        for f, n in stats.contexts[v].items():
            w = f[2:]
            if w not in STOPWORDS and w not in ("<s>", "</s>") and not w.isdigit() and w not in members:
                ctx[w] += n
    return [w for w, _ in sorted(ctx.items(), key=lambda kv: (-kv[1], kv[0]))[:5]]


def group_dimensions(
    values: Sequence[str], stats: CategoryStats, config: HandbookConfig
) -> list[tuple[str, list[str], list[str]]]:
    """Cluster one category's values into dimensions (:mod:`tagging.handbook` docstring, step 5).

    Returns:
        [(dimension name, values, dominant context words)], largest first.
    """
    with_ctx = [v for v in values if sum(stats.contexts[v].values()) >= config.min_context]
    no_ctx = [v for v in values if v not in set(with_ctx)]
    groups: list[tuple[str, list[str]]] = []
    if len(with_ctx) == 1:
        groups.append(("", with_ctx))
    elif with_ctx:
        groups += [("", members) for members in _cluster(with_ctx, stats, config)]
    if no_ctx:
        groups.append(("topic", no_ctx))

    named: list[tuple[str, list[str], list[str]]] = []
    used: set[str] = set()
    for name, members in sorted(groups, key=lambda g: (g[0] == "topic", -len(g[1]), min(g[1]))):
        words = _context_words(members, stats)
        if not name:
            name = next((w for w in words if w not in used), f"dimension {len(named) + 1}")
        if name in used:
            name = f"{name} {len(named) + 1}"
        used.add(name)
        named.append((name, members, words))
    return named


def merge_synonyms(
    members: Sequence[str], stats: CategoryStats, weight: Mapping[str, float], config: HandbookConfig
) -> list[tuple[str, list[str]]]:
    """Fold one dimension's synonymous values together (:mod:`tagging.handbook` docstring, step 5).

    Values are visited heaviest first; a value joins the head it is most strongly a synonym of (the
    rule must hold between the value and the head itself, so chains do not merge), or becomes a head.

    Returns:
        [(value, synonyms)] heaviest first; every member appears exactly once.
    """
    order = sorted(members, key=lambda p: (-weight[p], p))
    if config.synonym_share is None or len(order) < 2:
        return [(p, []) for p in order]
    co, df, expected = _cooccurrence(order, stats)
    share = co / np.maximum(np.maximum.outer(df, df), 1.0)
    synonym = (co >= 3) & (co >= config.synonym_ratio * expected) & (share >= config.synonym_share)
    heads: list[int] = []
    groups: dict[int, list[str]] = {}
    for i, p in enumerate(order):
        linked = [h for h in heads if synonym[i, h]]
        if linked:
            groups[max(linked, key=lambda h: (share[i, h], -h))].append(p)
        else:
            heads.append(i)
            groups[i] = []
    return [(order[h], groups[h]) for h in heads]
