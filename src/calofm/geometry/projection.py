"""Points <-> voxels: project point clouds onto any readout, and smear voxels back into points.

Point clouds are ragged: ``points`` (M, 4) rows of [x, y, z, E] (mm, mm, mm, MeV), with x, y
transverse to the shower axis and z the depth from the calorimeter front; ``offsets`` (N+1,)
delimit shower i as ``points[offsets[i]:offsets[i+1]]``.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from calofm.geometry.cylindrical import CylindricalBinning


class Readout(Protocol):
    """Anything that maps positions to voxel indices (``n_voxels`` meaning outside)."""

    n_voxels: int

    def voxel_ids(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray: ...

    def layer_shapes(self) -> list[tuple[int, int]]: ...


_BLOCK_BINS = 1 << 22  # voxels x showers accumulated at once (32 MB of float64)
_CHUNK = 1 << 16  # points per vectorised step (fits in cache)


def project(readout: Readout, points: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sum point energies into voxels: returns (N, n_voxels) float32 MeV.

    Energy outside the readout is dropped (compare sums to see how much). Accumulation is in
    float64, so energy inside the readout is conserved to float32 rounding.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    n_events, n_vox = len(offsets) - 1, readout.n_voxels
    stride = n_vox + 1  # one overflow bin per shower for points outside the readout
    out = np.zeros((n_events, n_vox), dtype=np.float32)
    per_block = max(1, _BLOCK_BINS // stride)
    for a in range(0, n_events, per_block):
        b = min(a + per_block, n_events)
        sums = np.zeros((b - a) * stride)
        first = offsets[a]
        base = np.repeat(np.arange(b - a, dtype=np.intp) * stride, np.diff(offsets[a:b + 1]))
        for s in range(first, offsets[b], _CHUNK):
            t = min(s + _CHUNK, offsets[b])
            x, y, z, e = np.ascontiguousarray(points[s:t].T)
            ids = readout.voxel_ids(x, y, z)
            ids += base[s - first:t - first]
            lo, hi = base[s - first], base[t - first - 1] + stride
            ids -= lo
            sums[lo:hi] += np.bincount(ids, weights=e, minlength=hi - lo)
        out[a:b] = sums.reshape(b - a, stride)[:, :n_vox]
    return out


def smear(binning: CylindricalBinning, showers: np.ndarray, rng: np.random.Generator,
          points_per_voxel: int = 1, margin: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Cylindrical smearing (the CaloClouds II transfer study, appendix A): voxels -> points inside their voxel.

    Each non-zero voxel becomes ``points_per_voxel`` points drawn uniformly over the voxel's
    (r, alpha) area, sharing its energy equally; z stays at the layer centre. Points keep a
    relative ``margin`` from the voxel edges, so projecting them back gives the voxels exactly.
    Returns ``(points, offsets)``.
    """
    showers = np.asarray(showers)
    if showers.ndim != 2 or showers.shape[1] != binning.n_voxels:
        raise ValueError(f"showers of shape {showers.shape} do not match {binning.n_voxels} voxels")
    event, voxel = np.nonzero(showers > 0)
    energy = showers[event, voxel] / points_per_voxel
    voxel = np.repeat(voxel, points_per_voxel)
    energy = np.repeat(energy, points_per_voxel)
    e = binning.voxel_edges
    u = rng.uniform(margin, 1 - margin, size=(2, len(voxel)))
    r0, r1 = e["r0"][voxel], e["r1"][voxel]
    r = np.sqrt(r0**2 + u[0] * (r1**2 - r0**2))  # uniform in area
    alpha = e["a0"][voxel] + u[1] * (e["a1"][voxel] - e["a0"][voxel])
    z = (e["z0"][voxel] + e["z1"][voxel]) / 2
    points = np.stack([r * np.cos(alpha), r * np.sin(alpha), z, energy], axis=1).astype(np.float32)
    counts = np.bincount(event, minlength=len(showers)) * points_per_voxel
    return points, np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
