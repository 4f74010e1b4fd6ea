"""Fast simulation inside a Geant4 run: which particles Geant4 hands to a shower model, and where
the model's showers land.

A :class:`Trigger` decides, for a particle entering the calorimeter from outside or born inside it,
whether Geant4 kills it and hands its energy, entry point and direction to a :class:`ShowerModel`
(the Geant4 side is in :mod:`calofm.simulate.g4app`). The model's shower is generated on its own
cylindrical mesh, whose axis is the particle's direction and whose origin is the entry point, as
Par04 places its cells; :func:`place` turns each voxel into a deposit at the voxel's centre in the
detector frame, which the event's scoring then bins like any Geant4 step.

Angles: the detector's layers are planes of constant z (normal n = +z). The model is conditioned
on theta = arcsin(|d_z|), the polar angle its training showers had (normal incidence is pi/2),
and the shower is oriented with its mesh y axis on the upstream side, as the training showers'
mesh frame had it (:func:`calofm.simulate.scoring.to_mesh_frame`). A laterally uniform slab
calorimeter looks the same from every azimuth and from the back, so this covers every direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from calofm.geometry import CylindricalBinning

# columns of a hand-off row
HANDOFF_COLUMNS = ("pdg", "energy_MeV", "x", "y", "z", "dx", "dy", "dz")


@dataclass(frozen=True)
class Trigger:
    """Hand a particle to the model when its PDG code is in ``pdgs``, its kinetic energy in
    [``e_min``, ``e_max``] MeV, its position in the depth range ``z_range`` (mm) of the calorimeter,
    and its direction within ``max_angle`` (rad) of the layer normal (either way)."""

    pdgs: tuple[int, ...]
    e_min: float
    e_max: float = math.inf
    z_range: tuple[float, float] = (0.0, math.inf)
    max_angle: float = math.pi / 2

    def __post_init__(self):
        if not self.pdgs:
            raise ValueError("the fast simulation needs at least one particle")
        if not 0 <= self.e_min < self.e_max:
            raise ValueError(f"fast-simulation energy range [{self.e_min:g}, {self.e_max:g}] MeV is empty")
        if not 0 < self.max_angle <= math.pi / 2:
            raise ValueError("the maximum angle to the layer normal must be in (0, 90] degrees")
        object.__setattr__(self, "_min_cos", math.cos(self.max_angle) - 1e-12)

    def accepts(self, pdg: int, energy: float, z: float, dz: float) -> bool:
        """Whether a particle of this code, kinetic energy (MeV), depth (mm) and direction cosine to the
        normal goes to the model (called by Geant4 for every candidate: plain Python, no numpy)."""
        return (pdg in self.pdgs and self.e_min <= energy <= self.e_max
                and self.z_range[0] <= z <= self.z_range[1] and abs(dz) >= self._min_cos)

    def describe(self) -> dict:
        return {"pdgs": list(self.pdgs), "min_energy_MeV": self.e_min, "max_energy_MeV": self.e_max,
                "z_range_mm": list(self.z_range), "max_angle_deg": math.degrees(self.max_angle)}


class ShowerModel(Protocol):
    """What the fast simulation needs of a model (:class:`calofm.inference.fastsim.FastSim` is one).
    It is sent to every worker process, so it must pickle; it loads its network on first use."""

    trigger: Trigger
    model: str  # what the user named it by

    def load(self) -> None:
        """Load the network and run it once (in the worker, before the timed events, as Geant4
        builds its tables before them)."""

    def deposits(self, handoffs: np.ndarray, phi: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Deposits [x, y, z, E] (detector frame, mm, MeV at the detector's energy scale) of the
        showers of ``handoffs`` (rows of :data:`HANDOFF_COLUMNS`, events' azimuths ``phi``), and
        the hand-off each deposit belongs to; the same ``seed`` gives the same showers."""

    def describe(self) -> dict:
        """JSON-able description, recorded in the output file and compared when a run resumes."""


def incidence_theta(directions: np.ndarray) -> np.ndarray:
    """The model condition theta = arcsin(|d_z|) of unit directions (N, 3): pi/2 at normal incidence."""
    return np.arcsin(np.clip(np.abs(directions[:, 2]), 0.0, 1.0))


def mesh_axes(directions: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rows x', y', z' of each shower's mesh frame in the detector frame: z' the direction,
    y' the upstream side (the normal's component across z', reversed), x' = y' x z'. At normal
    incidence x' = x, as for the training showers."""
    d = np.asarray(directions, dtype=np.float64)
    normal = np.zeros_like(d)
    normal[:, 2] = np.where(d[:, 2] < 0, -1.0, 1.0)  # seen from the face the particle goes away from
    y = np.einsum("ni,ni->n", d, normal)[:, None] * d - normal
    norm = np.linalg.norm(y, axis=1)
    square = norm < 1e-9  # normal incidence: the upstream side is undefined, take x' = x
    y[square] = np.cross(d[square], [1.0, 0.0, 0.0])
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    x = np.cross(y, d)
    return np.stack([x, y, d], axis=1)


def place(showers: np.ndarray, mesh: CylindricalBinning, positions: np.ndarray,
          directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deposits [x, y, z, E] (detector frame, mm, MeV) of ``showers`` (N, n_voxels) generated on
    ``mesh``, each placed at its entry point with its mesh axis along its direction; every non-empty
    voxel becomes one deposit at the voxel's centre. Returns (deposits, owner shower of each)."""
    owner, voxel = np.nonzero(showers > 0)
    r, alpha, z = (c[voxel] for c in mesh.centres())
    local = np.stack([r * np.cos(alpha), r * np.sin(alpha), z], axis=1)
    axes = mesh_axes(directions)[owner]
    where = np.asarray(positions, dtype=np.float64)[owner] + np.einsum("ni,nij->nj", local, axes)
    deposits = np.concatenate([where, showers[owner, voxel][:, None]], axis=1).astype(np.float32)
    return deposits, owner
