"""From Geant4 steps to what calofm stores: the mesh shower and the pre-clustered point cloud.

Steps arrive as rows [x, y, z, E] in the detector frame (z = depth from the front face,
y = beam axis). The mesh is aligned with the particle direction and starts where it enters.
"""

from __future__ import annotations

import numpy as np

from calofm.geometry import CylindricalBinning, project


def to_mesh_frame(steps: np.ndarray, theta: float) -> np.ndarray:
    """Rotate steps into the frame whose z axis is the particle direction (0, cos theta, sin theta)."""
    s, c = np.sin(theta), np.cos(theta)
    out = steps.copy()
    out[:, 1] = steps[:, 1] * s - steps[:, 2] * c
    out[:, 2] = steps[:, 1] * c + steps[:, 2] * s
    return out


def score_mesh(steps: np.ndarray, mesh: CylindricalBinning) -> np.ndarray:
    """Sum step energies (already in the mesh frame) into the mesh voxels: (n_voxels,) float32."""
    return project(mesh, steps, np.array([0, len(steps)]))[0]


def cluster(steps: np.ndarray, readout, factor: int = 6) -> np.ndarray:
    """Pre-cluster steps per layer on the readout refined ``factor`` times transversally (CaloClouds).

    Each non-empty fine cell becomes one point carrying the cell's energy, at the energy-weighted
    mean position of its steps (in (r, alpha) for cylindrical cells, so the point stays inside its
    cell) and at the centre of its layer in depth. Projecting the points onto ``readout`` gives the
    same cell energies as projecting the steps.
    """
    fine = readout.refined(factor)
    x, y, z, e = steps.T
    ids = fine.voxel_ids(x, y, z)
    inside = ids < fine.n_voxels
    ids, x, y, z, e = ids[inside], x[inside], y[inside], z[inside], e[inside]
    cells, first, group = np.unique(ids, return_index=True, return_inverse=True)
    energy = np.bincount(group, weights=e, minlength=len(cells))
    weight = np.divide(1.0, energy, out=np.zeros_like(energy), where=energy > 0)
    keep = energy > 0

    def mean(values):
        return np.bincount(group, weights=e * values, minlength=len(cells)) * weight

    if isinstance(readout, CylindricalBinning):
        r, alpha = mean(np.sqrt(x * x + y * y)), mean(np.arctan2(y, x))
        px, py = r * np.cos(alpha), r * np.sin(alpha)
    else:
        px, py = mean(x), mean(y)
    pz = readout.layer_centres()[readout.layer_of(z[first])]
    return np.stack([px, py, pz, energy], axis=1)[keep].astype(np.float32)
