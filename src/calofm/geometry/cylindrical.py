"""Cylindrical readout meshes (r, alpha, z) around the shower axis, as in the CaloChallenge.

Voxel order is the CaloChallenge one: layer (z) slowest, then alpha, then r fastest.
A layer may have its own r edges and number of alpha bins (dataset 1), or none at all
(``r_edges="0"``: the layer is not read out). Alpha bins start at -pi. Lengths are mm.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from calofm.core.errors import InputError
from calofm.geometry.axis import Axis
from calofm.geometry.layers import LayerStack


@dataclass(frozen=True)
class Layer:
    """One readout layer: radial bin edges (mm) and the number of equal alpha bins."""

    r_edges: tuple[float, ...]
    n_alpha: int

    @property
    def n_r(self) -> int:
        return max(len(self.r_edges) - 1, 0)

    @property
    def n_voxels(self) -> int:
        return self.n_r * self.n_alpha


@dataclass(frozen=True, eq=True)
class CylindricalBinning(LayerStack):
    """A cylindrical mesh: one :class:`Layer` per z bin, and the z bin edges (mm)."""

    layers: tuple[Layer, ...]
    z_edges: tuple[float, ...]
    name: str = ""

    def __post_init__(self):
        if len(self.z_edges) != len(self.layers) + 1:
            raise ValueError(f"{len(self.layers)} layers need {len(self.layers) + 1} z edges, got {len(self.z_edges)}")
        for i, layer in enumerate(self.layers):
            if layer.n_r and np.any(np.diff(layer.r_edges) <= 0):
                raise ValueError(f"layer {i}: r edges must increase")
            if layer.n_alpha < 1:
                raise ValueError(f"layer {i}: n_alpha must be >= 1")
        if np.any(np.diff(self.z_edges) <= 0):
            raise ValueError("z edges must increase")

    # --- construction -------------------------------------------------------------
    @classmethod
    def regular(cls, n_r: int, n_alpha: int, n_z: int, dr: float, dz: float, name: str = "") -> "CylindricalBinning":
        """Identical layers with ``n_r`` radial bins of ``dr`` mm and z bins of ``dz`` mm."""
        layer = Layer(tuple(float(v) for v in np.round(np.arange(n_r + 1) * dr, 10)), n_alpha)
        return cls((layer,) * n_z, tuple(float(v) for v in np.round(np.arange(n_z + 1) * dz, 10)), name)

    @classmethod
    def from_xml(cls, path: str | Path, particle: str | None = None, dz: float = 3.4) -> "CylindricalBinning":
        """Read a CaloChallenge binning XML (``<Bin><Layer id r_edges n_bin_alpha>``).

        The XML says nothing about depth: layer ``i`` spans ``[i*dz, (i+1)*dz)`` mm.
        """
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as exc:
            raise InputError(path, f"not a readable binning XML ({exc})") from None
        bins = [b for b in root.iter("Bin") if particle is None or b.get("name") == particle]
        if not bins:
            raise InputError(path, f"no <Bin> element{'' if particle is None else f' for particle {particle!r}'}")
        layers = []
        for element in sorted(bins[0].iter("Layer"), key=lambda e: int(e.get("id"))):
            edges = tuple(float(v) for v in element.get("r_edges").split(","))
            layers.append(Layer(edges if len(edges) > 1 else (), int(element.get("n_bin_alpha"))))
        z_edges = tuple(float(v) for v in np.round(np.arange(len(layers) + 1) * dz, 10))
        return cls(tuple(layers), z_edges, name=Path(path).stem.removeprefix("binning_"))

    def refined(self, factor: int) -> "CylindricalBinning":
        """The same mesh with every r bin and alpha bin split ``factor`` times (z unchanged)."""
        layers = []
        for layer in self.layers:
            if not layer.n_r:
                layers.append(layer)
                continue
            edges = np.asarray(layer.r_edges)
            fine = np.concatenate([np.linspace(a, b, factor + 1)[:-1] for a, b in zip(edges[:-1], edges[1:])]
                                  + [edges[-1:]])
            layers.append(Layer(tuple(float(v) for v in fine), layer.n_alpha * factor))
        return CylindricalBinning(tuple(layers), self.z_edges, f"{self.name}-x{factor}")

    def radial_edges(self) -> np.ndarray:
        """The union of the read-out layers' r edges (mm): the bins of a radial profile of the whole mesh."""
        return np.unique(np.concatenate([layer.r_edges for layer in self.layers if layer.n_voxels]))

    def radial_weights(self) -> np.ndarray:
        """(n_voxels, len(radial_edges) - 1): the share of each voxel's ring in each radial bin, by area.

        A voxel spanning several bins (a coarse layer beside fine ones) is split in proportion to the
        ring areas; on a regular mesh every voxel lies in one bin with weight 1.
        """
        union = self.radial_edges()
        rows = []
        for layer in self.layers:
            if not layer.n_voxels:
                continue
            a, b = np.asarray(layer.r_edges)[:-1, None], np.asarray(layer.r_edges)[1:, None]
            lo, hi = np.maximum(a, union[None, :-1]), np.minimum(b, union[None, 1:])
            share = np.clip(hi**2 - lo**2, 0, None) / (b**2 - a**2)  # (n_r, n_union)
            rows.append(np.tile(share, (layer.n_alpha, 1)))  # r fastest within a layer
        return np.concatenate(rows).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "type": "cylindrical",
            "name": self.name,
            "z_edges": list(self.z_edges),
            "layers": [{"r_edges": list(layer.r_edges), "n_alpha": layer.n_alpha} for layer in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CylindricalBinning":
        layers = tuple(Layer(tuple(layer["r_edges"]), int(layer["n_alpha"])) for layer in d["layers"])
        return cls(layers, tuple(d["z_edges"]), d.get("name", ""))

    # --- sizes and shapes ---------------------------------------------------------
    @cached_property
    def layer_offsets(self) -> np.ndarray:
        """First voxel index of each layer, plus the total at the end (length n_layers + 1)."""
        return np.concatenate([[0], np.cumsum([layer.n_voxels for layer in self.layers])]).astype(np.int64)

    @property
    def n_voxels(self) -> int:
        return int(self.layer_offsets[-1])

    def layer_shapes(self) -> list[tuple[int, int]]:
        """(n_alpha, n_r) of every layer, (alpha, 0) for a layer that is not read out."""
        return [(layer.n_alpha, layer.n_r) for layer in self.layers]

    @cached_property
    def is_regular(self) -> bool:
        """All layers share r edges and alpha bins: the mesh is a (z, alpha, r) box."""
        return self.layers[0].n_voxels > 0 and all(layer == self.layers[0] for layer in self.layers)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_z, n_alpha, n_r) of a regular mesh."""
        if not self.is_regular:
            raise ValueError(f"binning {self.name!r} has irregular layers and no (z, alpha, r) shape")
        return (self.n_layers, self.layers[0].n_alpha, self.layers[0].n_r)

    def describe(self) -> str:
        if self.is_regular:
            n_z, n_a, n_r = self.shape
            return f"{self.n_voxels} voxels = {n_z} x {n_a} x {n_r} (z x alpha x r)"
        used = [i for i, layer in enumerate(self.layers) if layer.n_voxels]
        parts = ", ".join(f"L{i}: {self.layers[i].n_alpha}x{self.layers[i].n_r}" for i in used)
        return f"{self.n_voxels} voxels in {len(used)} of {self.n_layers} layers (alpha x r: {parts})"

    # --- per-voxel indices and positions -----------------------------------------
    @cached_property
    def voxel_indices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(layer, alpha bin, r bin) of every voxel, in voxel order."""
        parts = []
        for i, layer in enumerate(self.layers):
            a, r = np.meshgrid(np.arange(layer.n_alpha), np.arange(layer.n_r), indexing="ij")
            parts.append((np.full(layer.n_voxels, i), a.ravel(), r.ravel()))
        return tuple(np.concatenate([p[k] for p in parts]).astype(np.int64) for k in range(3))

    def index(self, layer, alpha, r) -> np.ndarray:
        """Voxel index of (layer, alpha bin, r bin)."""
        layer, alpha, r = (np.asarray(v, dtype=np.int64) for v in (layer, alpha, r))
        n_r = np.array([mesh_layer.n_r for mesh_layer in self.layers])[layer]
        return self.layer_offsets[layer] + alpha * n_r + r

    @cached_property
    def voxel_edges(self) -> dict[str, np.ndarray]:
        """Lower and upper edges of every voxel in r, alpha and z (keys r0, r1, a0, a1, z0, z1)."""
        parts = {k: [] for k in ("r0", "r1", "a0", "a1", "z0", "z1")}
        for i, layer in enumerate(self.layers):
            if not layer.n_voxels:
                continue
            alpha = np.linspace(-math.pi, math.pi, layer.n_alpha + 1)
            r_edges = np.asarray(layer.r_edges)
            parts["r0"].append(np.tile(r_edges[:-1], layer.n_alpha))
            parts["r1"].append(np.tile(r_edges[1:], layer.n_alpha))
            parts["a0"].append(np.repeat(alpha[:-1], layer.n_r))
            parts["a1"].append(np.repeat(alpha[1:], layer.n_r))
            parts["z0"].append(np.full(layer.n_voxels, self.z_edges[i]))
            parts["z1"].append(np.full(layer.n_voxels, self.z_edges[i + 1]))
        return {k: np.concatenate(v) for k, v in parts.items()}

    def centres(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bin-centre (r, alpha, z) of every voxel (CaloChallenge convention: midpoints)."""
        e = self.voxel_edges
        return (e["r0"] + e["r1"]) / 2, (e["a0"] + e["a1"]) / 2, (e["z0"] + e["z1"]) / 2

    # --- points -> voxels ---------------------------------------------------------
    @cached_property
    def _r_axes(self) -> list[Axis | None]:
        """One radial axis per layer (None for layers without readout)."""
        return [Axis(layer.r_edges) if layer.n_r else None for layer in self.layers]

    def voxel_ids(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Voxel index of each point, or ``n_voxels`` for points outside the mesh."""
        layer = self.layer_of(z)
        r = np.sqrt(x * x + y * y)
        alpha = np.arctan2(y, x)
        if self.is_regular:
            n_z, n_a, n_r = self.shape
            ir = self._r_axes[0].bin(r)
            ia = _alpha_bin(alpha, n_a)
            outside = layer.view(np.uintp) >= n_z  # negative indices wrap to huge unsigned values
            outside |= ir.view(np.uintp) >= n_r
            layer *= n_a
            layer += ia
            layer *= n_r
            layer += ir
            layer[outside] = self.n_voxels
            return layer
        ids = np.full(x.shape, self.n_voxels, dtype=np.intp)
        for i, axis in enumerate(self._r_axes):
            if axis is None:
                continue
            sel = np.flatnonzero(layer == i)
            ir = axis.bin(r[sel])
            ok = (ir >= 0) & (ir < axis.n)
            ia = _alpha_bin(alpha[sel], self.layers[i].n_alpha)
            ids[sel[ok]] = self.layer_offsets[i] + ia[ok] * axis.n + ir[ok]
        return ids


def _alpha_bin(alpha: np.ndarray, n_alpha: int) -> np.ndarray:
    """Alpha bin of angles in [-pi, pi]; bins start at -pi, +pi falls in the last bin."""
    if n_alpha == 1:
        return np.zeros(alpha.shape, dtype=np.intp)
    ia = ((alpha + np.float32(math.pi)) * np.float32(n_alpha / (2 * math.pi))).astype(np.intp)
    return np.minimum(ia, n_alpha - 1, out=ia)  # alpha = +pi joins the last bin


# --- presets --------------------------------------------------------------------------
CALOCHALLENGE = {
    "dataset_1_photons": ("binning_dataset_1_photons.xml", "photon"),
    "dataset_1_pions": ("binning_dataset_1_pions.xml", "pion"),
    "dataset_2": ("binning_dataset_2.xml", "electron"),
    "dataset_3": ("binning_dataset_3.xml", "electron"),
}


def calochallenge_binning(name: str) -> CylindricalBinning:
    """A CaloChallenge binning by dataset name (``dataset_1_photons`` ... ``dataset_3``)."""
    if name not in CALOCHALLENGE:
        raise KeyError(f"unknown CaloChallenge binning {name!r}; known: {', '.join(CALOCHALLENGE)}")
    filename, particle = CALOCHALLENGE[name]
    with resources.as_file(resources.files("calofm.geometry") / "binning" / filename) as path:
        return CylindricalBinning.from_xml(path, particle)


def binning_for_n_voxels(n_voxels: int) -> CylindricalBinning | None:
    """The CaloChallenge binning with this many voxels (368, 533, 6480, 40500), else None."""
    for name in CALOCHALLENGE:
        binning = calochallenge_binning(name)
        if binning.n_voxels == n_voxels:
            return binning
    return None
