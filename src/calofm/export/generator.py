"""Export a one-step model for Geant4: ONNX or TorchScript, the whole sampler inside.

Exportable are one-step students: consistency-distilled EDM runs (CaloDiT-2) and flow-distilled
flow-matching runs (CaloDREAM++; ``calofm train`` with process ``fd``, such as fm-1-fast), whose
sampler is one Euler step. A multi-step flow is not: unrolled into a graph, fm-1's 8 RK4 steps took
over 6 minutes to export on a CPU and would run 64 network calls per shower in Geant4.

The graph's contract is the one of Geant4's Par04 example for CaloDiT-2:

    input     "input", float32 (B, 3 + S): [E in GeV, phi in rad, theta in rad, one-hot of the
              model's S detector slots] (S = 5 for CaloDiT-2's 4 pre-training detectors + 1 free)
    output    "energies", float32 (B, R * A * Z): energy per voxel of the universal mesh in MeV
              (Geant4's internal energy unit: a value v is v * CLHEP::MeV), in the Par04 order
              r outer, phi, z inner (6480 = 9 x 16 x 45 for the default mesh)

Inside: the condition vector (E / E_max, sin phi, cos phi, theta / pi, one-hot), Gaussian noise
(RandomNormal in ONNX), the sampler (a consistency step f(sigma_max * z, sigma_max), or one Euler
step of each flow), and the inverse preprocessing (voxels:
exp, cap at the largest training voxel; layer ratios: layer energies from the ratios times each
layer's voxel fractions; then the 15.15 keV threshold). The batch axis is dynamic. With
``noise_input`` the noise is a second input "noise" of the model's state shape ((B, R, A, Z) for
voxels, (B, L + V) for layer ratios) instead, so an exported graph can be compared with PyTorch on
the same noise (the parity check).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from calofm.core.errors import InputError
from calofm.core.files import atomic_path
from calofm.data.preprocess import LayerRatioTransform, VoxelTransform
from calofm.generative import Consistency, FlowMatching
from calofm.geometry import CylindricalBinning, readout_from_dict
from calofm.inference import TrainedModel

FORMATS = ("onnx", "torchscript")
N_INPUT_KINEMATICS = 3  # E (GeV), phi, theta


class ExportGraph(nn.Module):
    """``inputs (B, 3 + S) [, noise] -> energies (B, R * A * Z)`` (see module docstring)."""

    def __init__(self, model: TrainedModel, noise_input: bool = False):
        super().__init__()
        problem = export_problem(model)
        if problem:
            raise InputError(model.path, problem)
        self.process = model.process.eval()
        self.conditions, self.voxels = model.conditions, model.voxels
        self.shape, self.noise_input = tuple(model.shape), noise_input
        self.n_inputs = N_INPUT_KINEMATICS + self.conditions.n_slots
        self.mesh = _regular_mesh(model) if self.voxels.kind == LayerRatioTransform.kind else None

    def forward(self, inputs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        energy = inputs[:, 0:1] * 1000.0  # GeV -> MeV
        cond = self.conditions.vector(energy, inputs[:, 2:3], inputs[:, 1:2], inputs[:, N_INPUT_KINEMATICS:])
        if noise is None:
            noise = torch.randn((inputs.shape[0], *self.shape), dtype=inputs.dtype, device=inputs.device)
        y = self.process.one_step(noise, cond)
        if self.mesh is None:
            return self.voxels.inverse(y).flatten(1)
        n_z, n_a, n_r = self.mesh  # CaloChallenge order (z, phi, r inner) -> Par04's (r, phi, z inner)
        rows = self.voxels.energies(y, energy[:, 0])
        return rows.reshape(-1, n_z, n_a, n_r).permute(0, 3, 2, 1).flatten(1)

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


def export_problem(model: TrainedModel) -> str | None:
    """Why ``model`` cannot go into a graph, or None: the graph holds one step (a consistency model's,
    or one Euler step of a distilled flow), decodes voxels or layer ratios, and writes Par04's (r,
    phi, z) order, which needs one regular cylindrical mesh."""
    process, name = model.process, model.describe["process"]
    if not (isinstance(process, Consistency) or (
            isinstance(process, FlowMatching) and (process.solver, process.steps) == ("euler", 1))):
        how = f" of {process.solver}" if isinstance(process, FlowMatching) else ""
        return (f"its {name} model samples in {model.default_steps} steps{how}; export its one-step student "
                "(shipped: fm-1-fast for fm-1; calofm train with process cd or fd, or calofm adapt --distil)")
    if model.representation_kind not in (VoxelTransform.kind, LayerRatioTransform.kind):
        return (f"it holds a {model.describe['backbone']} model on the '{model.representation_kind}' representation; "
                "the export graph decodes voxel (CaloDiT-2) and layer-ratio (CaloDREAM++) models only")
    if model.representation_kind == LayerRatioTransform.kind and _regular_mesh(model) is None:
        return "its detectors are not all read out on one regular cylindrical mesh; Par04's (r, phi, z) order needs one"
    return None


def _regular_mesh(model: TrainedModel) -> tuple[int, int, int] | None:
    """(Z, A, R) of the one regular cylindrical mesh every detector of a layer-ratio model is read out
    on, or None."""
    readouts = [readout_from_dict(d) for d in model.describe["readouts"].values()]
    shapes = {tuple(r.shape) if isinstance(r, CylindricalBinning) and r.is_regular else None for r in readouts}
    shape = shapes.pop() if len(shapes) == 1 else None
    return shape if shape and math.prod(shape) == sum(model.voxels.layer_sizes) else None


def export(model: TrainedModel, fmt: str, out: str | Path, noise_input: bool = False) -> Path:
    """Write ``model``'s generator as ONNX or TorchScript to ``out`` (atomically)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    graph = ExportGraph(model, noise_input).eval()
    example = graph.example()
    names = ["input", "noise"][:len(example)]
    out = Path(out)
    with torch.no_grad(), atomic_path(out) as tmp:
        if fmt == "onnx":
            batch = torch.export.Dim("batch")
            torch.onnx.export(graph, example, str(tmp), input_names=names, output_names=["energies"],
                              dynamic_shapes=tuple({0: batch} for _ in example), dynamo=True, verbose=False,
                              external_data=False)  # one self-contained file, whatever its temporary name
        else:
            torch.jit.save(torch.jit.trace(graph, example, check_trace=False), str(tmp))
    return out
