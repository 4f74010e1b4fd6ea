"""High-level shower features, as the CaloChallenge defines them, for any cylindrical binning.

Per shower: E_tot; per layer with voxels ("relevant" layers): E_layer, the centre of energy in
eta = r cos(alpha) and phi = r sin(alpha) at voxel centres and its width (layers with more
than one alpha bin only, as the CaloChallenge), the centre of energy in r and its width, and
the sparsity (fraction of voxels without energy). Centre = sum(x E) / (sum E + 1e-16); width =
sqrt(max(<x^2> - centre^2, 0)). Features are computed chunk by chunk (float32 storage, float64
sums), so a file larger than memory streams through.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from calofm.geometry import CylindricalBinning

_EPS = 1e-16


@dataclass
class Features:
    e_inc: np.ndarray        # (N,) MeV
    e_tot: np.ndarray        # (N,) MeV
    n_hit: np.ndarray        # (N,) voxels with energy (occupancy)
    e_layer: np.ndarray      # (N, L) MeV, relevant layers
    sparsity: np.ndarray     # (N, L) fraction of empty voxels
    ec_r: np.ndarray         # (N, L) mm
    width_r: np.ndarray      # (N, L) mm
    ec_eta: np.ndarray       # (N, La) mm, layers binned in alpha
    ec_phi: np.ndarray       # (N, La)
    width_eta: np.ndarray    # (N, La)
    width_phi: np.ndarray    # (N, La)
    e_radial: np.ndarray     # (N, n_r) MeV per r bin (of binning.radial_edges()), summed over layers and alpha

    def __len__(self) -> int:
        return len(self.e_inc)

    def take(self, index) -> "Features":
        return Features(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: list["Features"]) -> "Features":
        return Features(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Features)})


class FeatureExtractor:
    """Computes :class:`Features` for showers on one binning (geometry prepared once)."""

    def __init__(self, binning: CylindricalBinning):
        self.binning = binning
        self.layers = np.array([i for i, layer in enumerate(binning.layers) if layer.n_voxels])
        self.alpha_layers = np.array([i for i in self.layers if binning.layers[i].n_alpha > 1])
        r, alpha, _ = binning.centres()
        self._r = r.astype(np.float64)
        self._eta = (r * np.cos(alpha)).astype(np.float64)
        self._phi = (r * np.sin(alpha)).astype(np.float64)
        self._slices = [slice(binning.layer_offsets[i], binning.layer_offsets[i + 1]) for i in range(binning.n_layers)]
        self._radial = None if binning.is_regular else binning.radial_weights()

    def __call__(self, showers: np.ndarray, e_inc: np.ndarray) -> Features:
        showers = np.asarray(showers)
        n = len(showers)
        layer_count = len(self.layers)
        e_layer = np.zeros((n, layer_count), np.float64)
        sparsity = np.zeros((n, layer_count), np.float32)
        ec_r, width_r = np.zeros((2, n, layer_count), np.float32)
        ec_eta, ec_phi, width_eta, width_phi = np.zeros((4, n, len(self.alpha_layers)), np.float32)
        k = 0
        for j, layer in enumerate(self.layers):
            block = showers[:, self._slices[layer]].astype(np.float64)
            e = block.sum(axis=1)
            e_layer[:, j] = e
            sparsity[:, j] = np.mean(block <= 0, axis=1)
            ec_r[:, j], width_r[:, j] = _centre_and_width(block, e, self._r[self._slices[layer]])
            if k < len(self.alpha_layers) and self.alpha_layers[k] == layer:
                ec_eta[:, k], width_eta[:, k] = _centre_and_width(block, e, self._eta[self._slices[layer]])
                ec_phi[:, k], width_phi[:, k] = _centre_and_width(block, e, self._phi[self._slices[layer]])
                k += 1
        if self._radial is None:
            e_radial = showers.reshape(n, *self.binning.shape).sum(axis=(1, 2), dtype=np.float64)
        else:  # layers with their own rings: split each voxel over the common radial bins
            e_radial = showers.astype(np.float64) @ self._radial
        return Features(e_inc=np.asarray(e_inc, np.float64), e_tot=e_layer.sum(axis=1),
                        n_hit=np.count_nonzero(showers > 0, axis=1), e_layer=e_layer.astype(np.float32),
                        sparsity=sparsity, ec_r=ec_r, width_r=width_r, ec_eta=ec_eta, ec_phi=ec_phi,
                        width_eta=width_eta, width_phi=width_phi, e_radial=e_radial.astype(np.float32))


def _centre_and_width(block: np.ndarray, energy: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted mean of ``x`` and its standard deviation (CaloChallenge HighLevelFeatures)."""
    centre = block @ x / (energy + _EPS)
    second = block @ (x * x) / (energy + _EPS)
    variance = second - centre**2
    variance[variance < 1e-9 * second] = 0  # rounding residue of a single-voxel layer is no width
    return centre, np.sqrt(variance)


def high_level_vector(f: Features) -> np.ndarray:
    """The CaloChallenge high-level classifier / FPD input, (N, d) float32.

    [log10 E_inc, log10(E_layer + 1e-8), EC_eta/100, EC_phi/100, W_eta/100, W_phi/100,
    log10(E_tot + 1e-8), sparsity, EC_r/100, W_r/100]; E in MeV (as in the challenge files).
    """
    parts = [np.log10(f.e_inc)[:, None], np.log10(f.e_layer + 1e-8), f.ec_eta / 100, f.ec_phi / 100,
             f.width_eta / 100, f.width_phi / 100, np.log10(f.e_tot + 1e-8)[:, None], f.sparsity,
             f.ec_r / 100, f.width_r / 100]
    return np.concatenate([np.asarray(p, np.float32) for p in parts], axis=1)


GLOBAL_FEATURES = ("log10 E_inc", "E_tot / E_inc", "occupancy", "z centre / 100 mm", "z width / 100 mm",
                   "r centre / 100 mm", "r width / 100 mm")


def relevant_depths(binning: CylindricalBinning) -> np.ndarray:
    """Depth (mm) of the centre of each layer that holds voxels: the z of ``Features.e_layer``'s columns."""
    return binning.layer_centres()[[i for i, layer in enumerate(binning.layers) if layer.n_voxels]]


def global_vector(f: Features, binning: CylindricalBinning) -> np.ndarray:
    """Seven whole-shower features (:data:`GLOBAL_FEATURES`), (N, 7) float32: the low-dimensional
    FPD input. FPD's finite-sample bias grows with the dimension: on the 362 CaloChallenge features
    it hides a 5 % energy scale at every size up to 50 000 showers, on these seven the scale shows
    from about 1000 (studies/fpd-small-samples)."""
    edges = binning.radial_edges()
    z_centre, z_width = _centre_and_width(f.e_layer.astype(np.float64), f.e_tot, relevant_depths(binning))
    radial = f.e_radial.astype(np.float64)
    r_centre, r_width = _centre_and_width(radial, radial.sum(axis=1), (edges[:-1] + edges[1:]) / 2)
    parts = [np.log10(f.e_inc), f.e_tot / f.e_inc, f.n_hit / binning.n_voxels, z_centre / 100, z_width / 100,
             r_centre / 100, r_width / 100]
    return np.stack([np.asarray(p, np.float32) for p in parts], axis=1)
