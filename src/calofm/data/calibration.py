"""Occupancy calibration of generated point counts (CaloClouds II transfer study, section 4.2).

Several generated points can land in one readout cell, so a shower of N generated points fills
fewer cells than a Geant4 shower of N points. Cubic polynomials p(N) give the occupancy (cells hit)
of a shower of N points, fitted once on Geant4 showers (p_data) and once on generated showers
projected onto the readout (p_gen); the calibrated count N_cal = p_gen^-1(p_data(N_gen)) is the
number of points to generate so that the projected shower fills as many cells as Geant4's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class OccupancyCalibration:
    """N_cal = p_gen^-1(p_data(N)); polynomial coefficients highest power first (numpy.polyfit).

    A cubic is only trusted where it was fitted: a count outside [n_min, n_max] keeps the ratio
    N_cal / N of the nearest end of that range (a ShowerFlow still learning can ask for more points
    than any training shower had, where the cubics turn over)."""

    data: list[float]
    gen: list[float]
    n_min: float
    n_max: float

    @classmethod
    def fit(cls, n_data, occupancy_data, n_gen, occupancy_gen, degree: int = 3) -> OccupancyCalibration:
        """Least-squares fits of occupancy against point count for Geant4 and for generated showers."""
        n_data, n_gen = np.asarray(n_data, float), np.asarray(n_gen, float)
        if min(len(n_data), len(n_gen)) <= degree:
            raise ValueError(f"a degree-{degree} calibration needs more than {degree} showers of each kind")
        return cls(np.polyfit(n_data, occupancy_data, degree).tolist(),
                   np.polyfit(n_gen, occupancy_gen, degree).tolist(),
                   float(max(n_data.min(), n_gen.min(), 1.0)), float(min(n_data.max(), n_gen.max())))

    def __call__(self, n: np.ndarray) -> np.ndarray:
        """Calibrated whole counts for generated counts ``n``: p_gen inverted on its increasing part."""
        n = np.asarray(n, float)
        inside = np.clip(n, self.n_min, max(self.n_max, self.n_min))
        grid = np.linspace(0.0, 3.0 * self.n_max, 8192)
        occupancy = np.maximum.accumulate(np.polyval(self.gen, grid))  # monotone, so invertible by interp
        calibrated = np.interp(np.polyval(self.data, inside), occupancy, grid)
        return np.rint(n * calibrated / inside).astype(np.int64)

    def apply(self, counts: np.ndarray) -> np.ndarray:
        """Points per layer (N, L) scaled to the calibrated totals, layer shares kept; the largest
        remainders take the points that rounding down leaves over, so each total is exact."""
        counts = np.asarray(counts, dtype=np.int64)
        totals = counts.sum(1)
        target = np.where(totals > 0, self(totals), 0)
        share = counts * (target / np.maximum(totals, 1))[:, None]
        out = np.floor(share).astype(np.int64)
        rank = np.argsort(np.argsort(out - share, axis=1, kind="stable"), axis=1)  # 0: the largest remainder
        return out + (rank < (target - out.sum(1))[:, None])

    def to_dict(self) -> dict:
        return asdict(self)
