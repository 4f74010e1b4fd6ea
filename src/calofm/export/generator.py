"""Export a one-step model for Geant4: ONNX or TorchScript, the whole sampler inside.

Exportable are one-step students: consistency-distilled EDM runs (CaloDiT-2) and flow-distilled
flow-matching runs (CaloDREAM++; ``calofm train`` with process ``fd``, such as fm-1-fast), whose
sampler is one Euler step. A multi-step flow is not: unrolled into a graph, fm-1's 8 RK4 steps took
over 6 minutes to export on a CPU and would run 64 network calls per shower in Geant4.

Two contracts, both with the output in Par04's cell order, r outer, phi, z inner (6480 = 9 x 16 x 45
for the default mesh), and a dynamic batch axis:

``calofm`` (default): the noise is drawn inside the graph (RandomNormal), energies come out in MeV.

    input     "input", float32 (B, 3 + S): [E in GeV, phi in rad, theta in rad, one-hot of the
              model's S detector slots] (S = 5 for CaloDiT-2's 4 pre-training detectors + 1 free)
    output    "energies", float32 (B, R * A * Z): energy per voxel in MeV (Geant4's internal energy
              unit: a value v is v * CLHEP::MeV)

``par04``: what the Par04 example of Geant4 (examples/extended/parameterisations/Par04,
Par04InferenceSetup::GetEnergies as of github.com/Geant4/geant4 commit 80e2389) feeds and expects:
the latent vector is the model's Gaussian noise, drawn by Geant4; energy and angle are normalised
by Par04's fixed maxima (fMaxEnergy = 1 024 000 MeV, fMaxAngle = 90 degrees); the output is in
fractions of the incident energy, which Par04 multiplies by it. Par04 gives no azimuth: the graph conditions on phi = 0.

    input     "input", float32 (B, N + 2 + S): [N standard-normal latent values (N = the model's
              state size: /Par04/inference/setSizeLatentVector N), E / 1 024 000 MeV, theta in
              degrees / 90, one-hot of the S slots] (/Par04/inference/setSizeConditionVector 2 + S)
    output    "energies", float32 (B, R * A * Z): energy per voxel / incident energy

Inside both: the condition vector (E / E_max, sin phi, cos phi, theta / pi, one-hot), the sampler (a
consistency step f(sigma_max * z, sigma_max), or one Euler step of each flow), and the inverse
preprocessing (voxels: exp, cap at the largest training voxel; layer ratios: layer energies from the
ratios times each layer's voxel fractions; then the 15.15 keV threshold). With ``noise_input`` the
calofm graph takes the noise as a second input "noise" of the model's state shape ((B, R, A, Z) for
voxels, (B, L + V) for layer ratios), so it can be compared with PyTorch and with the par04 graph on
the same noise (the parity checks). Each file records its contract in its metadata (ONNX
metadata_props, TorchScript extra file ``contract.json``), with the one-hot slots and each slot's
mesh (``meshes``), so that ``calofm simulate --fast-sim FILE`` places its cells as Par04 would.
"""

from __future__ import annotations

import json
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
CONTRACTS = ("calofm", "par04")
N_INPUT_KINEMATICS = 3  # calofm contract: E (GeV), phi, theta
PAR04_MAX_ENERGY_MEV, PAR04_MAX_ANGLE_DEG = 1_024_000.0, 90.0  # Par04InferenceSetup's fMaxEnergy, fMaxAngle
PAR04_VERSION = ("Geant4 examples/extended/parameterisations/Par04 (github.com/Geant4/geant4 commit 80e2389): "
                 "Par04InferenceSetup::GetEnergies "
                 "(latent + [E / fMaxEnergy, angle in deg / fMaxAngle, one-hot], output x incident energy) "
                 "and GetPositions (r outer, phi, z inner)")


class ExportGraph(nn.Module):
    """``inputs [, noise] -> energies (B, R * A * Z)`` in the calofm or the par04 contract (see the
    module docstring)."""

    def __init__(self, model: TrainedModel, noise_input: bool = False, contract: str = "calofm"):
        super().__init__()
        problem = export_problem(model)
        if problem:
            raise InputError(model.path, problem)
        if contract not in CONTRACTS:
            raise ValueError(f"unknown contract {contract!r}; known: {', '.join(CONTRACTS)}")
        if contract == "par04" and noise_input:
            raise ValueError("the par04 contract takes the noise in its input already (the latent vector)")
        self.process = model.process.eval()
        self.conditions, self.voxels = model.conditions, model.voxels
        self.shape, self.noise_input, self.contract = tuple(model.shape), noise_input, contract
        self.n_latent = math.prod(self.shape) if contract == "par04" else 0
        self.n_inputs = self.n_latent + (2 if contract == "par04" else N_INPUT_KINEMATICS) + self.conditions.n_slots
        self.mesh = _regular_mesh(model) if self.voxels.kind == LayerRatioTransform.kind else None
        self.meshes = model.describe.get("meshes", model.describe["readouts"])  # per class, for placing cells

    def forward(self, inputs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if self.contract == "par04":
            latent, kinematics = inputs[:, :self.n_latent], inputs[:, self.n_latent:]
            energy = kinematics[:, 0:1] * PAR04_MAX_ENERGY_MEV
            theta = kinematics[:, 1:2] * (PAR04_MAX_ANGLE_DEG * math.pi / 180)
            shower = self.shower(energy, theta, torch.zeros_like(theta), kinematics[:, 2:],
                                 latent.reshape(-1, *self.shape))
            return shower / energy
        energy = inputs[:, 0:1] * 1000.0  # GeV -> MeV
        return self.shower(energy, inputs[:, 2:3], inputs[:, 1:2], inputs[:, N_INPUT_KINEMATICS:], noise)

    def shower(self, energy: torch.Tensor, theta: torch.Tensor, phi: torch.Tensor, onehot: torch.Tensor,
               noise: torch.Tensor | None) -> torch.Tensor:
        """Energies in MeV, Par04 order, from (B, 1) energy (MeV), theta and phi (rad) and the one-hot."""
        cond = self.conditions.vector(energy, theta, phi, onehot)
        if noise is None:
            noise = torch.randn((energy.shape[0], *self.shape), dtype=energy.dtype, device=energy.device)
        y = self.process.one_step(noise, cond)
        if self.mesh is None:
            return self.voxels.inverse(y).flatten(1)
        n_z, n_a, n_r = self.mesh  # CaloChallenge order (z, phi, r inner) -> Par04's (r, phi, z inner)
        rows = self.voxels.energies(y, energy[:, 0])
        return rows.reshape(-1, n_z, n_a, n_r).permute(0, 3, 2, 1).flatten(1)

    def example(self, batch: int = 2) -> tuple[torch.Tensor, ...]:
        """Example inputs for tracing: valid energies, angles and one-hot vectors."""
        g = torch.Generator().manual_seed(0)
        energy_gev = 1 + 99 * torch.rand(batch, generator=g)
        noise = torch.randn((batch, *self.shape), generator=g)
        inputs = torch.zeros(batch, self.n_inputs)
        if self.contract == "par04":
            inputs[:, :self.n_latent] = noise.flatten(1)
            inputs[:, self.n_latent] = energy_gev * 1000.0 / PAR04_MAX_ENERGY_MEV
            inputs[:, self.n_latent + 1] = 1.0  # 90 degrees: normal incidence
            inputs[:, self.n_latent + 2] = 1.0
            return (inputs,)
        inputs[:, 0] = energy_gev
        inputs[:, 1] = (2 * torch.rand(batch, generator=g) - 1) * math.pi
        inputs[:, 2] = math.pi / 2
        inputs[:, N_INPUT_KINEMATICS] = 1.0
        return (inputs, noise) if self.noise_input else (inputs,)

    def metadata(self) -> dict[str, str]:
        """What a loader must know to feed the graph: its contract, sizes, normalisations and slots."""
        slots = self.conditions.detectors + ["free"] * (self.conditions.n_slots - len(self.conditions.detectors))
        meta = {"contract": self.contract, "one_hot_slots": json.dumps(slots), "meshes": json.dumps(self.meshes),
                "output": "energies (B, R * A * Z) in the order r outer, phi, z inner"}
        if self.contract == "par04":
            meta.update(par04=PAR04_VERSION, size_latent_vector=str(self.n_latent),
                        size_condition_vector=str(2 + self.conditions.n_slots),
                        max_energy_MeV=str(PAR04_MAX_ENERGY_MEV), max_angle_deg=str(PAR04_MAX_ANGLE_DEG),
                        input="[latent N(0, 1) x N, E / max_energy_MeV, theta in deg / max_angle_deg, one-hot]",
                        unit="fraction of the incident energy")
        else:
            meta.update(input="[E in GeV, phi in rad, theta in rad, one-hot]", unit="MeV")
        return meta


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


def export(model: TrainedModel, fmt: str, out: str | Path, noise_input: bool = False,
           contract: str = "calofm") -> Path:
    """Write ``model``'s generator as ONNX or TorchScript to ``out`` (atomically), in ``contract``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    graph = ExportGraph(model, noise_input, contract).eval()
    example = graph.example()
    names = ["input", "noise"][:len(example)]
    out = Path(out)
    with torch.no_grad(), atomic_path(out) as tmp:
        if fmt == "onnx":
            batch = torch.export.Dim("batch")
            program = torch.onnx.export(graph, example, None, input_names=names, output_names=["energies"],
                                        dynamic_shapes=tuple({0: batch} for _ in example), dynamo=True,
                                        verbose=False)
            program.model.metadata_props.update(graph.metadata())
            program.save(str(tmp), external_data=False)  # one self-contained file, whatever its temporary name
        else:
            torch.jit.save(torch.jit.trace(graph, example, check_trace=False), str(tmp),
                           _extra_files={"contract.json": json.dumps(graph.metadata())})
    return out
