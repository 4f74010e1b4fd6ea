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

START_MM = 5.0  # the gun fires from this far in front of the calorimeter's front face (z = 0)


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
                kind, lo, hi = "fixed", float(parts[0]), float(parts[0])
            elif parts[0] == "fixed" and len(parts) == 2:
                kind, lo, hi = "fixed", float(parts[1]), float(parts[1])
            elif parts[0] in ("uniform", "loguniform") and len(parts) == 3:
                kind, lo, hi = parts[0], float(parts[1]), float(parts[2])
            else:
                kind = None
        except ValueError:
            kind = None
        if kind and math.isfinite(lo) and math.isfinite(hi) and (
                kind == "fixed" or (lo < hi and (kind == "uniform" or lo > 0))):
            return cls(kind, lo, hi)
        raise ValueError(f"bad spectrum {spec!r}: use a finite number, fixed:X, uniform:A:B or loguniform:A:B "
                         "(0 < A < B)")

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
        check_conditions(self.energy_gev, self.theta)

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


def check_conditions(energy_gev: Spectrum, theta: Spectrum) -> None:
    """What a gun can fire and a generator be asked for: positive energies, theta away from the beam axis."""
    if energy_gev.lo <= 0:
        raise ValueError(f"--energy {energy_gev}: incident energies must be positive (GeV)")
    if not (0.1 <= theta.lo and theta.hi <= math.pi - 0.1):
        raise ValueError(f"--theta {theta}: theta must stay within [0.1, pi - 0.1] rad (pi/2 is normal incidence)")


def parse_conditions(energy: str, theta: str, phi: str) -> tuple[Spectrum, Spectrum, Spectrum]:
    """``--energy`` (GeV), ``--theta`` and ``--phi`` of ``calofm simulate`` and ``calofm generate``, checked
    before any work; a ``ValueError`` names the option."""
    spectra = []
    for option, spec in (("--energy", energy), ("--theta", theta), ("--phi", phi)):
        try:
            spectra.append(Spectrum.parse(spec))
        except ValueError as exc:
            raise ValueError(f"{option}: {exc}") from None
    check_conditions(*spectra[:2])
    return tuple(spectra)


def direction(theta: float) -> np.ndarray:
    """Unit vector of a particle with polar angle ``theta`` to the beam axis (detector y), entering along +z."""
    return np.array([0.0, math.cos(theta), math.sin(theta)])
