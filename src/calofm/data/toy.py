"""Analytic toy showers for tests and benchmarks: NOT Geant4, no physics beyond rough shapes.

Points follow a Gamma longitudinal profile (t_max = ln(E/E_c) - 0.5 radiation lengths), an
exponential core plus halo radially and a uniform azimuth; they are projected onto the readout.
"""

from __future__ import annotations

import numpy as np

from calofm.core.units import GeV
from calofm.data.showers import Showers
from calofm.geometry import project


def toy_showers(readout, n: int, seed: int = 0, e_min: float = 1 * GeV, e_max: float = 1000 * GeV,
                x0_mm: float = 4.25, moliere_mm: float = 9.3, critical_mev: float = 8.0,
                points_per_gev: float = 20.0, particle: int = 11) -> Showers:
    """``n`` showers with log-uniform incident energies in [e_min, e_max] MeV, deposited on ``readout``."""
    rng = np.random.default_rng(seed)
    energy = np.exp(rng.uniform(np.log(e_min), np.log(e_max), n))
    counts = np.maximum(1, (points_per_gev * energy / GeV).astype(np.int64))
    t_max = np.maximum(np.log(energy / critical_mev) - 0.5, 0.5)
    b = 0.5
    a = np.repeat(b * t_max + 1, counts)
    depth = rng.gamma(a, 1 / b) * x0_mm
    radius = np.where(rng.random(len(a)) < 0.9, rng.exponential(0.25 * moliere_mm, len(a)),
                      rng.exponential(moliere_mm, len(a)))
    alpha = rng.uniform(-np.pi, np.pi, len(a))
    weight = rng.gamma(4.0, 0.25, len(a))
    owner = np.repeat(np.arange(n), counts)
    weight *= (energy / np.bincount(owner, weights=weight, minlength=n))[owner] * 0.95
    points = np.stack([radius * np.cos(alpha), radius * np.sin(alpha), depth, weight], axis=1).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return Showers(energy=energy, showers=project(readout, points, offsets), particle=np.full(n, particle))
