"""Export a one-step (consistency-distilled) model for Geant4: ONNX or TorchScript, sampler inside.

The graph's contract is the one of Geant4's Par04 example for CaloDiT-2:

    input     "input", float32 (B, 3 + S): [E in GeV, phi in rad, theta in rad, one-hot of the
              model's S detector slots] (S = 5 for CaloDiT-2's 4 pre-training detectors + 1 free)
    output    "energies", float32 (B, R * A * Z): energy per voxel of the universal mesh in MeV
              (Geant4's internal energy unit: a value v is v * CLHEP::MeV), in the Par04 order
              r outer, phi, z inner (6480 = 9 x 16 x 45 for the default mesh)

Inside: the condition vector (E / E_max, sin phi, cos phi, theta / pi, one-hot), Gaussian noise
(RandomNormal in ONNX), one consistency step f(sigma_max * z, sigma_max), and the inverse voxel
preprocessing (exp, cap at the largest training voxel, 15.15 keV threshold). The batch axis is
dynamic. With ``noise_input`` the noise is a second input "noise" (B, R, A, Z) instead, so an
exported graph can be compared with PyTorch on the same noise (the parity check).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from calofm.core.errors import InputError
from calofm.core.files import atomic_path
from calofm.generative import Consistency
from calofm.inference import TrainedModel

FORMATS = ("onnx", "torchscript")
N_INPUT_KINEMATICS = 3  # E (GeV), phi, theta


class OneStepGenerator(nn.Module):
    """``inputs (B, 3 + S) [, noise (B, R, A, Z)] -> energies (B, R * A * Z)`` (see module docstring)."""

    def __init__(self, model: TrainedModel, noise_input: bool = False):
        super().__init__()
        if not isinstance(model.process, Consistency):
            raise InputError(model.path, f"holds an '{model.describe['process']}' model; export a one-step consistency-"
                                         "distilled run (calofm train with process cd, or calofm adapt --cd)")
        if model.representation_kind != "mesh":
            raise InputError(model.path, f"holds a {model.describe['backbone']} model on the "
                                         f"'{model.representation_kind}' representation; the export graph decodes "
                                         "mesh (CaloDiT-2) models only")
        self.process = model.process.eval()
        self.conditions, self.voxels = model.conditions, model.voxels
        self.shape, self.noise_input = tuple(model.shape), noise_input
        self.n_inputs = N_INPUT_KINEMATICS + self.conditions.n_slots

    def forward(self, inputs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        energy = inputs[:, 0:1] * 1000.0  # GeV -> MeV
        cond = self.conditions.vector(energy, inputs[:, 2:3], inputs[:, 1:2], inputs[:, N_INPUT_KINEMATICS:])
        if noise is None:
            noise = torch.randn((inputs.shape[0], *self.shape), dtype=inputs.dtype, device=inputs.device)
        return self.voxels.inverse(self.process.one_step(noise, cond)).flatten(1)

    def example(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Example inputs for tracing: valid energies, angles and one-hot vectors."""
        g = torch.Generator().manual_seed(0)
        inputs = torch.zeros(batch, self.n_inputs)
        inputs[:, 0] = 1 + 99 * torch.rand(batch, generator=g)
        inputs[:, 1] = (2 * torch.rand(batch, generator=g) - 1) * math.pi
        inputs[:, 2] = math.pi / 2
        inputs[:, N_INPUT_KINEMATICS] = 1.0
        noise = torch.randn((batch, *self.shape), generator=g)
        return (inputs, noise) if self.noise_input else (inputs,)


def export(model: TrainedModel, fmt: str, out: str | Path, noise_input: bool = False) -> Path:
    """Write ``model``'s one-step generator as ONNX or TorchScript to ``out`` (atomically)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    graph = OneStepGenerator(model, noise_input).eval()
    example = graph.example()
    names = ["input", "noise"][:len(example)]
    out = Path(out)
    with torch.no_grad(), atomic_path(out) as tmp:
        if fmt == "onnx":
            batch = torch.export.Dim("batch")
            torch.onnx.export(graph, example, str(tmp), input_names=names, output_names=["energies"],
                              dynamic_shapes=tuple({0: batch} for _ in example), dynamo=True, verbose=False)
        else:
            torch.jit.save(torch.jit.trace(graph, example, check_trace=False), str(tmp))
    return out
