"""Assemble a run from its config (data -> transforms -> backbone + process), and load trained models.

A run folder's ``model.safetensors`` carries, in its JSON description, everything needed to
rebuild the generator without the config or the training data: backbone and process with their
arguments, the voxel and condition transforms, and each detector's mesh. A point-cloud run also
keeps its ShowerFlow model (``counts.safetensors``) and its occupancy calibration
(``calibration.json``, fitted after training) beside it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calofm.adapt import REINIT_LR_MULT, Adaptation, apply, restore
from calofm.core.errors import CalofmError, InputError
from calofm.data import ShowerWriter
from calofm.data.calibration import OccupancyCalibration
from calofm.data.files import GENERATED_BY
from calofm.data.mesh import (
    POINT_KINDS,
    DetectorShowers,
    fit_representation,
    read_detector,
    representation_from_dict,
    split_detector,
    tensors,
)
from calofm.data.points import LayerCountTransform, PointCloudTransform, count_condition
from calofm.data.preprocess import N_KINEMATIC, ConditionTransform
from calofm.data.showers import PointClouds, Showers
from calofm.data.tokens import Tokeniser
from calofm.generative import (
    EDM,
    PROCESSES,
    AutoRegressive,
    ConsistencyDistillation,
    FlowMatching,
    Likelihood,
    flow_matching,
)
from calofm.geometry import project, read_out, readout_from_dict
from calofm.models import BACKBONES
from calofm.train import checkpoint
from calofm.train.config import DataConfig, RunConfig, from_dict
from calofm.train.loop import MODEL

MODEL_FORMAT = "calofm-model/1"
COUNTS = "counts.safetensors"      # a point-cloud run's copy of its ShowerFlow model
CALIBRATION = "calibration.json"   # a point-cloud run's occupancy calibration, per detector
MAKERS = {"edm": EDM, "cfm": flow_matching, "likelihood": Likelihood,  # process.name -> process of a fresh net
          "autoregressive": AutoRegressive}
ADAPTABLE = (EDM, FlowMatching, Likelihood, AutoRegressive)


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
            raise ValueError(f"model.args.n_experts: the {backbone} backbone has one expert per detector ({len(train)}), "
                             f"got {args['n_experts']}; add classes later with the expert strategy")
        net_describe = {**family.geometry_args(train[0].readout, args),
                        "n_cond": conditions.n_cond + voxels.extra_conditions}
        torch.manual_seed(config.train.seed)  # the initial weights belong to the run's seed
        net = family(**net_describe)
        process = MAKERS[config.process.name](net, **config.process.args)
    x, cond = tensors(train, voxels, conditions)
    sampler = process.sampler()
    teacher_describe = teacher.describe if config.process.name == "cd" else {}
    describe = {"format": MODEL_FORMAT, "backbone": backbone, "backbone_args": net_describe,
                "process": sampler.name, "process_args": sampler.hparams,
                "voxels": voxels.to_dict(), "conditions": conditions.to_dict(),
                "readouts": {**teacher_describe.get("readouts", {}), **{d.name: d.readout.to_dict() for d in detectors}},
                "data": dataclasses.asdict(data), "n_train": {d.name: len(d.showers) for d in train},
                "particles": {**teacher_describe.get("particles", {}), **_particles(train)}}
    if voxels.kind in POINT_KINDS:  # generated points are written on the voxel files' meshes
        describe["meshes"] = {**teacher_describe.get("meshes", {}), **{d.name: d.mesh.to_dict() for d in detectors}}
    counts = config.model.counts or (teacher.path.parent / COUNTS if config.process.name == "cd" else None)
    files = _counts_file(counts, voxels, train, describe)
    notes = [n for d in detectors for n in d.notes]
    return Assembled(process, x, cond, describe, val, notes, files=files, train=train)


def _particles(detectors: list[DetectorShowers]) -> dict[str, str]:
    """The particle of each class whose files record one."""
    return {d.name: d.particle for d in detectors if d.particle}


def _assemble_adaptation(config: RunConfig) -> Assembled:
    """The base run's model, its new-detector slot given to the target, prepared by the strategy."""
    base = load_model(config.adapt.base)
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
    model = load_model(path)
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


def _new_geometry(base: TrainedModel, target: DetectorShowers, model_args: dict, x: torch.Tensor):
    """The base model rebuilt for the target's readout (seed 004 section 6; seed 000's layer
    extension), given the target's training rows ``x``: (process, backbone arguments, names of the
    re-initialised or interpolated parameters)."""
    family = BACKBONES[base.describe["backbone"]]
    args = family.transfer_args(base.describe["backbone_args"], model_args)
    new_args = {**family.geometry_args(target.readout, args), "n_cond": base.describe["backbone_args"]["n_cond"]}
    torch.manual_seed(0)  # the re-initialised parts' start does not depend on the adaptation's seed
    new_net = family(**new_args)
    fresh = new_net.load_transferable(base.process.net, x)
    return type(base.process)(new_net, **base.process.hparams).train(), new_args, fresh


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
    needs regular meshes, point representations keep the stored points."""
    detectors = [read_detector(name, files, regular=representation == "mesh", points=representation in POINT_KINDS)
                 for name, files in data.detectors.items()]
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
    def default_steps(self) -> int | None:
        return self.process.hparams.get("steps")

    def readout(self, detector: str):
        """The mesh generated showers of ``detector`` are written on."""
        self.conditions.slot(detector)  # a one-line error listing the known detectors
        readouts = self.describe.get("meshes", self.describe["readouts"])
        if detector not in readouts:  # a model adapted to a new geometry generates in that one only
            raise CalofmError(f"no readout stored for {detector!r} (the model was adapted to another geometry); "
                              f"it generates {', '.join(readouts)} only")
        return readout_from_dict(readouts[detector])

    @torch.no_grad()
    def generate(self, energy: np.ndarray, theta: np.ndarray, phi: np.ndarray, detector: str,
                 steps: int | None = None, batch_size: int = 1000, seed: int = 0, progress: bool = False):
        """Yield the model's output batch by batch for the given conditions: CaloChallenge-order
        voxel rows (MeV), or for a ShowerFlow run the points per layer."""
        self.conditions.slot(detector)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        starts = range(0, len(energy), batch_size)
        if progress:
            from rich.progress import track
            starts = track(starts, description=f"generating {len(energy)} showers")
        for start in starts:
            part = slice(start, start + batch_size)
            yield self._generate_batch(energy[part], theta[part], phi[part], detector, steps, generator)

    def _generate_batch(self, energy, theta, phi, detector: str, steps: int | None, generator) -> np.ndarray:
        cond = self.conditions.forward(energy, theta, phi, self.conditions.slot(detector)).to(self.device)
        noise = torch.randn((len(cond), *self.shape), generator=generator, device=self.device)
        return self._decode(self.process.sample(noise, cond, steps=steps), energy, detector)

    def _decode(self, x: torch.Tensor, energy: np.ndarray, detector: str) -> np.ndarray:
        """The model output of a batch as the generator's output (voxel rows, or points per layer)."""
        return self.voxels.decode(x, energy)

    def sampling(self) -> dict:
        """Sampling settings beyond steps and solver, for the metadata of generated files."""
        return {}

    def write(self, path: str | Path, energy: np.ndarray, theta: np.ndarray, phi: np.ndarray, detector: str,
              steps: int | None = None, batch_size: int = 1000, seed: int = 0, progress: bool = False) -> None:
        """Generate showers for these conditions into a CaloChallenge file (with angles and mesh)."""
        metadata = {"generator": f"{GENERATED_BY} ({self.describe['backbone']} + {self.describe['process']})",
                    "model": str(self.path), "model_step": self.describe.get("step", 0), "detector": detector,
                    "steps": steps or self.default_steps, "seed": seed,
                    **({"particle": self.describe["particles"][detector]}
                       if detector in self.describe.get("particles", {}) else {}),
                    **({"solver": self.process.solver} if hasattr(self.process, "solver") else {}),
                    **self.sampling()}
        with ShowerWriter(path, "calochallenge", self.readout(detector), metadata) as w:
            start = 0
            for rows in self.generate(energy, theta, phi, detector, steps, batch_size, seed, progress):
                part = slice(start, start + len(rows))
                w.append(Showers(energy=energy[part], showers=rows, theta=theta[part], phi=phi[part]))
                start += len(rows)


class CountModel(TrainedModel):
    """A ShowerFlow run: the points per layer of showers, which a PointWise run turns into points."""

    def write(self, path, *args, **kwargs) -> None:
        raise CalofmError(f"{self.path} is a ShowerFlow run: it gives points per layer, not showers; generate "
                          "with a PointWise run trained with it (model.counts)")


POINT_CHUNK = 4096  # points denoised at once: padded point sets of similar size (3x faster than 65536 on CPU)


class PointCloudModel(TrainedModel):
    """A point-cloud run (CaloClouds): its ShowerFlow gives the points per layer, calibrated for the
    occupancy of the readout; the PointWise process generates the points, which are placed in
    layers by depth and projected onto the detector's mesh. The calibration's extra points share
    the energy the uncalibrated count would carry (their energies scaled by N / N_cal): they are
    there to spread the deposits over as many cells as Geant4's, not to add energy (without this,
    the visible energy came out about twice Geant4's at CPU scale)."""

    def __init__(self, describe: dict, process: torch.nn.Module, path: Path):
        super().__init__(describe, process, path)
        counts = Path(path).parent / COUNTS
        self.counts_model = load_model(counts, self.device)
        if self.counts_model.describe != describe["counts"]:
            raise InputError(counts, "is not the ShowerFlow model this run was trained with")
        calibration = Path(path).parent / CALIBRATION
        self.calibrations = {name: OccupancyCalibration(**c) for name, c in
                             (json.loads(calibration.read_text()) if calibration.exists() else {}).items()}

    def _generate_batch(self, energy, theta, phi, detector: str, steps: int | None, generator) -> np.ndarray:
        counts = self.counts_model._generate_batch(energy, theta, phi, detector, None, generator)
        n = counts.sum(1)
        if detector in self.calibrations:
            counts = self.calibrations[detector].apply(counts)
        clouds = self.clouds(energy, theta, phi, detector, counts, steps, generator)
        calibrated = counts.sum(1)  # the extra points share the energy of the N the ShowerFlow gave
        clouds.points[:, 3] *= np.repeat(np.where(calibrated > 0, n / np.maximum(calibrated, 1), 1.0), calibrated)
        return project(self.readout(detector), clouds.points, clouds.offsets)

    @torch.no_grad()
    def clouds(self, energy, theta, phi, detector: str, counts: np.ndarray, steps: int | None, generator) -> PointClouds:
        """Generated points (mm, MeV) of showers with ``counts`` (N, L) points per layer: the
        PointWise net's points of each shower, sorted by depth, fill its layers front to back."""
        totals = counts.sum(1)
        cond = torch.cat([self.conditions.forward(energy, theta, phi, self.conditions.slot(detector)),
                          count_condition(totals)], dim=1).to(self.device)
        noise = torch.randn((int(totals.sum()), *self.shape), generator=generator, device=self.device)
        x = self.denoise(noise, cond, totals, steps)
        owners = np.repeat(np.arange(len(counts)), totals)
        order = np.lexsort((x[:, 2].cpu().numpy(), owners))  # by shower, then depth
        layer = np.empty(len(owners), dtype=np.int64)
        layer[order] = np.repeat(np.tile(np.arange(counts.shape[1]), len(counts)), counts.ravel())
        return PointClouds(self.voxels.decode(x, layer), np.concatenate([[0], np.cumsum(totals)]).astype(np.int64))

    def denoise(self, noise: torch.Tensor, cond: torch.Tensor, totals: np.ndarray, steps: int | None) -> torch.Tensor:
        """The points that ``noise`` (M, 4), the rows of showers of ``totals`` points in order, maps to.
        Showers of similar size are padded into point sets (B, P, 4) of at most ``POINT_CHUNK`` points
        that share one context per shower, so the context layers run once per shower, not per point;
        a point's result does not depend on its set (the net treats points independently)."""
        if not len(noise):
            return noise
        offsets = np.concatenate([[0], np.cumsum(totals)])
        order, out, start = np.argsort(totals, kind="stable"), torch.empty_like(noise), 0
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop + 1 - start) * totals[order[stop]] <= POINT_CHUNK:
                stop += 1
            group = order[start:stop]
            index = offsets[group][:, None] + np.arange(max(int(totals[group].max()), 1))[None]
            valid = torch.from_numpy(index < offsets[group + 1][:, None]).to(noise.device)
            sets = noise[torch.from_numpy(np.minimum(index, len(noise) - 1)).to(noise.device)]
            x = self.process.sample(sets * valid[..., None], cond[torch.from_numpy(group).to(cond.device)], steps=steps)
            out[torch.from_numpy(index).to(noise.device)[valid]] = x[valid]
            start = stop
        return out

    def fit_calibration(self, detector: DetectorShowers, n_showers: int = 200, seed: int = 0) -> OccupancyCalibration:
        """Seed 000's occupancy calibration for ``detector``: cells hit against points, for its Geant4
        showers and for generated ones with the same points per layer."""
        s = detector.showers.take(np.arange(min(n_showers, len(detector.showers))))
        counts = self.voxels.layer_counts(s, detector.readout)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        clouds = self.clouds(s.energy, s.theta, s.phi, detector.name, counts, None, generator)
        generated = project(self.readout(detector.name), clouds.points, clouds.offsets)
        n = counts.sum(1)
        return OccupancyCalibration.fit(n, (s.showers > 0).sum(1), n, (generated > 0).sum(1))


class TokenModel(TrainedModel):
    """A next-token run: sampled token pairs decode to voxels; optionally seed 003's calibration
    moves the ``deeper = (k, layers)`` most energetic deposits of every shower deeper (off: None)."""

    deeper: tuple[int, int] | None = None

    def _decode(self, tokens: torch.Tensor, energy: np.ndarray, detector: str) -> np.ndarray:
        if self.deeper:
            readout = self.readout(detector)
            if not getattr(readout, "is_regular", False):
                raise CalofmError(f"the depth calibration needs a regular mesh; {detector}'s is {readout.describe()}")
            tokens = self.voxels.deeper(tokens, *self.deeper, readout.n_voxels // readout.n_layers)
        return self.voxels.decode(tokens)

    def sampling(self) -> dict:
        calibration = {"calibration": f"top-{self.deeper[0]} deposits {self.deeper[1]} layer(s) deeper"} if self.deeper else {}
        return {**self.process.hparams, **calibration}


MODELS = {LayerCountTransform.kind: CountModel, PointCloudTransform.kind: PointCloudModel, Tokeniser.kind: TokenModel}


def trained_model(describe: dict, process: torch.nn.Module, path: Path | None = None) -> TrainedModel:
    """The generator of the kind ``describe``'s representation calls for."""
    return MODELS.get(describe["voxels"].get("kind"), TrainedModel)(describe, process, path)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The generator saved in a run folder (or its model.safetensors)."""
    path = Path(path)
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
    return trained_model(describe, process.to(device), file)
