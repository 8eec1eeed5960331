"""Multiple-testing corrections: Holm (family-wise error) and Benjamini–Hochberg (false discovery rate).

NaN p-values (results without inference) are left out of the family and stay NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ab_analysis.errors import InvalidArgumentError

__all__ = ["CORRECTIONS", "adjust_pvalues"]

CORRECTIONS = ("holm", "bh", "none")
Correction = Literal["holm", "bh", "none"]


def adjust_pvalues(p_values: Sequence[float], method: str = "holm") -> list[float]:
    """Adjusted p-values in the input order.

    Args:
        p_values: raw p-values in [0, 1] or NaN.
        method: ``"holm"``, ``"bh"`` (Benjamini–Hochberg) or ``"none"``.

    Returns:
        Adjusted p-values (monotone step-down/step-up as in statsmodels' ``multipletests``).

    Raises:
        InvalidArgumentError: unknown method or a p-value outside [0, 1].
    """
    import numpy as np  # lazy: the CLI imports CORRECTIONS for its --help

    if method not in CORRECTIONS:
        raise InvalidArgumentError("correction", method, f"one of {list(CORRECTIONS)!r}")
    p = np.asarray(p_values, dtype=np.float64)
    bad = p[~np.isnan(p) & ((p < 0) | (p > 1))]
    if bad.size:
        raise InvalidArgumentError("p_values", float(bad[0]), "values in [0, 1] or NaN")
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    m = q.size
    if m == 0 or method == "none":
        out[ok] = q
        return [float(v) for v in out]
    order = np.argsort(q, kind="mergesort")
    sorted_p = q[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * sorted_p)
    else:
        adj = np.minimum.accumulate((m / np.arange(m, 0, -1)) * sorted_p[::-1])[::-1]
    adj = np.minimum(adj, 1.0)
    res = np.empty(m)
    res[order] = adj
    out[ok] = res
    return [float(v) for v in out]
