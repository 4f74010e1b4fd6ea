"""Assemble a run from its config: data -> transforms -> backbone + process.

A run folder's ``model.safetensors`` carries, in its JSON description, everything needed to
rebuild the generator without the config or the training data: backbone and process with their
arguments, the voxel and condition transforms, and each detector's mesh. A point-cloud run also
keeps its ShowerFlow model (``counts.safetensors``) beside it. Generating from a saved run is
:mod:`calofm.inference`'s.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from calofm.adapt import REINIT_LR_MULT, Adaptation, apply
from calofm.core.errors import InputError, checked_call
from calofm.data.datasets import DetectorShowers, read_detector, split_detector, tensors
from calofm.data.points import LayerCountTransform, PointCloudTransform
from calofm.data.preprocess import N_KINEMATIC, ConditionTransform
from calofm.data.representations import POINT_KINDS, fit_representation
from calofm.generative import (
    EDM,
    AutoRegressive,
    ConsistencyDistillation,
    Distillation,
    FlowDistillation,
    FlowMatching,
    Likelihood,
    flow_matching,
)
from calofm.geometry import read_out
from calofm.models import BACKBONES
from calofm.simulate.detectors import preset_names
from calofm.train.config import DISTILLATIONS, DataConfig, RunConfig, from_dict
from calofm.train.saved import MODEL_FORMAT, SavedModel, load_saved

COUNTS = "counts.safetensors"      # a point-cloud run's copy of its ShowerFlow model
MAKERS = {"edm": EDM, "cfm": flow_matching, "likelihood": Likelihood,  # process.name -> process of a fresh net
          "autoregressive": AutoRegressive}
ADAPTABLE = (EDM, FlowMatching, Likelihood, AutoRegressive)
# process.name -> (the process the teacher must have, the distillation that wraps it)
DISTILLERS = {"cd": (EDM, ConsistencyDistillation), "fd": (FlowMatching, FlowDistillation)}


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
    files: dict[str, Path] = dataclasses.field(default_factory=dict)  # name in the run folder -> file to copy
    train: list[DetectorShowers] = dataclasses.field(default_factory=list)  # the training showers


def assemble(config: RunConfig) -> Assembled:
    """Read the data and build the process a config describes (fits the preprocessing for a fresh
    run; a distillation inherits the teacher's model, preprocessing and data; an adaptation the base's)."""
    if config.adapt.base:
        return _assemble_adaptation(config)
    distil = config.process.name in DISTILLATIONS
    if distil:
        teacher = _load_teacher(config.process.name, config.process.teacher)
        data = config.data if config.data.detectors else from_dict(DataConfig, teacher.describe["data"])
        detectors, train, val = _read_split(data, teacher.representation_kind)
        voxels, conditions = teacher.voxels, teacher.conditions
        x, cond = tensors(train, voxels, conditions)
        process = checked_call(functools.partial(DISTILLERS[config.process.name][1], teacher.process),
                               config.process.args, "process.args")
        if config.process.student:
            _init_student(process, teacher, config.process.student)
        net_describe = teacher.describe["backbone_args"]
        backbone = teacher.describe["backbone"]
    else:
        data, backbone = config.data, config.model.backbone
        if backbone not in BACKBONES:
            raise ValueError(f"model.backbone: unknown {backbone!r}; known: {', '.join(BACKBONES)}")
        family = BACKBONES[backbone]
        if getattr(family, "TRAINED_WITH", config.process.name) != config.process.name:
            raise ValueError(f"process.name: the {backbone} backbone is trained with {family.TRAINED_WITH}, "
                             f"not {config.process.name}")
        detectors, train, val = _read_split(data, family.REPRESENTATION)
        voxels = fit_representation(family.REPRESENTATION, train)
        conditions = ConditionTransform(e_max=float(max(d.showers.energy.max() for d in train)),
                                        detectors=[d.name for d in train],
                                        n_slots=len(train) + data.free_slots)
        args = {"n_experts": len(train), **config.model.args} if getattr(family, "ROUTED", False) else config.model.args
        if args.get("n_experts", len(train)) != len(train):
            raise ValueError(f"model.args.n_experts: the {backbone} backbone has one expert per detector "
                             f"({len(train)}), got {args['n_experts']}; add classes later with the expert strategy")
        net_describe = {**family.geometry_args(train[0].readout, args),
                        "n_cond": conditions.n_cond + voxels.extra_conditions}
        x, cond = tensors(train, voxels, conditions)
        torch.manual_seed(config.train.seed)  # the initial weights belong to the run's seed
        net = checked_call(family, net_describe, "model.args")
        process = checked_call(functools.partial(MAKERS[config.process.name], net),
                               _process_args(config.process.name, config.process.args, x), "process.args")
    sampler = process.sampler()
    teacher_describe = teacher.describe if distil else {}
    describe = {"format": MODEL_FORMAT, "backbone": backbone, "backbone_args": net_describe,
                "process": sampler.name, "process_args": sampler.hparams,
                "voxels": voxels.to_dict(), "conditions": conditions.to_dict(),
                "readouts": {**teacher_describe.get("readouts", {}),
                             **{d.name: d.readout.to_dict() for d in detectors}},
                "data": dataclasses.asdict(data), "n_train": {d.name: len(d.showers) for d in train},
                "particles": {**teacher_describe.get("particles", {}), **_particles(train)}}
    if voxels.kind in POINT_KINDS:  # generated points are written on the voxel files' meshes
        describe["meshes"] = {**teacher_describe.get("meshes", {}), **{d.name: d.mesh.to_dict() for d in detectors}}
    counts = config.model.counts or (teacher.path.parent / COUNTS if distil else None)
    files = _counts_file(counts, voxels, train, describe)
    notes = [n for d in detectors for n in d.notes]
    return Assembled(process, x, cond, describe, val, notes, files=files, train=train)


def _process_args(name: str, args: dict, x: torch.Tensor) -> dict:
    """The arguments of a fresh run's process: EDM's ``sigma_data``, unless the config gives it, is
    the standard deviation of the training rows (voxels or points), recorded in the model with the
    other arguments.
    CaloDiT-2's 0.5 suits its own scaling, not calofm's standardised voxels (unit standard
    deviation): with it the CPU demo's model deposited 4.4 times the incident energy."""
    if name == "edm" and "sigma_data" not in args:
        return {**args, "sigma_data": round(float(x.float().std()), 4)}
    return args


def _particles(detectors: list[DetectorShowers]) -> dict[str, str]:
    """The particle of each class whose files record one."""
    return {d.name: d.particle for d in detectors if d.particle}


def _assemble_adaptation(config: RunConfig) -> Assembled:
    """The base run's model, its new-detector slot given to the target, prepared by the strategy."""
    base = load_saved(config.adapt.base)
    if not isinstance(base.process, ADAPTABLE):
        raise InputError(config.adapt.base, f"is a {base.describe['process']} run; adapt an EDM, flow-matching, "
                                            "likelihood or autoregressive run (then re-distil a CD student)")
    detectors, train, val = _read_split(config.data, base.representation_kind)
    target = train[0]
    conditions = base.conditions.with_detector(target.name)
    process, voxels = base.process.train(), base.voxels
    describe = {**{k: v for k, v in base.describe.items() if k != "step"},
                "readouts": {**base.describe["readouts"], target.name: target.readout.to_dict()}}
    if "meshes" in describe:
        describe["meshes"] = {**describe["meshes"], target.name: target.mesh.to_dict()}
    reinitialised: list[str] = []
    new_geometry = read_out(target.readout.layer_shapes()) != base.layers
    if new_geometry:
        if not hasattr(BACKBONES[base.describe["backbone"]], "load_transferable"):
            raise ValueError(f"{target.name}: readout {target.readout.describe()} gives model shape "
                             f"{base.voxels.state_shape(target.readout)}, the base model's is {base.shape}; "
                             f"the {base.describe['backbone']} backbone cannot change geometry")
        voxels = voxels.for_readout(target.readout)
    elif config.adapt.model:
        raise ValueError(f"adapt.model: {target.name} has the base model's geometry; there is no patch to change")
    x, cond = tensors(train, voxels, conditions)
    if new_geometry:
        process, describe["backbone_args"], reinitialised = _new_geometry(base, target, config.adapt.model, x)
        describe["readouts"] = {target.name: target.readout.to_dict()}  # the net now has the target's geometry
        if "meshes" in describe:
            describe["meshes"] = {target.name: target.mesh.to_dict()}
    torch.manual_seed(config.train.seed)  # scratch: fresh weights belong to the run's seed
    adaptation = apply(config.adapt.strategy, process.net, N_KINEMATIC + conditions.slot(target.name),
                       {d: conditions.slot(d) for d in base.conditions.detectors}, **config.adapt.args)
    describe["backbone_args"] = {**describe["backbone_args"], **adaptation.backbone_args}
    if adaptation.adapter:
        describe["adapters"] = [*describe.get("adapters", []), adaptation.adapter]
    if reinitialised:  # parts of a new geometry train under every strategy, with the larger learning rate
        adaptation.train_too(process.net, reinitialised, float(adaptation.args.get("lr_mult", REINIT_LR_MULT)))
    names = {id(p): n for n, p in process.named_parameters()}
    lr_scale = {names[id(p)]: adaptation.lr_scale[n] for n, p in process.net.named_parameters()
                if n in adaptation.lr_scale}
    describe.update({"conditions": conditions.to_dict(), "voxels": voxels.to_dict(),
                     "data": dataclasses.asdict(config.data), "n_train": {target.name: len(target.showers)},
                     "particles": {**base.describe.get("particles", {}), **_particles([target])},
                     "adapted": {"from": str(base.path), **adaptation.describe(),
                                 **({"new_geometry": reinitialised} if new_geometry else {})}})
    files = _counts_file(config.model.counts or base.path.parent / COUNTS, voxels, train, describe)
    return Assembled(process, x, cond, describe, val, [n for d in detectors for n in d.notes],
                     lr_scale, Adaptation.fold, adaptation, files, train)


def _counts_file(path, voxels, detectors: list[DetectorShowers], describe: dict) -> dict[str, Path]:
    """The files a run of representation ``voxels`` keeps beside its model: for point clouds, the
    ShowerFlow run at ``path`` (``describe["counts"]`` gets its description), checked to give the
    points per layer of every one of ``detectors`` in the points' layers; nothing otherwise."""
    if voxels.kind != PointCloudTransform.kind:
        return {}
    if not path:
        raise ValueError("model.counts: the point-cloud family needs the ShowerFlow run that gives each "
                         "shower's points per layer (train one with model.backbone: showerflow)")
    model = load_saved(path)
    if model.representation_kind != LayerCountTransform.kind:
        raise InputError(path, f"is a {model.describe['backbone']} run, not a ShowerFlow run (model.counts)")
    if model.voxels.n_layers != voxels.n_layers:
        raise InputError(path, f"gives counts for {model.voxels.n_layers} layers; the points lie in {voxels.n_layers}")
    unknown = [d.name for d in detectors if d.name not in model.conditions.detectors]
    if unknown:
        raise InputError(path, f"knows no detector {unknown[0]!r}; train or adapt the ShowerFlow on it first "
                               "and name that run in model.counts")
    describe["counts"] = model.describe
    return {COUNTS: model.path}


def _new_geometry(base: SavedModel, target: DetectorShowers, model_args: dict, x: torch.Tensor):
    """The base model rebuilt for the target's readout (CaloDREAM++, section 6; the CaloClouds II transfer study's layer
    extension), given the target's training rows ``x``: (process, backbone arguments, names of the
    re-initialised or interpolated parameters)."""
    family = BACKBONES[base.describe["backbone"]]
    args = family.transfer_args(base.describe["backbone_args"], model_args)
    new_args = {**family.geometry_args(target.readout, args), "n_cond": base.describe["backbone_args"]["n_cond"]}
    torch.manual_seed(0)  # the re-initialised parts' start does not depend on the adaptation's seed
    new_net = family(**new_args)
    fresh = new_net.load_transferable(base.process.net, x)
    return type(base.process)(new_net, **base.process.hparams).train(), new_args, fresh


def _load_teacher(name: str, path: str) -> SavedModel:
    """The run a ``cd`` (EDM teacher) or ``fd`` (flow-matching teacher) process distils."""
    model = load_saved(path)
    kind = DISTILLERS[name][0]
    if not isinstance(model.process, kind):
        raise InputError(path, f"is a {model.describe['process']} run; {name} distils "
                               f"{'an EDM' if kind is EDM else 'a flow-matching'} run")
    return model


def _init_student(process: Distillation, teacher: SavedModel, path: str) -> None:
    """The students start from a pre-trained distilled run (CaloDiT-2's re-distillation after
    adapting the teacher)."""
    student = load_saved(path)
    if student.describe["process"] != process.sampler().name or student.process.hparams.get("steps") != 1:
        raise InputError(path, f"is a {student.describe['process']} run, not a one-step "
                               f"{process.sampler().name} student")
    if (student.describe["backbone"], student.describe["backbone_args"]) != (
            teacher.describe["backbone"], teacher.describe["backbone_args"]):
        raise InputError(path, "its backbone differs from the teacher's; the student cannot start from it")
    for model in process.students():
        model.net.load_state_dict(student.process.net.state_dict())


def _read_split(data: DataConfig, representation: str) -> tuple[list[DetectorShowers], ...]:
    """Every detector's showers, and their (train, validation) parts; a ``mesh`` representation
    needs regular meshes, point representations keep the stored points."""
    detectors = [read_detector(name, files, regular=representation == "mesh", points=representation in POINT_KINDS,
                               known=tuple(preset_names())) for name, files in data.detectors.items()]
    parts = [split_detector(d, data.val_fraction, data.n_train, data.split_seed) for d in detectors]
    return detectors, [p[0] for p in parts], [p[1] for p in parts]
