"""Strict input checks: variant labels, user ids and per-metric plausibility (one-line errors).

Label normalization (variants, and user ids when events and assignments disagree on the type): every
value becomes a string with ``str()``, except that integers and integral floats become the integer's
digits (``1``, ``1.0`` and ``np.int64(1)`` all become ``"1"``, since a CSV column with a missing value is read
as floats). Nothing else happens by default: ``"TEST"`` is not ``"test"`` and ``"treatment "`` (trailing
space) is not ``"treatment"``. ``normalize_labels=True`` (``--normalize-labels``) also strips whitespace
and case-folds, on both the data and the arm names. Missing labels (NaN/None) are never an arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from ab_analysis.errors import InvalidArgumentError, InvalidValuesError
from ab_analysis.metrics import MetricDef

__all__ = [
    "MISSING_LABEL",
    "VariantCodes",
    "check_plausible",
    "check_unique_ids",
    "normalize_label",
    "normalize_labels",
    "variant_codes",
]

MISSING_LABEL = "<missing>"


def normalize_label(value: object, fold: bool = False) -> str | None:
    """One label as a string (module docstring); ``None`` for a missing value."""
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        if math.isfinite(value) and float(value).is_integer():
            return str(int(value))
    if isinstance(value, bool | np.bool_):
        text = str(bool(value))
    elif isinstance(value, int | np.integer):
        text = str(int(value))
    else:
        text = str(value)
    return text.strip().casefold() if fold else text


def normalize_labels(values: pd.Series, fold: bool = False) -> npt.NDArray[np.object_]:
    """Normalized labels of a column (``None`` where missing); one conversion per distinct value."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    table = np.array([normalize_label(u, fold) for u in uniques] + [None], dtype=object)
    return table[np.where(codes < 0, len(uniques), codes)]


@dataclass(frozen=True)
class VariantCodes:
    """Arm code per row (0 control, i for the i-th treatment, -1 dropped) and what was dropped."""

    codes: npt.NDArray[np.int64]
    arms: tuple[str, ...]
    dropped: dict[str, int]


def variant_codes(
    variants: pd.Series,
    arms: Sequence[str],
    *,
    table: str = "users",
    column: str = "variant",
    drop_unknown: bool = False,
    fold: bool = False,
) -> VariantCodes:
    """Map a variant column onto ``arms`` (control first) after label normalization.

    Raises:
        InvalidArgumentError: an arm has no row or two arms normalize to the same label.
        InvalidValuesError: rows whose label is no arm (unless ``drop_unknown``), naming the values,
            their counts and the expected labels.
    """
    names = [normalize_label(a, fold) or "" for a in arms]
    for i, name in enumerate(names[1:], start=1):
        if name in names[:i]:
            other = "control" if names.index(name) == 0 else "another treatment"
            raise InvalidArgumentError(
                "treatment", arms[i], f"a variant different from {other}={arms[names.index(name)]!r}"
            )
    labels = normalize_labels(variants, fold)
    codes = np.full(len(labels), -1, dtype=np.int64)
    for i, name in enumerate(names):
        codes[labels == name] = i
    unknown = codes < 0
    present = set(labels[~unknown].tolist())
    for role, name in zip(["control"] + ["treatment"] * (len(names) - 1), names, strict=True):
        if name not in present:
            seen = sorted({str(v) for v in labels.tolist() if v is not None})
            raise InvalidArgumentError(role, name, f"a label present in column {column!r}: {seen!r}")
    dropped: dict[str, int] = {}
    if unknown.any():
        vals, counts = np.unique(
            np.array([MISSING_LABEL if v is None else v for v in labels[unknown]], dtype=object).astype(str),
            return_counts=True,
        )
        dropped = {str(v): int(c) for v, c in zip(vals, counts, strict=True)}
        if not drop_unknown:
            raise InvalidValuesError(
                table,
                column,
                "labels that are no analysed arm",
                dropped,
                f"one of {names!r}",
                "fix the labels, name the arm with --treatment, pass --normalize-labels (strip + "
                "case-fold) or --drop-unknown-variants to drop these rows",
            )
    return VariantCodes(codes, tuple(names), dropped)


def check_unique_ids(ids: pd.Series, table: str, column: str) -> None:
    """Raise when a user id occurs more than once (a user would count twice).

    Raises:
        InvalidValuesError: naming the column, the duplicated ids with their row counts.
    """
    dup = ids[ids.duplicated(keep=False)]
    if len(dup):
        counts = dup.value_counts()
        raise InvalidValuesError(
            table,
            column,
            f"{len(counts)} duplicated user ids",
            {k: int(v) for k, v in counts.items()},
            "one row per user (aggregate per user first)",
        )


def _bad_counts(values: npt.NDArray[np.float64], mask: npt.NDArray[np.bool_]) -> dict[object, int]:
    vals, counts = np.unique(values[mask], return_counts=True)
    return {float(v): int(c) for v, c in zip(vals, counts, strict=True)}


def check_finite(table: str, column: str, values: npt.NDArray[np.float64]) -> None:
    """Raise on ±inf (NaN is allowed: it drops the row for the metric).

    Raises:
        InvalidValuesError: naming the column and the counts of inf and -inf.
    """
    bad = np.isinf(values)
    if bad.any():
        raise InvalidValuesError(
            table, column, "infinite values", _bad_counts(values, bad), "finite numbers (or NaN for missing)"
        )


def check_plausible(
    table: str,
    metric: MetricDef,
    columns: dict[str, tuple[str, npt.NDArray[np.float64]]],
    rows: npt.NDArray[np.bool_],
) -> None:
    """Plausibility of one metric's columns on the analysed rows, by the metric's value kind.

    Args:
        table: table name for the message.
        metric: the definition (its ``value_kind`` and ``type``).
        columns: role (``y``, ``d``, ``x``, ``xd``) -> (column name, values).
        rows: the rows of analysed arms.

    Raises:
        InvalidValuesError: naming the metric, column, offending values and counts, and the expected range.
    """
    kind = metric.value_kind
    for role, (name, values) in columns.items():
        v = values[rows]
        check_finite(table, name, v)
        if role in ("x", "xd"):
            continue
        with np.errstate(invalid="ignore"):
            neg = v < 0
            above = (v > 1) if (kind == "proportion" and metric.type != "ratio") else np.zeros_like(neg)
        if kind in ("count", "duration", "proportion") and neg.any():
            raise InvalidValuesError(
                table,
                name,
                f"negative values for {kind} metric {metric.name!r}",
                _bad_counts(v, neg),
                "values >= 0 (or declare the metric kind: continuous)",
            )
        if above.any():
            raise InvalidValuesError(
                table,
                name,
                f"values above 1 for proportion metric {metric.name!r}",
                _bad_counts(v, above),
                "proportions in [0, 1]",
            )
    if kind == "proportion" and metric.type == "ratio" and "d" in columns:
        num, den = columns["y"][1][rows], columns["d"][1][rows]
        with np.errstate(invalid="ignore", divide="ignore"):
            over = num > den
            ratio = num / den
        if over.any():
            raise InvalidValuesError(
                table,
                columns["y"][0],
                f"exceeds {columns['d'][0]!r} (per-user {metric.name} > 1) for proportion metric "
                f"{metric.name!r}; per-user ratios",
                _bad_counts(ratio, over),
                f"{columns['y'][0]} <= {columns['d'][0]} per user (or declare kind: continuous)",
            )
