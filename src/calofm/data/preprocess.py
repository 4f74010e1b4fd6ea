"""Invertible preprocessing of mesh showers and their conditions (CaloDiT-2, seed 002 sections 3.2.2, 5.1).

Voxels: clip below 15.15 keV, then x_hat = (log(x + 1e-6) - mu) / sigma with ONE scalar mu and
sigma shared by all voxels of all pre-training detectors. The inverse clips again, so
``inverse(forward(x))`` gives back the clipped showers exactly up to float rounding. The inverse
also caps log(x + eps) at the largest value seen in the fit: through exp(), a model's rare
overshoot of a few sigma would otherwise become a voxel of 10^9 MeV.

Conditions: E / E_max, sin phi, cos phi, theta / pi, and a detector one-hot of ``n_slots``
= K + 1 entries (K pre-training detectors and one free slot for a new detector).

Both work on torch tensors so that generation and exported graphs post-process in place.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from calofm.core.errors import CalofmError
from calofm.core.units import keV

VOXEL_THRESHOLD = 15.15 * keV  # 0.5 keV in silicon / sampling fraction 0.033 (DESIGN.md)
LOG_EPS = 1e-6                 # MeV, inside the log
N_KINEMATIC = 4                # E, sin phi, cos phi, theta


@dataclass
class VoxelTransform:
    """Threshold, log and one shared standardisation; ``fit`` streams over any number of arrays."""

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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VoxelTransform:
        return cls(**d)


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

    def vector(self, energy: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
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
