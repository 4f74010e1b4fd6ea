"""What every readout shares: a stack of layers along the shower axis, given by z edges (mm)."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from calofm.geometry.axis import Axis


class LayerStack:
    """Mixin for readouts with a ``z_edges`` attribute: layer lookup and layer centres."""

    z_edges: tuple[float, ...]

    @property
    def n_layers(self) -> int:
        return len(self.z_edges) - 1

    @cached_property
    def z_axis(self) -> Axis:
        return Axis(self.z_edges)

    def layer_of(self, z: np.ndarray) -> np.ndarray:
        """Layer index of depths ``z`` (-1 before the first layer, >= n_layers after the last)."""
        return self.z_axis.bin(z)

    def layer_centres(self) -> np.ndarray:
        z = np.asarray(self.z_edges)
        return (z[:-1] + z[1:]) / 2


def read_out(shapes: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The transverse shapes of the layers that hold voxels: what a model's geometry depends on."""
    return tuple((slow, fast) for slow, fast in shapes if slow * fast)


def layer_grids(shapes: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """Runs of read-out layers with one transverse shape, consecutive once the layers without voxels
    are left out (they hold no data), as (n_layers, n_slow, n_fast) boxes in voxel order: a regular
    mesh is one grid, CaloChallenge dataset 1 several."""
    grids: list[list[int]] = []
    for slow, fast in read_out(shapes):
        if grids and grids[-1][1:] == [slow, fast]:
            grids[-1][0] += 1
        else:
            grids.append([1, slow, fast])
    return [tuple(g) for g in grids]
