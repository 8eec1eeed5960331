"""Sufficient statistics of one arm: count, sums and sums of cross products of a few variables.

A :class:`Moments` value is all the estimators need (gbstats style): means, sample covariances and the
delta method follow from it, and two disjoint samples combine by addition, which is what lets the event
aggregation and the benchmark run chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ab_analysis.errors import InvalidArgumentError

__all__ = ["Moments"]


@dataclass(frozen=True)
class Moments:
    """Count, sums and cross-product sums of ``k`` variables over the units (users) of one arm.

    Args:
        names: variable names, shape (k,).
        n: number of units.
        sums: ``sum_u x_u[i]``, shape (k,).
        cross: ``sum_u x_u[i] * x_u[j]``, shape (k, k), symmetric.

    Example:
        >>> m = Moments.from_sums(n=3, total=6.0, total_sq=14.0)
        >>> float(m.mean()[0]), float(m.cov()[0, 0])
        (2.0, 1.0)
    """

    names: tuple[str, ...]
    n: int
    sums: tuple[float, ...]
    cross: tuple[tuple[float, ...], ...]

    def __post_init__(self) -> None:
        k = len(self.names)
        if self.n < 0:
            raise InvalidArgumentError("n", self.n, "a non-negative count")
        if len(self.sums) != k or len(self.cross) != k or any(len(r) != k for r in self.cross):
            raise InvalidArgumentError(
                "sums/cross", (len(self.sums), len(self.cross)), f"shapes ({k},) and ({k}, {k}) for {k} names"
            )
        if len(set(self.names)) != k:
            raise InvalidArgumentError("names", self.names, "distinct variable names")

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float, name: str = "y") -> Moments:
        """One variable from ``n``, ``sum`` and ``sum of squares``."""
        return cls((name,), int(n), (float(total),), ((float(total_sq),),))

    @classmethod
    def from_matrix(cls, names: Sequence[str], x: npt.NDArray[np.float64]) -> Moments:
        """From a (n, k) matrix of unit-level values (no NaN allowed; drop them before)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(names):
            raise InvalidArgumentError("x", x.shape, f"a 2-D array with {len(names)} columns")
        sums = x.sum(axis=0)
        cross = x.T @ x
        return cls(
            tuple(names),
            int(x.shape[0]),
            tuple(float(v) for v in sums),
            tuple(tuple(float(v) for v in row) for row in cross),
        )

    @classmethod
    def from_arrays(cls, data: Mapping[str, npt.ArrayLike]) -> Moments:
        """From a mapping name -> 1-D array of unit-level values (all the same length)."""
        names = list(data)
        cols = [np.asarray(data[k], dtype=np.float64).ravel() for k in names]
        if len({c.shape[0] for c in cols}) > 1:
            raise InvalidArgumentError(
                "data", {k: c.shape[0] for k, c in zip(names, cols, strict=True)}, "arrays of equal length"
            )
        x = np.column_stack(cols) if cols else np.empty((0, 0))
        return cls.from_matrix(names, x)

    def index(self, name: str) -> int:
        """Position of variable ``name``; raises naming the known variables."""
        try:
            return self.names.index(name)
        except ValueError:
            raise InvalidArgumentError("variable", name, f"one of {list(self.names)!r}") from None

    def mean(self) -> npt.NDArray[np.float64]:
        """Sample means, shape (k,); NaN when ``n == 0``."""
        s = np.asarray(self.sums, dtype=np.float64)
        return s / self.n if self.n > 0 else np.full_like(s, np.nan)

    def cov(self) -> npt.NDArray[np.float64]:
        """Sample covariance matrix (ddof=1), shape (k, k); NaN when ``n < 2``."""
        c = np.asarray(self.cross, dtype=np.float64)
        if self.n < 2:
            return np.full_like(c, np.nan)
        s = np.asarray(self.sums, dtype=np.float64)
        cov = (c - np.outer(s, s) / self.n) / (self.n - 1)
        # Rounding can make a zero variance slightly negative; a variance is never below zero.
        d = np.diag_indices_from(cov)
        cov[d] = np.maximum(cov[d], 0.0)
        return cov

    def __add__(self, other: Moments) -> Moments:
        if not isinstance(other, Moments):
            return NotImplemented
        if other.names != self.names:
            raise InvalidArgumentError("other.names", other.names, f"the same names {self.names!r}")
        return Moments(
            self.names,
            self.n + other.n,
            tuple(a + b for a, b in zip(self.sums, other.sums, strict=True)),
            tuple(
                tuple(a + b for a, b in zip(ra, rb, strict=True))
                for ra, rb in zip(self.cross, other.cross, strict=True)
            ),
        )
