"""A saved model read back: description, process and transforms, from a run folder or by name.

Adaptation, consistency distillation and the point-cloud family's counts start from a run that
training saved; they need its weights and preprocessing, not generation. Generating from a saved
model is the inference stage's (:mod:`calofm.inference`), which builds on :class:`SavedModel`.

Models that ship inside the package live in ``calofm/shipped/NAME/`` as a run folder holds them
(``model.safetensors`` with its description, and any files beside it). Wherever calofm reads a
model, a shipped model's name serves too (``calofm adapt --from fm-1``); a path that exists wins.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import torch

from calofm.adapt import restore
from calofm.core.errors import InputError
from calofm.data.preprocess import ConditionTransform
from calofm.data.representations import representation_from_dict
from calofm.generative import PROCESSES
from calofm.geometry import read_out, readout_from_dict
from calofm.models import BACKBONES
from calofm.train import checkpoint
from calofm.train.loop import MODEL

MODEL_FORMAT = "calofm-model/1"
SHIPPED = Path(str(files("calofm") / "shipped"))  # one run folder per shipped model


class SavedModel:
    """A process (in eval mode) with the representation, conditions and geometry of its description."""

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


def shipped_names() -> list[str]:
    """The names of the models that ship with this installation."""
    return sorted(p.name for p in SHIPPED.iterdir() if (p / MODEL).exists()) if SHIPPED.is_dir() else []


def resolve(model: str | Path) -> Path:
    """The run folder or model file ``model`` names: itself if it exists, else the shipped model of
    that name (a bare name, no path); a one-line error naming both possibilities otherwise."""
    path = Path(model)
    if path.exists():
        return path
    if path.name != str(model):
        raise InputError(path, "no such run folder or model file")
    if (SHIPPED / path.name / MODEL).exists():
        return SHIPPED / path.name
    names = shipped_names()
    raise InputError(path, "no such run folder or model file, and no shipped model of that name (shipped: "
                           + (", ".join(names) if names else "none in this installation") + ")")


def read_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict, torch.nn.Module, Path]:
    """(description, process with its weights on ``device``, file) of the model saved in a run
    folder (or its model.safetensors), or shipped under the name ``path``."""
    path = resolve(path)
    file = path / MODEL if path.is_dir() else path
    if not file.exists():
        raise InputError(path, f"no trained model here (expected {MODEL}; has the run saved a checkpoint yet?)")
    weights, describe = checkpoint.load(file)
    if describe.get("format") != MODEL_FORMAT:
        raise InputError(file, f"model format {describe.get('format')!r}, expected {MODEL_FORMAT!r}")
    net = restore(BACKBONES[describe["backbone"]](**describe["backbone_args"]), describe.get("adapters", []))
    process = PROCESSES[describe["process"]](net, **describe["process_args"])
    try:
        process.load_state_dict(weights)
    except RuntimeError as exc:
        raise InputError(file, f"weights do not match the described model ({str(exc).splitlines()[0]})") from None
    return describe, process.to(device), file


def load_saved(path: str | Path, device: str | torch.device = "cpu") -> SavedModel:
    """The model saved in a run folder (or its model.safetensors) or shipped under that name, for
    training to start from."""
    return SavedModel(*read_model(path, device))
