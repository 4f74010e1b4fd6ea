"""A trained model as the fast simulation of a Geant4 run (``calofm simulate --fast-sim MODEL``).

:class:`FastSim` is the :class:`calofm.simulate.handoff.ShowerModel` that ``calofm simulate`` hands
its triggered particles to. The model is a calofm run or shipped model (generated through
:class:`TrainedModel`), or an exported ONNX file run through ONNX Runtime: the very file a Geant4
application would load, in either export contract (calofm's or Par04's, read from its metadata).

Each particle is generated with the model class (one-hot slot) of its kind in this detector:
``DETECTOR-PARTICLE`` (positrons fall back on ``DETECTOR-e-``), or the bare detector name, or the
classes the user names. The network runs with one thread per worker process, as Geant4 does: the
time per event is the time per core.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calofm.core.errors import CalofmWarning, InputError
from calofm.core.particles import PARTICLES, particle_name
from calofm.geometry import CylindricalBinning, readout_from_dict
from calofm.geometry.orders import reorder
from calofm.simulate.handoff import Trigger, incidence_theta, place

DEFAULT_MIN_ENERGY_GEV = 1.0  # below it Geant4 simulates: the shipped models start at 1 GeV


@dataclass
class FastSim:
    """``model`` (run folder, shipped name or .onnx file) generating the showers of ``classes``
    (PDG code -> model class) for the particles ``trigger`` accepts."""

    model: str
    classes: dict[int, str]
    trigger: Trigger
    steps: int | None = None
    generator: str = ""
    _backend: object = field(default=None, repr=False, compare=False)

    @classmethod
    def open(cls, model: str, detector, particles: tuple[str, ...] = ("e-", "e+", "gamma"),
             classes: str | None = None, min_energy_gev: float = DEFAULT_MIN_ENERGY_GEV,
             max_energy_gev: float | None = None, section: str | None = None, max_angle_deg: float = 90.0,
             steps: int | None = None) -> "FastSim":
        """Check ``model`` against ``detector`` (a :class:`calofm.simulate.detectors.Detector`) and the
        options of ``calofm simulate --fast-sim``; one-line errors name the option at fault."""
        backend = _open_backend(model)
        if steps and isinstance(backend, _OnnxBackend):
            raise InputError("--fast-sim-steps", "an exported graph holds its sampler: it has no steps to choose")
        unknown = [p for p in particles if p not in PARTICLES]
        if unknown:
            raise InputError("--fast-sim-particles", f"unknown particle {unknown[0]!r}; known: {', '.join(PARTICLES)}")
        chosen = _choose_classes(backend.classes, detector.name, particles, classes, model)
        for pdg, name in chosen.items():
            backend.mesh(name)  # a mesh the showers can be placed with, for every class used
        e_max = max_energy_gev * 1000.0 if max_energy_gev else backend.e_max
        try:
            trigger = Trigger(tuple(chosen), min_energy_gev * 1000.0, e_max, _depth_range(detector, section),
                              math.radians(max_angle_deg))
        except ValueError as exc:
            raise InputError("--fast-sim", str(exc)) from None
        return cls(str(model), chosen, trigger, steps, backend.generator)

    def __getstate__(self):  # sent to the workers without the network: each loads its own
        return {**self.__dict__, "_backend": None}

    @property
    def backend(self):
        if self._backend is None:
            self._backend = _open_backend(self.model, threads=1)
        return self._backend

    def load(self) -> None:
        for name in set(self.classes.values()):
            self.backend.showers(name, np.array([10_000.0]), np.array([math.pi / 2]), np.zeros(1), 0, self.steps)

    def deposits(self, handoffs: np.ndarray, phi: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`calofm.simulate.handoff.ShowerModel.deposits`."""
        out, owners = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.int64)]
        pdg = handoffs[:, 0].astype(np.int64)
        for k, name in enumerate(sorted(set(self.classes.values()))):
            rows = np.flatnonzero(np.isin(pdg, [p for p, c in self.classes.items() if c == name]))
            if not len(rows):
                continue
            h = handoffs[rows]
            showers = self.backend.showers(name, h[:, 1], incidence_theta(h[:, 5:8]), phi[rows],
                                           int(np.random.default_rng([seed, k]).integers(2**31)), self.steps)
            deposits, owner = place(showers, self.backend.mesh(name), h[:, 2:5], h[:, 5:8])
            out.append(deposits)
            owners.append(rows[owner])
        return np.concatenate(out), np.concatenate(owners)

    def describe(self) -> dict:
        return {"model": self.model, "generator": self.generator, "steps": self.steps,
                "classes": {particle_name(p): c for p, c in self.classes.items()}, **self.trigger.describe()}


def _depth_range(detector, section: str | None) -> tuple[float, float]:
    """The depths (mm) where particles go to the model: a section of the detector, or all of it."""
    if section is None:
        return 0.0, detector.depth_mm
    names = [s.name for s in detector.sections]
    if section not in names:
        raise InputError("--fast-sim-section", f"{detector.name} has no section {section!r}"
                         + (f"; its sections: {', '.join(names)}" if names else " (it has no sections)"))
    return detector.section_ranges[names.index(section)]


def _choose_classes(known: list[str], detector: str, particles: tuple[str, ...], given: str | None,
                    model: str) -> dict[int, str]:
    """PDG code -> model class: ``given`` is one class for all particles or ``P=CLASS,...``."""
    mapping = dict(item.split("=", 1) if "=" in item else (None, item) for item in given.split(",")) if given else {}
    for name in mapping.values():
        if name not in known:
            raise InputError("--fast-sim-class", f"{model} has no class {name!r}; it knows {', '.join(known)}")
    chosen = {}
    for particle in particles:
        if given:
            name = mapping.get(particle, mapping.get(None))
            if name is None:
                raise InputError("--fast-sim-class", f"names no class for {particle}")
        else:
            candidates = [f"{detector}-{particle}"] + ([f"{detector}-e-"] if particle == "e+" else []) + [detector]
            name = next((c for c in candidates if c in known), None)
            if name is None:
                raise InputError(model, f"has no class for {particle} in {detector} (tried {', '.join(candidates)}); "
                                        f"it knows {', '.join(known)}: choose with --fast-sim-class, or limit "
                                        "--fast-sim-particles")
        chosen[PARTICLES[particle]] = name
    return chosen


def _open_backend(model: str, threads: int | None = None):
    if str(model).endswith(".onnx"):
        return _OnnxBackend(Path(model), threads)
    return _CalofmBackend(model, threads)


class _CalofmBackend:
    """A calofm run or shipped model, generating through :class:`TrainedModel`."""

    def __init__(self, model: str, threads: int | None):
        import torch

        from calofm.inference.generators import CountModel, load_model

        if threads:
            torch.set_num_threads(threads)
        self.model = load_model(model)
        if isinstance(self.model, CountModel):
            raise InputError(self.model.path, "is a ShowerFlow run: it gives points per layer, not showers; "
                                              "use the PointWise run trained with it")
        self.classes = list(self.model.conditions.detectors)
        self.e_max = float(self.model.conditions.e_max)

    def mesh(self, name: str) -> CylindricalBinning:
        readout = self.model.readout(name)
        if not isinstance(readout, CylindricalBinning):
            raise InputError(self.model.path, f"class {name!r} is read out on {readout.describe()}: the fast "
                                              "simulation places showers generated on a cylindrical mesh")
        return readout

    def showers(self, name, energy, theta, phi, seed, steps) -> np.ndarray:
        return np.concatenate(list(self.model.generate(energy, theta, phi, name, steps, seed=seed)))

    @property
    def generator(self) -> str:
        d = self.model.describe
        return f"{d['backbone']} + {d['process']}, step {d.get('step', 0)}"


class _OnnxBackend:
    """An exported graph through ONNX Runtime, in the contract its metadata names (see
    :mod:`calofm.export.generator`): its output, in Par04's cell order (r outer, phi, z inner),
    comes back to calofm's (z, alpha, r inner) order, in MeV."""

    def __init__(self, path: Path, threads: int | None):
        import onnxruntime as ort

        if not path.is_file():
            raise InputError(path, "no such ONNX file")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise InputError(path, f"not a readable ONNX graph ({str(exc).splitlines()[0][:120]})") from None
        self.path = path
        meta = self.session.get_modelmeta().custom_metadata_map
        if "meshes" not in meta or meta.get("contract") not in ("calofm", "par04"):
            raise InputError(path, "has no calofm export metadata (contract and meshes); export it with "
                                   "`calofm export` of this version")
        self.contract, self.meta = meta["contract"], meta
        self.classes = json.loads(meta["one_hot_slots"])
        self.meshes = {name: readout_from_dict(d) for name, d in json.loads(meta["meshes"]).items()}
        self.e_max = float(meta["max_energy_MeV"]) if self.contract == "par04" else math.inf
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.noise_shape = inputs["noise"].shape[1:] if "noise" in inputs else None
        if self.contract == "calofm" and self.noise_shape is None:
            warnings.warn(f"{path}: the graph draws its own noise, so fast-simulated showers change from run to run; "
                          "export with --contract par04 or --noise-input for reproducible showers", CalofmWarning)

    def mesh(self, name: str) -> CylindricalBinning:
        if name not in self.meshes:
            raise InputError(self.path, f"holds no mesh for class {name!r} (it has {', '.join(self.meshes)})")
        return self.meshes[name]

    def showers(self, name, energy, theta, phi, seed, steps) -> np.ndarray:
        n = len(energy)
        onehot = np.zeros((n, len(self.classes)), np.float32)
        onehot[:, self.classes.index(name)] = 1
        rng = np.random.default_rng(seed)
        feeds = {}
        if self.contract == "par04":
            latent = rng.standard_normal((n, int(self.meta["size_latent_vector"])), dtype=np.float32)
            kinematics = np.stack([energy / float(self.meta["max_energy_MeV"]),
                                   np.degrees(theta) / float(self.meta["max_angle_deg"])], axis=1)
            feeds["input"] = np.concatenate([latent, kinematics.astype(np.float32), onehot], axis=1)
        else:
            feeds["input"] = np.concatenate([np.stack([energy / 1000.0, phi, theta], axis=1).astype(np.float32),
                                             onehot], axis=1)
            if self.noise_shape is not None:
                feeds["noise"] = rng.standard_normal((n, *self.noise_shape), dtype=np.float32)
        out = self.session.run(["energies"], feeds)[0]
        if self.contract == "par04":
            out = out * energy[:, None]
        return reorder(out, "par04", "calochallenge", self.mesh(name).shape)

    @property
    def generator(self) -> str:
        return f"ONNX Runtime, {self.contract} contract"
