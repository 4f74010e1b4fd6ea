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

from calofm.adapt import Adaptation, apply
from calofm.core.errors import InputError
from calofm.data import ShowerWriter
from calofm.data.files import GENERATED_BY
from calofm.data.mesh import (
    DetectorShowers,
    from_model_layout,
    read_detector,
    split_detector,
    tensors,
)
from calofm.data.preprocess import N_KINEMATIC, ConditionTransform, VoxelTransform
from calofm.data.showers import Showers
from calofm.generative import EDM, PROCESSES, ConsistencyDistillation
from calofm.geometry import readout_from_dict
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
        detectors, train, val = _read_split(data)
        voxels, conditions = teacher.voxels, teacher.conditions
        process = ConsistencyDistillation(teacher.process, **config.process.args)
        if config.process.student:
            _init_student(process, teacher, config.process.student)
        net_describe = teacher.describe["backbone_args"]
        backbone = teacher.describe["backbone"]
    else:
        data = config.data
        detectors, train, val = _read_split(data)
        voxels = VoxelTransform.fit(d.showers.showers for d in train)
        conditions = ConditionTransform(e_max=float(max(d.showers.energy.max() for d in train)),
                                        detectors=[d.name for d in train],
                                        n_slots=len(train) + data.free_slots)
        backbone = config.model.backbone
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone: unknown {backbone!r}; known: {', '.join(BACKBONES)}")
        net_describe = {**config.model.args, "n_cond": conditions.n_cond, "shape": list(train[0].shape)}
        torch.manual_seed(config.train.seed)  # the initial weights belong to the run's seed
        net = BACKBONES[backbone](**net_describe)
        process = EDM(net, **config.process.args)
    x, cond = tensors(train, voxels, conditions)
    sampler = process.sampler()
    describe = {"format": MODEL_FORMAT, "backbone": backbone, "backbone_args": net_describe,
                "process": sampler.name, "process_args": sampler.hparams,
                "voxels": voxels.to_dict(), "conditions": conditions.to_dict(),
                "readouts": {d.name: d.readout.to_dict() for d in detectors},
                "data": dataclasses.asdict(data), "n_train": {d.name: len(d.showers) for d in train}}
    notes = [n for d in detectors for n in d.notes]
    return Assembled(process, x, cond, describe, val, notes)


def _assemble_adaptation(config: RunConfig) -> Assembled:
    """The base EDM run's model, its new-detector slot given to the target, prepared by the strategy."""
    base = _load_edm(config.adapt.base, "adapt an EDM run (then re-distil its CD student)")
    detectors, train, val = _read_split(config.data)
    target = train[0]
    if tuple(target.shape) != base.shape:
        raise ValueError(f"{target.name}: mesh {target.shape} differs from the base model's {base.shape}")
    conditions = base.conditions.with_detector(target.name)
    x, cond = tensors(train, base.voxels, conditions)
    process = base.process.train()
    torch.manual_seed(config.train.seed)  # scratch: fresh weights belong to the run's seed
    adaptation = apply(config.adapt.strategy, process.net, N_KINEMATIC + conditions.slot(target.name),
                       **config.adapt.args)
    names = {id(p): n for n, p in process.named_parameters()}
    lr_scale = {names[id(p)]: adaptation.lr_scale[n] for n, p in process.net.named_parameters()
                if n in adaptation.lr_scale}
    describe = {**{k: v for k, v in base.describe.items() if k != "step"},
                "conditions": conditions.to_dict(),
                "readouts": {**base.describe["readouts"], target.name: target.readout.to_dict()},
                "data": dataclasses.asdict(config.data), "n_train": {target.name: len(target.showers)},
                "adapted": {"from": str(base.path), **adaptation.describe()}}
    return Assembled(process, x, cond, describe, val, [n for d in detectors for n in d.notes],
                     lr_scale, Adaptation.fold, adaptation)


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


def _read_split(data: DataConfig) -> tuple[list[DetectorShowers], ...]:
    """Every detector's showers, and their (train, validation) parts."""
    detectors = [read_detector(name, files) for name, files in data.detectors.items()]
    parts = [split_detector(d, data.val_fraction, data.n_train, data.split_seed) for d in detectors]
    return detectors, [p[0] for p in parts], [p[1] for p in parts]


class TrainedModel:
    """A generator: its process (sampler) and the transforms and meshes of its description."""

    def __init__(self, describe: dict, process: torch.nn.Module, path: Path | None = None):
        self.describe, self.process, self.path = describe, process.eval(), path
        self.device = next(process.parameters()).device
        self.voxels = VoxelTransform.from_dict(describe["voxels"])
        self.conditions = ConditionTransform.from_dict(describe["conditions"])
        self.shape = tuple(describe["backbone_args"]["shape"])

    @property
    def default_steps(self) -> int:
        return self.process.hparams["steps"]

    def readout(self, detector: str):
        """The mesh generated showers of ``detector`` are written on."""
        self.conditions.slot(detector)  # a one-line error listing the known detectors
        return readout_from_dict(self.describe["readouts"][detector])

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
            yield from_model_layout(self.voxels.inverse(x.float()))


    def write(self, path: str | Path, energy: np.ndarray, theta: np.ndarray, phi: np.ndarray, detector: str,
              steps: int | None = None, batch_size: int = 1000, seed: int = 0, progress: bool = False) -> None:
        """Generate showers for these conditions into a CaloChallenge file (with angles and mesh)."""
        metadata = {"generator": f"{GENERATED_BY} ({self.describe['backbone']} + {self.describe['process']})",
                    "model": str(self.path), "model_step": self.describe.get("step", 0), "detector": detector,
                    "steps": steps or self.default_steps, "seed": seed}
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
