"""Invertible preprocessing of showers and their conditions: the model tensors of each family.

A *representation* turns CaloChallenge-order voxel rows (N, n_voxels) in MeV and the incident
energies into the tensor a model is trained on (``encode``) and back (``decode``), and says that
tensor's per-shower shape for a readout (``state_shape``); :mod:`calofm.data.representations` maps
its ``kind`` (stored in ``to_dict``) to its class. Two live here (the point-cloud ones in :mod:`calofm.data.points`):

* :class:`VoxelTransform` (``mesh``, CaloDiT-2): the (R, A, Z) mesh of log voxels.
* :class:`LayerRatioTransform` (``layer_ratios``, CaloDREAM): the layer-energy ratios u, then every
  voxel as a fraction of its layer's energy, flat; any layered readout, regular or not.

Mesh voxels (CaloDiT-2, sections 3.2.2, 5.1): clip below 15.15 keV, then x_hat = (log(x + 1e-6) - mu) / sigma
with ONE scalar mu and sigma shared by all voxels of all pre-training detectors. The inverse clips again, so
``inverse(forward(x))`` gives back the clipped showers exactly up to float rounding. The inverse
also caps log(x + eps) at the largest value seen in the fit: through exp(), a model's rare
overshoot of a few sigma would otherwise become a voxel of 10^9 MeV.

Conditions: E / E_max, sin phi, cos phi, theta / pi, and a detector one-hot of ``n_slots``
= K + 1 entries (K pre-training detectors and one free slot for a new detector).

Both work on torch tensors so that generation and exported graphs post-process in place.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import torch

from calofm.core.errors import CalofmError
from calofm.core.units import keV
from calofm.geometry.layers import read_out
from calofm.geometry.orders import reorder

VOXEL_THRESHOLD = 15.15 * keV  # 0.5 keV in silicon / sampling fraction 0.033 (DESIGN.md)
LOG_EPS = 1e-6                 # MeV, inside the log
N_KINEMATIC = 4                # E, sin phi, cos phi, theta


def to_model_layout(showers: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """CaloChallenge rows (N, Z*A*R) -> (N, R, A, Z) tensor."""
    n_r, n_a, n_z = shape
    return torch.from_numpy(reorder(showers, "calochallenge", "lemurs", (n_z, n_a, n_r)))


def from_model_layout(x: torch.Tensor) -> np.ndarray:
    """(N, R, A, Z) tensor -> CaloChallenge rows (N, Z*A*R)."""
    n_r, n_a, n_z = x.shape[1:]
    return reorder(x.detach().cpu().numpy(), "lemurs", "calochallenge", (n_z, n_a, n_r))


class Representation:
    """What the representations share: their fields and their ``kind`` as a JSON-able dict, and
    ``rows``: a detector's showers as model rows (one per shower unless the kind says otherwise)."""

    kind: ClassVar[str]
    extra_conditions: ClassVar[int] = 0  # condition columns the representation adds to each shower's

    def rows(self, showers, readout) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(model rows, the index of each row's shower or None for one row per shower, the
        ``extra_conditions`` columns of each shower or None)."""
        return self.encode(showers.showers, showers.energy, readout), None, None

    def to_dict(self) -> dict:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{k: v for k, v in d.items() if k != "kind"})


@dataclass
class VoxelTransform(Representation):
    """Threshold, log and one shared standardisation; ``fit`` streams over any number of arrays."""

    kind: ClassVar[str] = "mesh"
    mean: float
    std: float
    log_max: float = math.inf  # largest log(x + eps) of the fitted data
    threshold: float = VOXEL_THRESHOLD
    eps: float = LOG_EPS

    @classmethod
    def fit(cls, arrays, threshold: float = VOXEL_THRESHOLD, eps: float = LOG_EPS) -> VoxelTransform:
        """mu and sigma of log(x + eps) over every voxel of ``arrays`` (clipped at ``threshold``)."""
        n, s1, s2, top = 0, 0.0, 0.0, -math.inf
        for a in arrays:
            a = np.asarray(a, dtype=np.float64)
            logs = np.log(np.where(a < threshold, 0.0, a) + eps)
            n, s1, s2 = n + logs.size, s1 + logs.sum(), s2 + np.square(logs).sum()
            top = max(top, float(logs.max(initial=-math.inf)))
        if n == 0:
            raise ValueError("no voxels to fit the preprocessing on")
        mean = s1 / n
        return cls(mean=float(mean), std=float(math.sqrt(max(s2 / n - mean**2, 1e-12))), log_max=top,
                   threshold=threshold, eps=eps)

    def clip(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x < self.threshold, torch.zeros_like(x), x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.log(self.clip(x) + self.eps) - self.mean) / self.std

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.clip(torch.exp((y * self.std + self.mean).clamp(max=self.log_max)) - self.eps)

    @staticmethod
    def state_shape(readout) -> tuple[int, ...]:
        """(R, A, Z) of a regular mesh."""
        n_z, n_a, n_r = readout.shape
        return n_r, n_a, n_z

    def encode(self, rows: np.ndarray, energy: np.ndarray, readout) -> torch.Tensor:
        return self.forward(to_model_layout(np.asarray(rows, dtype=np.float32), self.state_shape(readout)))

    def decode(self, x: torch.Tensor, energy: np.ndarray) -> np.ndarray:
        return from_model_layout(self.inverse(x.float()))


def layer_ratios(layer_energy: torch.Tensor, incident: torch.Tensor, u0_scale: float) -> torch.Tensor:
    """Stick-breaking ratios (CaloFlow, CaloDREAM++ ref. [36]) of (N, L) layer energies: u_0 =
    E_total / (u0_scale E_inc), u_i = E_(i-1) / sum_(j >= i-1) E_j for i = 1 .. L-1 (0 when nothing
    is left). All in [0, 1] while E_total <= u0_scale E_inc."""
    remaining = layer_energy.flip(1).cumsum(1).flip(1)  # sum over j >= i
    u_rest = torch.where(remaining[:, :-1] > 0, layer_energy[:, :-1] / remaining[:, :-1].clamp(min=1e-30),
                         torch.zeros_like(remaining[:, :-1]))
    return torch.cat([remaining[:, :1] / (u0_scale * incident[:, None]), u_rest], dim=1)


def energies_from_ratios(u: torch.Tensor, incident: torch.Tensor, u0_scale: float) -> torch.Tensor:
    """The inverse of :func:`layer_ratios`: (N, L) layer energies; u_i (i >= 1) are clamped to [0, 1]
    and u_0 to >= 0 first, so any model output gives non-negative energies summing to u_0 s E_inc."""
    total = u[:, :1].clamp(min=0) * u0_scale * incident[:, None]
    fractions = u[:, 1:].clamp(0, 1)
    # the share not yet taken, prod_(j < i) (1 - f_j), as exp(cumsum(log)): ONNX has no cumulative product
    # (log 0 = -inf gives exp(-inf) = 0 for every later layer, as the product would)
    left = torch.cat([torch.ones_like(total), torch.exp(torch.cumsum(torch.log1p(-fractions), dim=1))], dim=1)
    return total * left * torch.cat([fractions, torch.ones_like(total)], dim=1)


@dataclass
class LayerRatioTransform(Representation):
    """CaloDREAM's representation (CaloDREAM++, section 2.2): [u, normalised voxels], flat.

    Layer energies become the ratios u of :func:`layer_ratios`; every voxel becomes its fraction of
    its layer's energy. Both go through logit(alpha + (1 - 2 alpha) p), then one mean and std each
    (u and voxels), fitted on the pre-training data and kept by every adaptation: bounded variables
    keep their boundaries whatever the detector (CaloDREAM++, section 2.2, "Embedding of the
    conditions"). ``decode`` renormalises the generated fractions of each layer to sum to one before
    scaling them by the generated layer energy, then clips at the voxel threshold.
    """

    kind: ClassVar[str] = "layer_ratios"
    layer_sizes: list[int]          # voxels of each read-out layer, in voxel order
    u0_scale: float                 # E_total / E_inc of the fit's showers is at most 1 / 2 of it
    u_mean: float = 0.0
    u_std: float = 1.0
    v_mean: float = 0.0
    v_std: float = 1.0
    alpha: float = 1e-6
    threshold: float = VOXEL_THRESHOLD

    @property
    def n_layers(self) -> int:
        return len(self.layer_sizes)

    @staticmethod
    def sizes_of(readout) -> list[int]:
        """Voxels of each read-out layer of ``readout`` (layers without voxels left out)."""
        return [slow * fast for slow, fast in read_out(readout.layer_shapes())]

    def state_shape(self, readout) -> tuple[int, ...]:
        return (self.n_layers + int(sum(self.sizes_of(readout))),)

    def for_readout(self, readout) -> LayerRatioTransform:
        """This transform for another readout's layers: the same u0 scale, logits and standardisation
        (CaloDREAM++ section 6 keeps the preprocessing's boundaries when the geometry changes)."""
        return dataclasses.replace(self, layer_sizes=self.sizes_of(readout))

    @classmethod
    def fit(cls, parts, alpha: float = 1e-6, threshold: float = VOXEL_THRESHOLD) -> LayerRatioTransform:
        """Fit on ``parts``: (rows, incident energies, readout) of every pre-training detector."""
        parts = list(parts)
        sizes = {tuple(cls.sizes_of(readout)) for _, _, readout in parts}
        if len(sizes) != 1:
            raise ValueError("the detectors' readouts have different layers; one layer-ratio model needs one")
        ratio = max(float((np.where(rows < threshold, 0, rows).sum(1) / energy).max()) for rows, energy, _ in parts)
        tf = cls(layer_sizes=list(next(iter(sizes))), u0_scale=2.0 * ratio, alpha=alpha, threshold=threshold)
        u, v = zip(*(tf._logits(rows, energy) for rows, energy, _ in parts))
        u, v = torch.cat(u), torch.cat(v)
        return cls(tf.layer_sizes, tf.u0_scale, float(u.mean()), float(u.std().clamp(min=1e-6)),
                   float(v.mean()), float(v.std().clamp(min=1e-6)), alpha, threshold)

    def _logit(self, p: torch.Tensor) -> torch.Tensor:
        return torch.logit(self.alpha + (1 - 2 * self.alpha) * p)

    def _expit(self, y: torch.Tensor) -> torch.Tensor:
        return ((torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)).clamp(0, 1)

    def _layer_index(self, device=None) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(self.n_layers, device=device),
                                       torch.tensor(self.layer_sizes, device=device))

    def _logits(self, rows: np.ndarray, energy: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Unstandardised logits of u (N, L) and of the voxel fractions (N, V), in float64."""
        x = torch.as_tensor(np.asarray(rows), dtype=torch.float64)
        if x.ndim != 2 or x.shape[1] != sum(self.layer_sizes):
            raise ValueError(f"showers of shape {tuple(x.shape)} do not match this model's "
                             f"{sum(self.layer_sizes)} voxels in {self.n_layers} layers")
        x = torch.where(x < self.threshold, torch.zeros_like(x), x)
        index = self._layer_index()
        layer = torch.zeros((len(x), self.n_layers), dtype=x.dtype).index_add_(1, index, x)
        per_voxel = layer[:, index]
        fraction = torch.where(per_voxel > 0, x / per_voxel.clamp(min=1e-30), torch.zeros_like(x))
        u = layer_ratios(layer, torch.as_tensor(np.asarray(energy), dtype=torch.float64), self.u0_scale)
        return self._logit(u), self._logit(fraction)

    def encode(self, rows: np.ndarray, energy: np.ndarray, readout=None) -> torch.Tensor:
        """(N, L + V) float32: standardised logits of u, then of the voxel fractions."""
        u, v = self._logits(rows, energy)
        return torch.cat([(u - self.u_mean) / self.u_std, (v - self.v_mean) / self.v_std], dim=1).float()

    def decode(self, x: torch.Tensor, energy: np.ndarray) -> np.ndarray:
        """CaloChallenge-order rows (N, V) in MeV from model tensors (N, L + V), computed in float64."""
        x = x.detach().to(torch.float64)
        incident = torch.as_tensor(np.asarray(energy), dtype=x.dtype, device=x.device)
        return self.energies(x, incident).float().cpu().numpy()

    def energies(self, x: torch.Tensor, incident: torch.Tensor) -> torch.Tensor:
        """:meth:`decode` in torch alone, in ``x``'s dtype: (N, V) voxel energies in MeV, CaloChallenge
        order, given the (N,) incident energies in MeV (exported graphs call it)."""
        u = self._expit(x[:, :self.n_layers] * self.u_std + self.u_mean)
        fraction = self._expit(x[:, self.n_layers:] * self.v_std + self.v_mean)
        index = self._layer_index(x.device)
        sums = torch.zeros_like(u).index_add(1, index, fraction)[:, index]
        layer = energies_from_ratios(u, incident, self.u0_scale)
        voxels = torch.where(sums > 0, fraction / sums.clamp(min=1e-30), torch.zeros_like(sums)) * layer[:, index]
        return torch.where(voxels < self.threshold, torch.zeros_like(voxels), voxels)


@dataclass
class ConditionTransform:
    """The condition vector [E/E_max, sin phi, cos phi, theta/pi, one-hot(detector slot)]."""

    e_max: float                                          # MeV
    detectors: list[str] = field(default_factory=list)    # name of each used slot, in slot order
    n_slots: int = 0                                      # K + 1

    def __post_init__(self):
        if self.n_slots < len(self.detectors):
            raise ValueError(f"{len(self.detectors)} detectors do not fit in {self.n_slots} slots")

    @property
    def n_cond(self) -> int:
        return N_KINEMATIC + self.n_slots

    def slot(self, detector: str) -> int:
        """The one-hot index of ``detector``; a one-line error lists the known ones."""
        if detector not in self.detectors:
            raise CalofmError(f"unknown detector {detector!r}; this model knows: {', '.join(self.detectors)}")
        return self.detectors.index(detector)

    def with_detector(self, detector: str) -> ConditionTransform:
        """This transform with ``detector`` in the next free slot (unchanged if it has one already)."""
        if detector in self.detectors:
            return self
        if len(self.detectors) == self.n_slots:
            raise CalofmError(f"no free detector slot for {detector!r}: all {self.n_slots} slots are taken by "
                              f"{', '.join(self.detectors)}")
        return ConditionTransform(self.e_max, [*self.detectors, detector], self.n_slots)

    def forward(self, energy, theta, phi, slot) -> torch.Tensor:
        """(N, n_cond) float32 from per-shower energy (MeV), theta, phi (rad) and slot index."""
        energy, theta, phi = (torch.as_tensor(np.asarray(v), dtype=torch.float64) for v in (energy, theta, phi))
        slot = torch.as_tensor(np.asarray(slot), dtype=torch.long).expand(energy.shape)
        onehot = torch.nn.functional.one_hot(slot, self.n_slots).to(torch.float64)
        return self.vector(energy[:, None], theta[:, None], phi[:, None], onehot).to(torch.float32)

    def vector(self, energy: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor,
               onehot: torch.Tensor) -> torch.Tensor:
        """The condition vector from (N, 1) energy (MeV), theta, phi and the (N, n_slots) one-hot, in
        torch operations only (so exported graphs compute it too)."""
        return torch.cat([energy / self.e_max, torch.sin(phi), torch.cos(phi), theta / math.pi, onehot], dim=1)

    def inverse(self, cond: torch.Tensor) -> dict[str, torch.Tensor]:
        """Energy (MeV), theta, phi and slot back from a condition vector."""
        cond = cond.to(torch.float64)
        return {"energy": cond[:, 0] * self.e_max, "phi": torch.atan2(cond[:, 1], cond[:, 2]),
                "theta": cond[:, 3] * math.pi, "slot": cond[:, N_KINEMATIC:].argmax(dim=1)}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ConditionTransform:
        return cls(**d)
