"""The representations of showers a model can take, by kind: their registry, fitting and loading.

``REPRESENTATIONS`` maps every representation's kind (mesh and layer ratios from
:mod:`calofm.data.preprocess`, points and layer counts from :mod:`calofm.data.points`, tokens from
:mod:`calofm.data.tokens`) to its class; a model description's ``voxels`` names one.
"""

from __future__ import annotations

import numpy as np

from calofm.data.points import LayerCountTransform, PointCloudTransform
from calofm.data.preprocess import LayerRatioTransform, VoxelTransform
from calofm.data.tokens import Tokeniser

REPRESENTATIONS = {c.kind: c for c in (VoxelTransform, LayerRatioTransform, LayerCountTransform, PointCloudTransform,
                                       Tokeniser)}
POINT_KINDS = (LayerCountTransform.kind, PointCloudTransform.kind)


def fit_representation(kind: str, detectors: list):
    """The representation ``kind`` fitted on the (pre-training) ``detectors``."""
    if kind == VoxelTransform.kind:
        return VoxelTransform.fit(d.showers.showers for d in detectors)
    if kind == LayerRatioTransform.kind:
        return LayerRatioTransform.fit((d.showers.showers, d.showers.energy, d.readout) for d in detectors)
    if kind == LayerCountTransform.kind:
        return LayerCountTransform.fit(detectors[0].readout)
    if kind == PointCloudTransform.kind:
        z_edges = detectors[0].readout.z_edges
        return PointCloudTransform.fit([PointCloudTransform.clouds(d.showers, d.readout) for d in detectors], z_edges)
    if kind == Tokeniser.kind:
        return Tokeniser.fit(np.concatenate([d.showers.showers for d in detectors]))
    raise ValueError(f"unknown representation {kind!r}; known: {', '.join(REPRESENTATIONS)}")


def representation_from_dict(d: dict):
    """The representation saved by ``to_dict`` (a model description's ``voxels``)."""
    kind = d.get("kind", VoxelTransform.kind)
    if kind not in REPRESENTATIONS:
        raise ValueError(f"unknown representation {kind!r}; known: {', '.join(REPRESENTATIONS)}")
    return REPRESENTATIONS[kind].from_dict(d)
