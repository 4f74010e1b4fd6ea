"""Detector readouts: cylindrical meshes, planar grids, voxel orders, projection and smearing."""

from calofm.geometry.cylindrical import (
    CALOCHALLENGE,
    CylindricalBinning,
    Layer,
    binning_for_n_voxels,
    calochallenge_binning,
)
from calofm.geometry.layers import layer_grids, read_out
from calofm.geometry.orders import ORDERS, reorder
from calofm.geometry.planar import PlanarGrid, ild_ecal
from calofm.geometry.projection import Readout, project, smear


def readout_from_dict(d: dict):
    """Rebuild a readout saved with ``to_dict`` (cylindrical mesh or planar grid)."""
    kinds = {"cylindrical": CylindricalBinning, "planar": PlanarGrid}
    if d.get("type") not in kinds:
        raise ValueError(f"unknown readout type {d.get('type')!r}")
    return kinds[d["type"]].from_dict(d)


__all__ = [
    "CALOCHALLENGE", "ORDERS", "CylindricalBinning", "Layer", "PlanarGrid", "Readout",
    "binning_for_n_voxels", "calochallenge_binning", "ild_ecal", "layer_grids", "read_out", "project",
    "readout_from_dict", "reorder", "smear",
]
