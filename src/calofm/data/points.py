"""Point clouds as model tensors (CaloClouds II transfer study, section 3.1 and appendix A), for the point-cloud family.

A shower's points come from `calofm simulate --points` (Geant4 steps pre-clustered per layer on
the readout refined 6 x 6 times) or, for voxel files such as CaloChallenge ones, from cylindrical
smearing of the voxels into points (one per voxel, uniform over its (r, alpha) area). calofm's
points and voxels share one energy scale (deposits / sampling fraction); ``energy_scale`` turns
them into another, e.g. the raw silicon deposits of the CaloClouds II transfer study's reversal of the
sampling fraction.

:class:`PointCloudTransform` maps points [x, y, z, E] (mm, MeV) to [x / 200, y / 200, layer, log E
standardised]: x and y in [-1, 1] for a 400 mm box, the layer index as (2 i + 1) / L - 1, and back,
with z at the layer's centre. One row per point: the PointWise net treats points independently, so
a batch of points from many showers needs no padding or masks, and no ordering by size (the
padded, size-ordered batches of the CaloClouds II transfer study serve networks that see a whole
point set at once). Each
shower adds one condition column, log(1 + N) / 10 of its N points (CaloClouds II conditions the
points on E and N; the per-layer counts then place them in depth).

:class:`LayerCountTransform` maps showers to ShowerFlow's variables: the points per layer, plus a
uniform dequantisation draw, over the fixed ``NORM_POINTS`` = 800 of the CaloClouds II transfer study.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from calofm.data.preprocess import Representation
from calofm.data.showers import PointClouds, Showers
from calofm.geometry import smear
from calofm.geometry.axis import Axis

HALF_BOX = 200.0  # mm: the CaloClouds II transfer study scales x and y to [-1, 1] from a box of -200 to 200 mm
NORM_POINTS = 800.0  # the CaloClouds II transfer study: one fixed normalisation of the per-layer point counts
SMEAR_SEED = 0  # voxel files are smeared into points, and counts dequantised, with one fixed draw
COUNT_LOG_SCALE = 10.0  # the points' condition log(1 + N) / 10 stays below 1.2 up to 10^5 points


def point_clouds(showers: Showers, readout, rng: np.random.Generator, energy_scale: float = 1.0) -> PointClouds:
    """The showers' point clouds: the stored ones, or the voxels smeared into points; energies times
    ``energy_scale``."""
    if showers.points is not None:
        clouds = showers.points
    elif showers.showers is not None:
        clouds = PointClouds(*smear(readout, showers.showers, rng))
    else:
        raise ValueError("the showers hold neither points nor voxels")
    if energy_scale != 1.0:
        clouds = PointClouds(clouds.points * np.array([1, 1, 1, energy_scale], np.float32), clouds.offsets)
    return clouds


def layer_counts(clouds: PointClouds, z_edges) -> np.ndarray:
    """(N, L) number of points of each shower in each of the layers between ``z_edges`` (mm); points
    outside them are not counted."""
    n_layers = len(z_edges) - 1
    layer = Axis(z_edges).bin(clouds.points[:, 2])
    inside = (layer >= 0) & (layer < n_layers)
    flat = clouds.owners[inside] * n_layers + layer[inside]
    return np.bincount(flat, minlength=len(clouds) * n_layers).reshape(len(clouds), -1)


def count_condition(n_points) -> torch.Tensor:
    """(N, 1) float32 condition log(1 + N) / 10 of showers of ``n_points`` points."""
    return torch.log1p(torch.as_tensor(np.asarray(n_points), dtype=torch.float64))[:, None].div(COUNT_LOG_SCALE).float()


@dataclass
class LayeredPoints(Representation):
    """What the point representations share: the readout's layers along the shower, and the points
    of a detector's showers."""

    z_edges: list[float]            # the readout's layer edges along the shower (mm)

    @property
    def n_layers(self) -> int:
        return len(self.z_edges) - 1

    @property
    def centres(self) -> np.ndarray:
        edges = np.asarray(self.z_edges)
        return (edges[:-1] + edges[1:]) / 2

    def for_readout(self, readout):
        """This representation for another readout's layers (the scales stay)."""
        return dataclasses.replace(self, z_edges=[float(z) for z in readout.z_edges])

    @staticmethod
    def clouds(showers: Showers, readout) -> PointClouds:
        """The showers' points (stored, or their voxels smeared with a fixed seed)."""
        return point_clouds(showers, readout, np.random.default_rng(SMEAR_SEED))

    def layer_counts(self, showers: Showers, readout) -> np.ndarray:
        """(N, L) points of each shower in each of these layers."""
        return layer_counts(self.clouds(showers, readout), self.z_edges)


@dataclass
class LayerCountTransform(LayeredPoints):
    """Points per layer (N, L) <-> (N + u) / 800, u ~ U(0, 1) drawn once per encoding (seeded)."""

    kind: ClassVar[str] = "layer_counts"
    norm: float = NORM_POINTS

    @classmethod
    def fit(cls, readout) -> LayerCountTransform:
        return cls([float(z) for z in readout.z_edges])

    def state_shape(self, readout=None) -> tuple[int, ...]:
        return (self.n_layers,)

    def rows(self, showers: Showers, readout):
        counts = self.layer_counts(showers, readout)
        return self.normalise(torch.from_numpy(counts), torch.Generator().manual_seed(SMEAR_SEED)), None, None

    def normalise(self, counts: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Whole counts -> (counts + u) / norm: a density cannot sit on whole numbers, and many late
        layers are empty."""
        u = torch.rand(counts.shape, generator=generator, dtype=torch.float64)
        return ((counts.to(torch.float64) + u) / self.norm).float()

    def decode(self, values: torch.Tensor, energy=None) -> np.ndarray:
        """Model values -> whole, non-negative counts (N, L) int64 (the inverse of ``normalise``)."""
        return torch.floor(values.detach().to(torch.float64) * self.norm).clamp(min=0).long().cpu().numpy()


@dataclass
class PointCloudTransform(LayeredPoints):
    """[x, y, z, E] (mm, MeV) <-> [x / 200, y / 200, (2 layer + 1) / L - 1, (log E - mean) / std]."""

    kind: ClassVar[str] = "points"
    extra_conditions: ClassVar[int] = 1  # log(1 + N) / 10
    e_mean: float = 0.0             # of log(E / MeV) over the fitted points
    e_std: float = 1.0
    half_box: float = HALF_BOX

    @classmethod
    def fit(cls, clouds: list[PointClouds], z_edges) -> PointCloudTransform:
        logs = np.log(np.concatenate([c.points[:, 3] for c in clouds]).astype(np.float64))
        if not len(logs):
            raise ValueError("no points to fit the preprocessing on")
        return cls([float(z) for z in z_edges], float(logs.mean()), float(max(logs.std(), 1e-6)))

    @staticmethod
    def state_shape(readout=None) -> tuple[int, ...]:
        return (4,)

    def rows(self, showers: Showers, readout):
        clouds = self.clouds(showers, readout)
        x, owners = self.encode(clouds)
        return x, owners, count_condition(clouds.counts)

    def layers(self, z: np.ndarray) -> np.ndarray:
        """Layer index of depths ``z`` (mm), clipped into the stack."""
        return np.clip(Axis(self.z_edges).bin(z), 0, self.n_layers - 1)

    def encode(self, clouds: PointClouds) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, 4) float32 model rows of every point and the (P,) index of the shower each belongs to."""
        p = clouds.points.astype(np.float64)
        if np.any(~(p[:, 3] > 0)):
            raise ValueError("points with zero, negative or NaN energy cannot be encoded (log E)")
        depth = (2 * self.layers(p[:, 2]) + 1) / self.n_layers - 1
        rows = np.stack([p[:, 0] / self.half_box, p[:, 1] / self.half_box, depth,
                         (np.log(p[:, 3]) - self.e_mean) / self.e_std], axis=1)
        return torch.from_numpy(rows).float(), torch.from_numpy(clouds.owners)

    def decode(self, x: torch.Tensor, layer: np.ndarray | None = None) -> np.ndarray:
        """(P, 4) points in mm and MeV from model rows, each at the centre of its ``layer`` (default:
        the layer nearest to its generated depth)."""
        x = x.detach().cpu().to(torch.float64).numpy()
        if layer is None:
            layer = np.clip(np.rint((x[:, 2] + 1) * self.n_layers / 2 - 0.5), 0, self.n_layers - 1).astype(np.int64)
        return np.stack([x[:, 0] * self.half_box, x[:, 1] * self.half_box, self.centres[layer],
                         np.exp(x[:, 3] * self.e_std + self.e_mean)], axis=1).astype(np.float32)
