"""Load an evaluation sample from a shower file in one streaming pass.

Kept per shower: the high-level :class:`Features` (small). Kept from a capped number of showers
(the first ones; simulated and generated files are in random order): the voxels, for the
low-level classifiers and PRDC, and the non-zero voxel energies, for the voxel spectrum. The caps
bound memory whatever the file size: a dataset-3 file of 100k showers is never held whole.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calofm.core.errors import InputError
from calofm.core.particles import particle_name
from calofm.data import open_showers
from calofm.evaluate.features import FeatureExtractor, Features
from calofm.geometry import CylindricalBinning

DEFAULT_MAX_VOXEL_ROWS = 20_000
VOXEL_BYTES_PER_SAMPLE = 1.2e9  # kept voxels per sample; classifier inputs add one copy of each


def default_voxel_rows(n_voxels: int) -> int:
    """Showers kept whole per sample: 20 000, fewer for large meshes (7 400 for dataset 3)."""
    return int(min(DEFAULT_MAX_VOXEL_ROWS, VOXEL_BYTES_PER_SAMPLE // (4 * n_voxels)))
DEFAULT_MAX_VOXEL_VALUES = 1_000_000  # 20 bootstrap repeats of the W1 take ~5 s


@dataclass
class Sample:
    path: str
    features: Features
    voxels: np.ndarray          # (M, n_voxels) float32, the first M <= cap showers
    voxel_energies: np.ndarray  # non-zero voxel energies of the first showers, capped
    theta: np.ndarray | None
    particles: dict[str, int] = field(default_factory=dict)  # showers per particle in the whole file, where it says

    def __len__(self) -> int:
        return len(self.features)

    def take(self, index: np.ndarray) -> "Sample":
        """The showers at ``index`` (features exactly; voxels for those among the kept rows)."""
        index = np.asarray(index)
        kept = index[index < len(self.voxels)]
        voxels = self.voxels[kept]
        values = voxels[voxels > 0].astype(np.float32)
        return Sample(self.path, self.features.take(index), voxels, values,
                      None if self.theta is None else self.theta[index], self.particles)


def sample_from_arrays(name: str, showers: np.ndarray, energy: np.ndarray, binning, theta=None) -> Sample:
    """A :class:`Sample` of showers already in memory (CaloChallenge order, MeV), e.g. during training."""
    nonzero = showers[showers > 0][:DEFAULT_MAX_VOXEL_VALUES]
    return Sample(name, FeatureExtractor(binning)(showers, energy), showers, nonzero.astype(np.float32), theta)


def load_sample(path: str | Path, binning=None, threshold: float = 0.0, max_voxel_rows: int | None = None,
                chunk_size: int = 5_000) -> tuple[Sample, CylindricalBinning]:
    """Stream ``path``: features of every shower, voxels of the first ``max_voxel_rows``
    (default :func:`default_voxel_rows` of the file's mesh).

    Voxels below ``threshold`` MeV are set to zero first (0: keep the file's values).
    Returns the sample and the file's binning.
    """
    features, voxels, values, thetas = [], [], [], []
    particles: Counter = Counter()
    with open_showers(path, binning) as f:
        if not isinstance(f.readout, CylindricalBinning):
            raise InputError(path, "evaluation needs showers on a cylindrical mesh (convert point clouds first)")
        extract = FeatureExtractor(f.readout)
        if max_voxel_rows is None:
            max_voxel_rows = default_voxel_rows(f.readout.n_voxels)
        kept = kept_values = 0
        for batch in f.iter_chunks(chunk_size, progress=len(f) > 4 * chunk_size):
            if batch.showers is None:
                raise InputError(path, "holds no voxel showers (project the point clouds first: calofm convert)")
            showers = batch.showers
            if threshold > 0:
                showers = np.where(showers < threshold, 0, showers).astype(np.float32)
            features.append(extract(showers, batch.energy))
            thetas.append(batch.theta)
            if batch.particle is not None:
                particles.update(particle_name(code) for code in batch.particle)
            elif "particle" in f.metadata:  # a generated file: the particle its model was trained on
                particles[str(f.metadata["particle"])] += len(batch.energy)
            if kept < max_voxel_rows:
                rows = showers[:max_voxel_rows - kept]
                voxels.append(rows)
                kept += len(rows)
            if kept_values < DEFAULT_MAX_VOXEL_VALUES:
                nonzero = showers[showers > 0][:DEFAULT_MAX_VOXEL_VALUES - kept_values]
                values.append(nonzero)
                kept_values += len(nonzero)
        binning = f.readout
    theta = None if any(t is None for t in thetas) else np.concatenate(thetas)
    return Sample(str(path), Features.concat(features), np.concatenate(voxels), np.concatenate(values), theta,
                  dict(particles)), binning
