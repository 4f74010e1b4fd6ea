"""A binned axis: values -> bin index in a few vectorised steps, for equal or unequal bins.

Unequal bins use a lookup table on a uniform grid finer than the narrowest bin, then one
comparison each way to settle values near an edge: as exact as a binary search, several
times faster (it is the inner loop of every point-cloud projection).
"""

from __future__ import annotations

import numpy as np

_MAX_LOOKUP = 1 << 20  # finest lookup grid allowed; beyond it, fall back to binary search


class Axis:
    """Half-open bins ``[edges[i], edges[i+1])``. ``bin`` returns -1 below and n at or above the end.

    Comparisons are made in float32, the precision of calofm's point clouds.
    """

    def __init__(self, edges):
        self.edges = np.asarray(edges, dtype=np.float64)
        if self.edges.ndim != 1 or len(self.edges) < 2 or np.any(np.diff(self.edges) <= 0):
            raise ValueError(f"bin edges must be an increasing list of at least two values, got {edges!r}")
        self.n = len(self.edges) - 1
        widths = np.diff(self.edges)
        self.uniform = bool(np.allclose(widths, widths[0], rtol=1e-9, atol=0))
        cell = widths[0] if self.uniform else widths.min() / 2
        n_cells = int(np.ceil((self.edges[-1] - self.edges[0]) / cell)) + 1
        self._lo = np.float32(self.edges[0])
        self._inv_cell = np.float32(1.0 / cell)
        self._lookup = None
        if not self.uniform and n_cells <= _MAX_LOOKUP:
            starts = self.edges[0] + np.arange(-1, n_cells + 1) * cell
            self._lookup = np.searchsorted(self.edges, starts, side="right") - 1  # bin of each cell's start
            self._lower = np.concatenate([[-np.inf], self.edges]).astype(np.float32)  # lower edge of bin i at i+1
            self._upper = np.concatenate([self.edges, [np.inf]]).astype(np.float32)  # upper edge of bin i at i+1

    def _cells(self, values: np.ndarray) -> np.ndarray:
        """floor((v - lo) / cell), by truncation after a shift so values below lo stay negative."""
        t = (values - self._lo) * self._inv_cell
        t += 1
        i = t.astype(np.intp)
        i -= 1
        return i

    def bin(self, values: np.ndarray) -> np.ndarray:
        if self.uniform:
            return self._cells(values)
        if self._lookup is None:
            return np.searchsorted(self.edges.astype(np.float32), values, side="right").astype(np.intp) - 1
        cells = self._cells(values)
        np.clip(cells, -1, len(self._lookup) - 2, out=cells)
        cells += 1
        i = self._lookup[cells]
        j = i + 1
        i += values >= self._upper[j]  # rounding put the value one cell low
        i -= values < self._lower[j]  # ... or one cell high
        return i
