"""The particle gun: particle, energy spectrum and incidence angles, drawn per event.

Every event's conditions and Geant4 seed come from ``(seed, event index)`` alone, so a shower
does not depend on which worker, shard or resumed run simulated it.

Angles follow Par04 / LEMURS: theta is the polar angle to the beam (cylinder) axis, so normal
incidence on the layers is theta = pi/2; phi is the azimuth around the beam axis. In calofm's
planar-slab stand-in for the cylinder, phi leaves the physics unchanged and is recorded as a
condition only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calofm.core.particles import PARTICLES
from calofm.core.units import GeV


@dataclass(frozen=True)
class Spectrum:
    """``fixed:x``, ``uniform:a:b`` or ``loguniform:a:b`` (a bare number means fixed)."""

    kind: str
    lo: float
    hi: float

    @classmethod
    def parse(cls, spec: str | float) -> "Spectrum":
        parts = str(spec).split(":")
        try:
            if len(parts) == 1:
                return cls("fixed", float(parts[0]), float(parts[0]))
            if parts[0] == "fixed" and len(parts) == 2:
                return cls("fixed", float(parts[1]), float(parts[1]))
            if parts[0] in ("uniform", "loguniform") and len(parts) == 3:
                lo, hi = float(parts[1]), float(parts[2])
                if lo < hi and (parts[0] == "uniform" or lo > 0):
                    return cls(parts[0], lo, hi)
        except ValueError:
            pass
        raise ValueError(f"bad spectrum {spec!r}: use a number, fixed:X, uniform:A:B or loguniform:A:B (0 < A < B)")

    def draw(self, rng: np.random.Generator) -> float:
        if self.kind == "fixed":
            return self.lo
        if self.kind == "uniform":
            return rng.uniform(self.lo, self.hi)
        return math.exp(rng.uniform(math.log(self.lo), math.log(self.hi)))

    def __str__(self) -> str:
        return f"{self.lo:g}" if self.kind == "fixed" else f"{self.kind}:{self.lo:g}:{self.hi:g}"


@dataclass(frozen=True)
class Gun:
    particle: str = "e-"
    energy_gev: Spectrum = Spectrum("fixed", 10.0, 10.0)
    theta: Spectrum = Spectrum("fixed", math.pi / 2, math.pi / 2)
    phi: Spectrum = Spectrum("fixed", 0.0, 0.0)

    def __post_init__(self):
        if self.particle not in PARTICLES:
            raise ValueError(f"unknown particle {self.particle!r}; known: {', '.join(PARTICLES)}")
        if self.energy_gev.lo <= 0:
            raise ValueError("incident energies must be positive (GeV)")
        if not (0.1 <= self.theta.lo and self.theta.hi <= math.pi - 0.1):
            raise ValueError("theta must stay within [0.1, pi - 0.1] rad (pi/2 is normal incidence)")

    @property
    def pdg(self) -> int:
        return PARTICLES[self.particle]

    def event(self, seed: int, index: int) -> tuple[float, float, float, int]:
        """(energy MeV, theta, phi, Geant4 seed) of event ``index`` of a run with ``seed``."""
        rng = np.random.default_rng([seed, index])
        energy = self.energy_gev.draw(rng) * GeV
        theta, phi = self.theta.draw(rng), self.phi.draw(rng)
        return energy, theta, phi, int(rng.integers(1, 2**31 - 1))

    def describe(self) -> dict:
        return {"particle": self.particle, "energy_GeV": str(self.energy_gev), "theta": str(self.theta),
                "phi": str(self.phi)}


def direction(theta: float) -> np.ndarray:
    """Unit vector of a particle with polar angle ``theta`` to the beam axis (detector y), entering along +z."""
    return np.array([0.0, math.cos(theta), math.sin(theta)])
