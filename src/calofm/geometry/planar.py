"""Planar readouts: rectangular cells in (x, y) per layer, as in the ILD Si-W ECAL.

Voxel order: layer slowest, then the y cell, then the x cell fastest. The grid is centred
on the shower axis. Lengths are mm.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from calofm.geometry.axis import Axis
from calofm.geometry.layers import LayerStack


@dataclass(frozen=True)
class PlanarGrid(LayerStack):
    n_x: int
    n_y: int
    cell_x: float
    cell_y: float
    z_edges: tuple[float, ...]
    name: str = ""

    @classmethod
    def from_layer_thicknesses(cls, n_x: int, n_y: int, cell: float, pitches, name: str = "") -> "PlanarGrid":
        """Square cells of ``cell`` mm; layer i spans ``pitches[i]`` mm in depth."""
        z_edges = np.round(np.concatenate([[0.0], np.cumsum(pitches)]), 10)
        return cls(n_x, n_y, cell, cell, tuple(float(v) for v in z_edges), name)

    def refined(self, factor: int) -> "PlanarGrid":
        """The same grid with every cell split ``factor`` times in x and in y (layers unchanged)."""
        return PlanarGrid(self.n_x * factor, self.n_y * factor, self.cell_x / factor, self.cell_y / factor,
                          self.z_edges, f"{self.name}-x{factor}")

    def to_dict(self) -> dict:
        return {"type": "planar", "name": self.name, "n_x": self.n_x, "n_y": self.n_y,
                "cell_x": self.cell_x, "cell_y": self.cell_y, "z_edges": list(self.z_edges)}

    @classmethod
    def from_dict(cls, d: dict) -> "PlanarGrid":
        return cls(int(d["n_x"]), int(d["n_y"]), float(d["cell_x"]), float(d["cell_y"]), tuple(d["z_edges"]),
                   d.get("name", ""))

    @property
    def n_voxels(self) -> int:
        return self.n_layers * self.n_y * self.n_x

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_layers, n_y, n_x)."""
        return (self.n_layers, self.n_y, self.n_x)

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(n_y, n_x) of every layer (the cell order within a layer: y slow, x fast)."""
        return [(self.n_y, self.n_x)] * self.n_layers

    def describe(self) -> str:
        return (f"{self.n_voxels} cells = {self.n_layers} x {self.n_y} x {self.n_x} (layer x y x x), "
                f"{self.cell_x:g} x {self.cell_y:g} mm cells")

    @cached_property
    def _xy_axes(self) -> tuple[Axis, Axis]:
        half_x, half_y = self.n_x * self.cell_x / 2, self.n_y * self.cell_y / 2
        return (Axis(np.linspace(-half_x, half_x, self.n_x + 1)),
                Axis(np.linspace(-half_y, half_y, self.n_y + 1)))

    def voxel_ids(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Cell index of each point, or ``n_voxels`` for points outside the grid."""
        ax, ay = self._xy_axes
        ix, iy, iz = ax.bin(x), ay.bin(y), self.layer_of(z)
        outside = ix.view(np.uintp) >= self.n_x  # negative indices wrap to huge unsigned values
        outside |= iy.view(np.uintp) >= self.n_y
        outside |= iz.view(np.uintp) >= self.n_layers
        iz *= self.n_y
        iz += iy
        iz *= self.n_x
        iz += ix
        iz[outside] = self.n_voxels
        return iz


def ild_ecal(n_cells: int = 30, cell: float = 5.0, absorber_mm=(2.1, 4.2), sensor_mm: float = 0.5) -> PlanarGrid:
    """The ILD Si-W ECAL readout: 20 layers of thin and 10 of thick absorber, 5 x 5 mm cells.

    A layer's depth pitch is its absorber plus its silicon (passive boards are ignored).
    """
    thin, thick = absorber_mm
    pitches = [thin + sensor_mm] * 20 + [thick + sensor_mm] * 10
    return PlanarGrid.from_layer_thicknesses(n_cells, n_cells, cell, pitches, name="ild")
