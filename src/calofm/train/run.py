"""Assemble a run from its config (data -> transforms -> backbone + process), and load trained models.

A run folder's ``model.safetensors`` carries, in its JSON description, everything needed to
rebuild the generator without the config or the training data: backbone and process with their
arguments, the voxel and condition transforms, and each detector's mesh.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calofm.core.errors import InputError
from calofm.data.mesh import (
    DetectorShowers,
    from_model_layout,
    read_detector,
    split_detector,
    tensors,
)
from calofm.data.preprocess import ConditionTransform, VoxelTransform
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


def assemble(config: RunConfig) -> Assembled:
    """Read the data and build the process a config describes (fits the preprocessing for EDM;
    a CD run inherits the teacher's model, preprocessing and data)."""
    if config.process.name == "cd":
        teacher = load_model(config.process.teacher)
        data = config.data if config.data.detectors else from_dict(DataConfig, teacher.describe["data"])
        detectors, train, val = _read_split(data)
        voxels, conditions = teacher.voxels, teacher.conditions
        if not isinstance(teacher.process, EDM):
            raise InputError(config.process.teacher, "is not an EDM run; consistency distillation needs an EDM teacher")
        process = ConsistencyDistillation(teacher.process, **config.process.args)
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
