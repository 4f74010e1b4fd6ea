"""In-memory showers: mesh energies and/or ragged point clouds, with their conditions.

Units inside calofm: energies MeV, lengths mm, angles rad. Particles are PDG codes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from calofm.core.errors import InputError
from calofm.core.particles import REACH_CALORIMETER

# A shower whose visible energy exceeds this multiple of the incident energy cannot be physical:
# the usual cause is incident energies in GeV read as MeV (a factor 1000). Sampling calorimeters
# normalised by their sampling fraction fluctuate above 1 (1.56 seen for 1 GeV e- in par04-siw),
# hence the wide margin.
MAX_VISIBLE_OVER_INCIDENT = 10.0
# Beyond this multiple even model output is off-scale: no physics gives it, and its features
# overflow single precision (a diverged model)
OFF_SCALE = 1e6
# Below this median visible / incident energy, voxel energies are probably in GeV where MeV is
# expected: sampling calorimeters give at least their sampling fraction (rarely below 0.5 %) even
# without normalisation, while GeV read as MeV gives 1e-3 x that.
MIN_VISIBLE_OVER_INCIDENT = 2e-3
# A file whose incident energies are all below this (MeV) is probably in GeV throughout.
MIN_LARGEST_INCIDENT = 1000.0


@dataclass
class PointClouds:
    """Ragged point clouds: ``points`` (M, 4) = [x, y, z, E], shower i is ``points[offsets[i]:offsets[i+1]]``."""

    points: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_list(cls, clouds: list[np.ndarray]) -> "PointClouds":
        counts = [len(c) for c in clouds]
        points = np.concatenate(clouds).astype(np.float32) if clouds else np.zeros((0, 4), np.float32)
        return cls(points.reshape(-1, 4), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.points[self.offsets[i]:self.offsets[i + 1]]

    def take(self, index: np.ndarray) -> "PointClouds":
        return PointClouds.from_list([self[int(i)] for i in np.asarray(index)])

    @property
    def owners(self) -> np.ndarray:
        """The index of the shower each point belongs to, (M,)."""
        return np.repeat(np.arange(len(self)), self.counts)

    def energy_sums(self) -> np.ndarray:
        """Total point energy of each shower (float64)."""
        return np.bincount(self.owners, weights=self.points[:, 3], minlength=len(self))

    @staticmethod
    def concat(parts: list["PointClouds"]) -> "PointClouds":
        shifts = np.cumsum([0] + [len(p.points) for p in parts[:-1]])
        offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)])
        return PointClouds(np.concatenate([p.points for p in parts]), offsets.astype(np.int64))


# optional per-shower arrays of :class:`Showers` (besides ``energy`` and the ragged ``points``)
OPTIONAL_ARRAYS = ("showers", "theta", "phi", "particle", "event")


@dataclass
class Showers:
    """A batch of showers. ``energy`` is always present; other fields are None when unknown."""

    energy: np.ndarray                      # (N,) incident energy, MeV
    showers: np.ndarray | None = None       # (N, n_voxels) visible energy per voxel, MeV
    theta: np.ndarray | None = None         # (N,) polar angle of incidence, rad
    phi: np.ndarray | None = None           # (N,) azimuth of incidence, rad
    particle: np.ndarray | None = None      # (N,) PDG code
    event: np.ndarray | None = None         # (N,) index of the event in the run that simulated it
    points: PointClouds | None = None       # ragged point clouds, MeV and mm

    def __len__(self) -> int:
        return len(self.energy)

    def take(self, index) -> "Showers":
        """The showers at ``index`` (an integer array or a slice)."""
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index)
        kw = {f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[index])
              for f in fields(self) if f.name != "points"}
        return Showers(**kw, points=None if self.points is None else self.points.take(index))

    @staticmethod
    def concat(parts: list["Showers"]) -> "Showers":
        def cat(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        points = [p.points for p in parts]
        return Showers(**{f.name: cat(f.name) for f in fields(Showers) if f.name != "points"},
                       points=None if any(p is None for p in points) else PointClouds.concat(points))

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays held (uncompressed)."""
        arrays = [getattr(self, f.name) for f in fields(self) if f.name != "points"]
        if self.points is not None:
            arrays += [self.points.points, self.points.offsets]
        return sum(a.nbytes for a in arrays if a is not None)

    def with_fields(self, **kw) -> "Showers":
        return replace(self, **kw)

    def visible_energy(self) -> np.ndarray:
        if self.showers is not None:
            return self.showers.sum(axis=1, dtype=np.float64)
        if self.points is not None:
            return self.points.energy_sums()
        raise ValueError("showers hold neither voxels nor points")

    def units_doubt(self) -> str | None:
        """Why these (valid) showers look like GeV read as MeV, if they do; None when they look right."""
        if not len(self):
            return None
        ratio = float(np.median(self.visible_energy() / self.energy))
        if ratio < MIN_VISIBLE_OVER_INCIDENT:
            return (f"the median visible energy is {ratio:.2g} x the incident energy: voxel energies in GeV "
                    "where MeV is expected?")
        if self.energy.max() < MIN_LARGEST_INCIDENT:
            return (f"every incident energy is below 1 GeV (the largest is {self.energy.max():.4g} MeV): a file "
                    "in GeV where MeV is expected?")
        return None

    def validate(self, path, first: int = 0, units_check: bool = True) -> None:
        """Raise :class:`InputError` naming ``path`` and the first bad shower, if any.

        ``first`` is the index of this batch's first shower in the file, for the message.
        ``units_check`` flags visible energies far above the incident one as a GeV/MeV mix-up.
        """
        def check(bad_per_shower, problem):
            if np.any(bad_per_shower):
                raise InputError(path, f"shower {first + int(np.argmax(bad_per_shower))}: {problem}")

        n = len(self)
        for name in OPTIONAL_ARRAYS:
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise InputError(path, f"{name} has {len(value)} entries for {n} showers")
        if self.particle is not None:
            unknown = ~np.isin(self.particle, list(REACH_CALORIMETER))
            i = int(np.argmax(unknown)) if n else 0
            check(unknown, f"particle code {self.particle[i] if n else ''} is not a PDG code of a particle that "
                           "reaches a calorimeter")
        check(~np.isfinite(self.energy), "incident energy is NaN or infinite")
        check(self.energy <= 0, "incident energy is not positive")
        for name in ("theta", "phi"):
            if getattr(self, name) is not None:
                check(~np.isfinite(getattr(self, name)), f"{name} is NaN or infinite")
        if self.showers is not None:
            check(~np.all(np.isfinite(self.showers), axis=1), "a voxel energy is NaN or infinite")
            check(np.any(self.showers < 0, axis=1), "a voxel energy is negative")
        if self.points is not None:
            owner = np.repeat(np.arange(n), self.points.counts)
            rows_bad = ~np.all(np.isfinite(self.points.points), axis=1)
            check(np.bincount(owner[rows_bad], minlength=n) > 0, "a point coordinate or energy is NaN or infinite")
            check(np.bincount(owner[self.points.points[:, 3] < 0], minlength=n) > 0, "a point energy is negative")
        ratio = self.visible_energy() / self.energy
        for bad, why in ((ratio > OFF_SCALE, "off-scale (a diverged model?)"),
                         (units_check & (ratio > MAX_VISIBLE_OVER_INCIDENT),
                          "are incident energies in GeV where MeV is expected?")):
            if np.any(bad):
                i = int(np.argmax(bad))
                raise InputError(path, f"shower {first + i}: visible energy is {ratio[i]:.3g} x the incident energy "
                                       f"({self.energy[i]:g} MeV); {why}")
