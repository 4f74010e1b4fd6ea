"""Detector datasets: the showers of several detectors, read, split and turned into model tensors.

Every detector's files are read whole (a few 10k showers of 6480 voxels fit in memory), split
deterministically into train and validation parts, optionally cut to a nested subset of the
training part, and checked to share one model shape: the universal representation
(:mod:`calofm.data.representations`) lets one model serve detectors whose mesh bin sizes differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calofm.core.errors import InputError
from calofm.core.particles import particle_name
from calofm.data.files import open_showers
from calofm.data.preprocess import ConditionTransform
from calofm.data.showers import Showers
from calofm.data.splits import nested_subset, split_indices
from calofm.geometry.layers import read_out

NORMAL_THETA = math.pi / 2  # Par04 convention: normal incidence on the layers


@dataclass
class DetectorShowers:
    """One detector's showers (CaloChallenge voxel order), the readout the model sees (for point
    clouds, the one the points were clustered on) and the mesh its voxels are on (default: the same)."""

    name: str
    showers: Showers
    readout: object
    notes: list[str]
    mesh: object = None
    particle: str | None = None  # the (most frequent) particle, where the files record it

    def __post_init__(self):
        self.mesh = self.mesh or self.readout

    def take(self, index) -> DetectorShowers:
        return DetectorShowers(self.name, self.showers.take(index), self.readout, self.notes, self.mesh, self.particle)


def read_detector(name: str, paths: list[str | Path], regular: bool = True, points: bool = False,
                  known: tuple[str, ...] = ()) -> DetectorShowers:
    """All showers of ``paths`` (one detector), with theta/phi filled where the files lack them;
    ``regular``: the readout must be a regular (z, alpha, r) mesh (what mesh backbones take);
    ``points``: keep the stored point clouds, and take their readout as the model's; ``known``:
    detector names a label must not name unless the files record that detector (the presets)."""
    parts, readout, mesh, notes, codes = [], None, None, [], []
    for path in paths:
        with open_showers(path) as f:
            if regular and not getattr(f.readout, "is_regular", False):
                raise InputError(path, f"binning {f.readout.describe()} is not a regular (z, alpha, r) mesh")
            mine = f.points_readout if points else f.readout
            if readout is not None and (mine.layer_shapes(), f.readout.layer_shapes()) != (
                    readout.layer_shapes(), mesh.layer_shapes()):
                raise InputError(path, f"readout {mine.describe()} differs from the detector's other files "
                                       f"({readout.describe()})")
            readout, mesh = readout or mine, mesh or f.readout
            _check_label(name, f.metadata.get("detector"), path, known)
            showers = f.read()
        if showers.showers is None:
            raise InputError(path, "holds no voxel showers (points only); project them with `calofm convert` first")
        if showers.theta is None or showers.phi is None:
            notes.append(f"{path}: no incidence angles stored; using theta = pi/2, phi = 0 (normal incidence)")
            showers = showers.with_fields(theta=np.full(len(showers), NORMAL_THETA), phi=np.zeros(len(showers)))
        if showers.particle is not None:
            codes.append(showers.particle)
        parts.append(showers.with_fields(points=showers.points if points else None, particle=None, event=None))
    if not parts:
        raise ValueError(f"detector {name!r} has no files")
    particle = None
    if codes:
        values, counts = np.unique(np.concatenate(codes), return_counts=True)
        particle = particle_name(values[np.argmax(counts)])
    return DetectorShowers(name, Showers.concat(parts), readout, notes, mesh, particle)


def _check_label(name: str, recorded: str | None, path, known: tuple[str, ...]) -> None:
    """Refuse a label that names a ``known`` detector other than the one the file records (a class
    label may add to the detector's name, as fm-1's ``par04-siw-e-``, or be a name of its own)."""
    def names(detector: str) -> bool:
        return name == detector or name.startswith(detector + "-")

    other = next((p for p in known if names(p)), None)
    if recorded is not None and other is not None and not names(recorded):
        raise InputError(path, f"holds showers of detector {recorded!r} (as recorded in the file), labelled "
                               f"{name!r} here: a name of the {other} preset")


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


def tensors(detectors: list[DetectorShowers], representation, conditions: ConditionTransform
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed (x, cond) of all ``detectors``, concatenated in order, one row per model row
    (per point, for point clouds) with its shower's condition and the representation's extra
    columns; ``representation`` is a fitted one (all detectors must give one state shape)."""
    layers = {d.name: read_out(d.readout.layer_shapes()) for d in detectors}
    if len(set(layers.values())) != 1:
        raise ValueError("detectors must share one geometry (layers and their transverse shapes); got "
                         + ", ".join(f"{d.name}: {d.readout.describe()}" for d in detectors))
    xs, cs = [], []
    for d in detectors:
        s = d.showers
        x, owners, extra = representation.rows(s, d.readout)
        cond = conditions.forward(s.energy, s.theta, s.phi, conditions.slot(d.name))
        cond = cond if extra is None else torch.cat([cond, extra], dim=1)
        xs.append(x)
        cs.append(cond if owners is None else cond[owners])
    return torch.cat(xs), torch.cat(cs)
