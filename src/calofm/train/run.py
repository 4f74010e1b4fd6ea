"""Assemble a run from its config (data -> transforms -> backbone + process), and load trained models.

A run folder's ``model.safetensors`` carries, in its JSON description, everything needed to
rebuild the generator without the config or the training data: backbone and process with their
arguments, the voxel and condition transforms, and each detector's mesh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calofm.adapt import REINIT_LR_MULT, Adaptation, apply
from calofm.core.errors import CalofmError, InputError
from calofm.data import ShowerWriter
from calofm.data.files import GENERATED_BY
from calofm.data.mesh import (
    DetectorShowers,
    fit_representation,
    read_detector,
    split_detector,
    tensors,
)
from calofm.data.preprocess import N_KINEMATIC, ConditionTransform, representation_from_dict
from calofm.data.showers import Showers
from calofm.generative import EDM, PROCESSES, ConsistencyDistillation, FlowMatching, flow_matching
from calofm.geometry import read_out, readout_from_dict
from calofm.models import BACKBONES
from calofm.train import checkpoint
from calofm.train.config import DataConfig, RunConfig, from_dict
from calofm.train.loop import MODEL

MODEL_FORMAT = "calofm-model/1"


@dataclass
class Assembled:
    """Everything the training loop needs, plus the validation showers of each detector."""

    process: torch.nn.Module
    x: torch.Tensor
    cond: torch.Tensor
    describe: dict
    validation: list[DetectorShowers]
    notes: list[str]
    lr_scale: dict[str, float] = dataclasses.field(default_factory=dict)  # Trainer's lr_scale
    fold: Callable[[torch.nn.Module], torch.nn.Module] | None = None     # Trainer's fold
    adaptation: Adaptation | None = None


def assemble(config: RunConfig) -> Assembled:
    """Read the data and build the process a config describes (fits the preprocessing for EDM;
    a CD run inherits the teacher's model, preprocessing and data; an adaptation the base's)."""
    if config.adapt.base:
        return _assemble_adaptation(config)
    if config.process.name == "cd":
        teacher = _load_edm(config.process.teacher, "consistency distillation needs an EDM teacher")
        data = config.data if config.data.detectors else from_dict(DataConfig, teacher.describe["data"])
        detectors, train, val = _read_split(data, teacher.representation_kind)
        voxels, conditions = teacher.voxels, teacher.conditions
        process = ConsistencyDistillation(teacher.process, **config.process.args)
        if config.process.student:
            _init_student(process, teacher, config.process.student)
        net_describe = teacher.describe["backbone_args"]
        backbone = teacher.describe["backbone"]
    else:
        data, backbone = config.data, config.model.backbone
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone: unknown {backbone!r}; known: {', '.join(BACKBONES)}")
        family = BACKBONES[backbone]
        if getattr(family, "FACTORISED", False) and config.process.name != "cfm":
            raise ValueError(f"process.name: the {backbone} backbone is trained with flow matching (cfm)")
        detectors, train, val = _read_split(data, family.REPRESENTATION)
        voxels = fit_representation(family.REPRESENTATION, train)
        conditions = ConditionTransform(e_max=float(max(d.showers.energy.max() for d in train)),
                                        detectors=[d.name for d in train],
                                        n_slots=len(train) + data.free_slots)
        net_describe = {**family.geometry_args(train[0].readout, config.model.args), "n_cond": conditions.n_cond}
        torch.manual_seed(config.train.seed)  # the initial weights belong to the run's seed
        net = family(**net_describe)
        make = flow_matching if config.process.name == "cfm" else EDM
        process = make(net, **config.process.args)
    x, cond = tensors(train, voxels, conditions)
    sampler = process.sampler()
    describe = {"format": MODEL_FORMAT, "backbone": backbone, "backbone_args": net_describe,
                "process": sampler.name, "process_args": sampler.hparams,
                "voxels": voxels.to_dict(), "conditions": conditions.to_dict(),
                "readouts": {**(teacher.describe["readouts"] if config.process.name == "cd" else {}),
                             **{d.name: d.readout.to_dict() for d in detectors}},
                "data": dataclasses.asdict(data), "n_train": {d.name: len(d.showers) for d in train}}
    notes = [n for d in detectors for n in d.notes]
    return Assembled(process, x, cond, describe, val, notes)


def _assemble_adaptation(config: RunConfig) -> Assembled:
    """The base run's model, its new-detector slot given to the target, prepared by the strategy."""
    base = load_model(config.adapt.base)
    if not isinstance(base.process, (EDM, FlowMatching)):
        raise InputError(config.adapt.base, f"is a {base.describe['process']} run; adapt an EDM or flow-matching "
                                            "run (then re-distil a CD student)")
    detectors, train, val = _read_split(config.data, base.representation_kind)
    target = train[0]
    conditions = base.conditions.with_detector(target.name)
    process, voxels = base.process.train(), base.voxels
    describe = {**{k: v for k, v in base.describe.items() if k != "step"},
                "readouts": {**base.describe["readouts"], target.name: target.readout.to_dict()}}
    reinitialised: list[str] = []
    if read_out(target.readout.layer_shapes()) != base.layers:
        process, voxels, describe["backbone_args"], reinitialised = _new_geometry(base, target, config.adapt.model)
        describe["readouts"] = {target.name: target.readout.to_dict()}  # the net now has the target's geometry
    elif config.adapt.model:
        raise ValueError(f"adapt.model: {target.name} has the base model's geometry; there is no patch to change")
    x, cond = tensors(train, voxels, conditions)
    torch.manual_seed(config.train.seed)  # scratch: fresh weights belong to the run's seed
    adaptation = apply(config.adapt.strategy, process.net, N_KINEMATIC + conditions.slot(target.name),
                       **config.adapt.args)
    if reinitialised:  # parts of a new geometry train under every strategy, with the larger learning rate
        adaptation.train_too(process.net, reinitialised, float(adaptation.args.get("lr_mult", REINIT_LR_MULT)))
    names = {id(p): n for n, p in process.named_parameters()}
    lr_scale = {names[id(p)]: adaptation.lr_scale[n] for n, p in process.net.named_parameters()
                if n in adaptation.lr_scale}
    describe.update({"conditions": conditions.to_dict(), "voxels": voxels.to_dict(),
                     "data": dataclasses.asdict(config.data), "n_train": {target.name: len(target.showers)},
                     "adapted": {"from": str(base.path), **adaptation.describe(),
                                 **({"new_geometry": reinitialised} if reinitialised else {})}})
    return Assembled(process, x, cond, describe, val, [n for d in detectors for n in d.notes],
                     lr_scale, Adaptation.fold, adaptation)


def _new_geometry(base: TrainedModel, target: DetectorShowers, model_args: dict):
    """The base model rebuilt for the target's readout (seed 004 section 6): (process, representation,
    backbone arguments, names of the re-initialised or interpolated parameters)."""
    net, backbone = base.process.net, base.describe["backbone"]
    shape = base.voxels.state_shape(target.readout)
    if not hasattr(net, "load_transferable"):
        raise ValueError(f"{target.name}: readout {target.readout.describe()} gives model shape {shape}, the base "
                         f"model's is {base.shape}; the {backbone} backbone cannot change geometry")
    if set(model_args) - {"patch"}:
        raise ValueError(f"adapt.model: only the patch can change with the geometry, got {sorted(model_args)}")
    args = {k: v for k, v in base.describe["backbone_args"].items() if k not in ("grids", "n_cond")}
    patches = {tuple(patch) for _, patch in base.describe["backbone_args"]["grids"]}
    if "patch" not in model_args:
        if len(patches) != 1:
            raise ValueError(f"{target.name}: a new geometry; name its patches with adapt.model.patch (--patch)")
        args["patch"] = list(patches.pop())
    args.update(model_args)
    family = BACKBONES[backbone]
    new_args = {**family.geometry_args(target.readout, args), "n_cond": base.conditions.n_cond}
    torch.manual_seed(0)  # the re-initialised parts' start does not depend on the adaptation's seed
    new_net = family(**new_args)
    fresh = new_net.load_transferable(net)
    process = type(base.process)(new_net, **base.process.hparams).train()
    return process, base.voxels.for_readout(target.readout), new_args, fresh


def _load_edm(path: str, why: str) -> TrainedModel:
    model = load_model(path)
    if not isinstance(model.process, EDM):
        raise InputError(path, f"is a {model.describe['process']} run, not an EDM run; {why}")
    return model


def _init_student(process: ConsistencyDistillation, teacher: TrainedModel, path: str) -> None:
    """Student and target start from a pre-trained CD run (CaloDiT-2's re-distillation)."""
    student = load_model(path)
    if student.describe["process"] != "consistency":
        raise InputError(path, f"is a {student.describe['process']} run, not a consistency-distilled one")
    if (student.describe["backbone"], student.describe["backbone_args"]) != (
            teacher.describe["backbone"], teacher.describe["backbone_args"]):
        raise InputError(path, "its backbone differs from the teacher's; the student cannot start from it")
    for model in (process.student, process.target):
        model.net.load_state_dict(student.process.net.state_dict())


def _read_split(data: DataConfig, representation: str) -> tuple[list[DetectorShowers], ...]:
    """Every detector's showers, and their (train, validation) parts; a ``mesh`` representation
    needs regular meshes."""
    detectors = [read_detector(name, files, regular=representation == "mesh") for name, files in data.detectors.items()]
    parts = [split_detector(d, data.val_fraction, data.n_train, data.split_seed) for d in detectors]
    return detectors, [p[0] for p in parts], [p[1] for p in parts]


class TrainedModel:
    """A generator: its process (sampler) and the transforms and meshes of its description."""

    def __init__(self, describe: dict, process: torch.nn.Module, path: Path | None = None):
        self.describe, self.process, self.path = describe, process.eval(), path
        self.device = next(process.parameters()).device
        self.voxels = representation_from_dict(describe["voxels"])  # the data representation
        self.conditions = ConditionTransform.from_dict(describe["conditions"])
        readout = readout_from_dict(next(iter(describe["readouts"].values())))  # all share one geometry
        self.shape = tuple(self.voxels.state_shape(readout))
        self.layers = read_out(readout.layer_shapes())  # the read-out layers' transverse shapes

    @property
    def representation_kind(self) -> str:
        return self.voxels.kind

    @property
    def default_steps(self) -> int:
        return self.process.hparams["steps"]

    def readout(self, detector: str):
        """The mesh generated showers of ``detector`` are written on."""
        self.conditions.slot(detector)  # a one-line error listing the known detectors
        readouts = self.describe["readouts"]
        if detector not in readouts:  # a model adapted to a new geometry generates in that one only
            raise CalofmError(f"no readout stored for {detector!r} (the model was adapted to another geometry); "
                              f"it generates {', '.join(readouts)} only")
        return readout_from_dict(readouts[detector])

    @torch.no_grad()
    def generate(self, energy: np.ndarray, theta: np.ndarray, phi: np.ndarray, detector: str,
                 steps: int | None = None, batch_size: int = 1000, seed: int = 0, progress: bool = False):
        """Yield CaloChallenge-order voxel rows (MeV) batch by batch for the given conditions."""
        slot = self.conditions.slot(detector)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        starts = range(0, len(energy), batch_size)
        if progress:
            from rich.progress import track
            starts = track(starts, description=f"generating {len(energy)} showers")
        for start in starts:
            part = slice(start, start + batch_size)
            cond = self.conditions.forward(energy[part], theta[part], phi[part], slot).to(self.device)
            noise = torch.randn((len(cond), *self.shape), generator=generator, device=self.device)
            x = self.process.sample(noise, cond, steps=steps)
            yield self.voxels.decode(x, energy[part])


    def write(self, path: str | Path, energy: np.ndarray, theta: np.ndarray, phi: np.ndarray, detector: str,
              steps: int | None = None, batch_size: int = 1000, seed: int = 0, progress: bool = False) -> None:
        """Generate showers for these conditions into a CaloChallenge file (with angles and mesh)."""
        metadata = {"generator": f"{GENERATED_BY} ({self.describe['backbone']} + {self.describe['process']})",
                    "model": str(self.path), "model_step": self.describe.get("step", 0), "detector": detector,
                    "steps": steps or self.default_steps, "seed": seed,
                    **({"solver": self.process.solver} if hasattr(self.process, "solver") else {})}
        with ShowerWriter(path, "calochallenge", self.readout(detector), metadata) as w:
            start = 0
            for rows in self.generate(energy, theta, phi, detector, steps, batch_size, seed, progress):
                part = slice(start, start + len(rows))
                w.append(Showers(energy=energy[part], showers=rows, theta=theta[part], phi=phi[part]))
                start += len(rows)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The generator saved in a run folder (or its model.safetensors)."""
    path = Path(path)
    file = path / MODEL if path.is_dir() else path
    if not file.exists():
        raise InputError(path, f"no trained model here (expected {MODEL}; has the run saved a checkpoint yet?)")
    weights, describe = checkpoint.load(file)
    if describe.get("format") != MODEL_FORMAT:
        raise InputError(file, f"model format {describe.get('format')!r}, expected {MODEL_FORMAT!r}")
    net = BACKBONES[describe["backbone"]](**describe["backbone_args"])
    process = PROCESSES[describe["process"]](net, **describe["process_args"])
    try:
        process.load_state_dict(weights)
    except RuntimeError as exc:
        raise InputError(file, f"weights do not match the described model ({str(exc).splitlines()[0]})") from None
    return TrainedModel(describe, process.to(device), file)
