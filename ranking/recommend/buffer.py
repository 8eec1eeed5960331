"""An array with spare capacity, so that appending one row at a time costs amortized O(1)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["GrowableArray"]


class GrowableArray:
    """Rows ``[0, size)`` of a buffer whose capacity doubles when full.

    ``np.append`` copies the whole array per call, so adding N rows one by one costs O(N^2); here a
    row costs O(1) amortized: the buffer is reallocated only when full, to twice its capacity.

    Args:
        values: the initial rows (copied); the first axis grows.
        dtype: the element type (default: ``values``'s).

    Example::

        a = GrowableArray(np.arange(3))
        a.extend([7, 8])
        a.view()          # array([0, 1, 2, 7, 8]); a view, valid until the next reallocation
    """

    def __init__(self, values: ArrayLike, dtype: np.dtype | type | None = None) -> None:
        data = np.array(values, dtype=dtype, copy=True)
        if data.ndim == 0:
            raise ValueError(f"values: got a scalar {values!r}; expected an array of rows")
        self._data = data
        self.size = len(data)
        self.reallocations = 0

    @property
    def capacity(self) -> int:
        return len(self._data)

    def view(self) -> np.ndarray:
        """The ``size`` rows in use (a view: in-place edits show; a reallocation detaches it)."""
        return self._data[: self.size]

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows in all, at least doubling the capacity when it grows."""
        if rows <= self.capacity:
            return
        grown = np.empty((max(rows, 2 * self.capacity, 1), *self._data.shape[1:]), self._data.dtype)
        grown[: self.size] = self._data[: self.size]
        self._data = grown
        self.reallocations += 1

    def extend(self, rows: ArrayLike) -> None:
        """Append ``rows`` (a sequence of rows; one scalar per row for a 1-D array)."""
        rows = np.asarray(rows, dtype=self._data.dtype)
        self.reserve(self.size + len(rows))
        self._data[self.size : self.size + len(rows)] = rows
        self.size += len(rows)

    def splice(self, lo: int, hi: int, rows: ArrayLike) -> int:
        """Replace rows ``[lo, hi)`` by ``rows``, shifting the tail in place; returns the size change."""
        rows = np.asarray(rows, dtype=self._data.dtype)
        delta = len(rows) - (hi - lo)
        self.reserve(self.size + delta)
        d = self._data
        d[lo + len(rows) : self.size + delta] = d[hi : self.size]  # numpy copies overlapping ranges safely
        d[lo : lo + len(rows)] = rows
        self.size += delta
        return delta
