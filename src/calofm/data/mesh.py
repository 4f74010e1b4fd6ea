"""Mesh showers of several detectors as model tensors: (N, R, A, Z) voxels plus condition vectors.

Every detector's files are read whole (a few 10k showers of 6480 voxels fit in memory), split
deterministically into train and validation parts, optionally cut to a nested subset of the
training part, and checked to share one regular mesh shape: the universal representation lets
one model serve detectors whose mesh bin sizes differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calofm.core.errors import InputError
from calofm.data.files import open_showers
from calofm.data.preprocess import ConditionTransform, VoxelTransform
from calofm.data.showers import Showers
from calofm.data.splits import nested_subset, split_indices
from calofm.geometry.orders import reorder

NORMAL_THETA = math.pi / 2  # Par04 convention: normal incidence on the layers


@dataclass
class DetectorShowers:
    """One detector's showers (CaloChallenge voxel order) and its mesh."""

    name: str
    showers: Showers
    readout: object
    notes: list[str]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(R, A, Z): the model's layout of this detector's mesh."""
        n_z, n_a, n_r = self.readout.shape
        return n_r, n_a, n_z

    def take(self, index) -> DetectorShowers:
        return DetectorShowers(self.name, self.showers.take(index), self.readout, self.notes)


def read_detector(name: str, paths: list[str | Path]) -> DetectorShowers:
    """All showers of ``paths`` (one detector), with theta/phi filled where the files lack them."""
    parts, readout, notes = [], None, []
    for path in paths:
        with open_showers(path) as f:
            if not f.readout.is_regular:
                raise InputError(path, f"binning {f.readout.describe()} is not a regular (z, alpha, r) mesh")
            if readout is not None and f.readout.shape != readout.shape:
                raise InputError(path, f"mesh {f.readout.describe()} differs from the detector's other files "
                                       f"({readout.describe()})")
            readout = readout or f.readout
            showers = f.read()
        if showers.showers is None:
            raise InputError(path, "holds no voxel showers (points only); project them with `calofm convert` first")
        if showers.theta is None or showers.phi is None:
            notes.append(f"{path}: no incidence angles stored; using theta = pi/2, phi = 0 (normal incidence)")
            showers = showers.with_fields(theta=np.full(len(showers), NORMAL_THETA), phi=np.zeros(len(showers)))
        parts.append(showers.with_fields(points=None, particle=None, event=None))
    if not parts:
        raise ValueError(f"detector {name!r} has no files")
    return DetectorShowers(name, Showers.concat(parts), readout, notes)


def split_detector(data: DetectorShowers, val_fraction: float, n_train: int | None, seed: int
                   ) -> tuple[DetectorShowers, DetectorShowers]:
    """Deterministic (train, validation) parts; ``n_train`` takes a nested subset of the train part."""
    parts = split_indices(len(data.showers), (1 - val_fraction, val_fraction, 0.0), seed=seed)
    train = parts["train"]
    if n_train is not None:
        if n_train > len(train):
            raise ValueError(f"detector {data.name!r}: n_train {n_train} > {len(train)} training showers available")
        train = nested_subset(train, n_train, seed=seed)
    return data.take(train), data.take(parts["val"])


def common_shape(detectors: list[DetectorShowers]) -> tuple[int, int, int]:
    shapes = {d.name: d.shape for d in detectors}
    if len(set(shapes.values())) != 1:
        raise ValueError("detectors must share one mesh shape (R, A, Z); got "
                         + ", ".join(f"{k}: {v}" for k, v in shapes.items()))
    return next(iter(shapes.values()))


def to_model_layout(showers: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """CaloChallenge rows (N, Z*A*R) -> (N, R, A, Z) tensor."""
    n_r, n_a, n_z = shape
    return torch.from_numpy(reorder(showers, "calochallenge", "lemurs", (n_z, n_a, n_r)))


def from_model_layout(x: torch.Tensor) -> np.ndarray:
    """(N, R, A, Z) tensor -> CaloChallenge rows (N, Z*A*R)."""
    n_r, n_a, n_z = x.shape[1:]
    return reorder(x.detach().cpu().numpy(), "lemurs", "calochallenge", (n_z, n_a, n_r))


def tensors(detectors: list[DetectorShowers], voxels: VoxelTransform, conditions: ConditionTransform
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed (x, cond) of all ``detectors``, concatenated in order."""
    shape = common_shape(detectors)
    xs, cs = [], []
    for d in detectors:
        s = d.showers
        xs.append(voxels.forward(to_model_layout(s.showers.astype(np.float32), shape)))
        cs.append(conditions.forward(s.energy, s.theta, s.phi, conditions.slot(d.name)))
    return torch.cat(xs), torch.cat(cs)
