"""The training configuration (`calofm train --config FILE.yaml`): a typed tree with clear errors.

Every section is a dataclass; :func:`from_dict` rejects unknown keys and wrong types with a
one-line message naming the file and the key (``run.yaml: train.lr: expected a number, got 'fast'``).
Defaults are the values of CaloDiT-2 (section 3.2.3).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from calofm.core.errors import InputError

PROCESS_NAMES = ("edm", "cd", "cfm", "fd", "likelihood", "autoregressive")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # exponent notation
DISTILLATIONS = ("cd", "fd")  # processes that distil a saved teacher run into a one-step student


@dataclass
class DataConfig:
    detectors: dict[str, list[str]] = field(default_factory=dict)  # name -> shower files (one mesh shape)
    free_slots: int = 1             # detector one-hot = K pre-training detectors + free slots
    val_fraction: float = 0.05      # per detector, held out for validation
    n_train: int | None = None      # per detector: a nested subset of the training part
    split_seed: int = 0


@dataclass
class ModelConfig:
    backbone: str = "dit"
    args: dict = field(default_factory=dict)  # backbone keyword arguments (patch, dim, depth, ...)
    counts: str | None = None       # pointwise: the ShowerFlow run giving each shower's points per layer


@dataclass
class ProcessConfig:
    # edm | cd (consistency distillation of an EDM run) | cfm (flow matching) | fd (one-step distillation
    # of a flow-matching run) | likelihood | autoregressive
    name: str = "edm"
    args: dict = field(default_factory=dict)
    teacher: str | None = None      # cd, fd: the run folder to distil (EDM for cd, flow matching for fd)
    student: str | None = None      # cd, fd: initialise the student from this distilled run (default: the teacher)


@dataclass
class AdaptConfig:
    # the pre-trained run (EDM, CFM, likelihood, autoregressive) to adapt; None: not an adaptation
    base: str | None = None
    # a name in calofm.adapt.STRATEGIES (calofm adapt --help lists them)
    strategy: str = "full"
    args: dict = field(default_factory=dict)  # strategy arguments (k; r, alpha; lr_mult; init)
    model: dict = field(default_factory=dict)  # backbone arguments for a target of another geometry (patch)


@dataclass
class TrainConfig:
    steps: int = 100_000
    batch_size: int = 256           # global, split over DDP processes
    accumulate: int = 1             # chunks per process and step (gradient accumulation); see Trainer
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup: float = 0.1             # warmup-stable-decay: fractions of the steps
    decay: float = 0.4
    ema: float | None = 0.999       # cap of the EMA decay, which rises from 0; null: no EMA
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    precision: str = "fp32"         # fp32 | bf16 (autocast)
    compile: bool = False
    checkpoint_every: int = 1000
    log_every: int = 50
    validate_every: int = 0         # 0: validate only at the end
    validate_showers: int = 500     # per detector


@dataclass
class RunConfig:
    out: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    process: ProcessConfig = field(default_factory=ProcessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)

    def validate(self) -> None:
        t = self.train
        checks = [
            (t.steps > 0, "train.steps", "must be positive"),
            (t.batch_size > 0, "train.batch_size", "must be positive"),
            (t.accumulate > 0, "train.accumulate", "must be positive"),
            (t.lr > 0, "train.lr", "must be positive"),
            (t.weight_decay >= 0, "train.weight_decay", "must be >= 0"),
            (t.seed >= 0, "train.seed", "must be >= 0"),
            (0 <= t.warmup and 0 <= t.decay and t.warmup + t.decay <= 1, "train.warmup",
             "warmup + decay must be fractions summing to at most 1"),
            (t.ema is None or 0 <= t.ema < 1, "train.ema", "must be in [0, 1) or null"),
            (t.precision in ("fp32", "bf16"), "train.precision", "must be fp32 or bf16"),
            (t.checkpoint_every > 0 and t.log_every > 0, "train.checkpoint_every", "intervals must be positive"),
            (t.validate_every >= 0 and t.validate_showers > 0, "train.validate_every",
             "validate_every must be >= 0 and validate_showers positive"),
            (self.process.name in PROCESS_NAMES, "process.name",
             f"must be {', '.join(PROCESS_NAMES[:-1])} or {PROCESS_NAMES[-1]}"),
            (self.process.name not in DISTILLATIONS or self.process.teacher, "process.teacher",
             f"{self.process.name} needs the {'EDM' if self.process.name == 'cd' else 'flow-matching'} run to distil"),
            (self.process.name in DISTILLATIONS or self.data.detectors, "data.detectors", "name at least one detector"),
            (not (self.adapt.base and self.process.name in DISTILLATIONS), "adapt.base",
             "adapt the teacher run; then re-distil with process {name: cd or fd, teacher: ADAPTED, "
             "student: PRETRAINED_STUDENT}"),
            (not self.adapt.base or len(self.data.detectors) == 1, "data.detectors",
             "an adaptation trains on exactly one (the new) detector"),
            (0 <= self.data.val_fraction < 1, "data.val_fraction", "must be in [0, 1)"),
            (self.data.free_slots >= 0, "data.free_slots", "must be >= 0"),
            (self.data.n_train is None or self.data.n_train > 0, "data.n_train", "must be positive"),
        ]
        for ok, key, problem in checks:
            if not ok:
                raise ValueError(f"{key}: {problem}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def from_dict(cls, data: dict, prefix: str = ""):
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]}: unknown key; known: {', '.join(sorted(known))}")
    return cls(**{key: _convert(hints[key], value, f"{prefix}{key}") for key, value in data.items()})


def _convert(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value or {}, key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(next(a for a in args if a is not type(None)), value, key)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML (YAML 1.1) reads 1e-4, without a dot, as a string
    if origin is dict and hint == dict[str, list[str]]:  # data.detectors: a file or a list of files each
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping of detector name to shower file(s)")
        return {str(k): [str(p) for p in (v if isinstance(v, list) else [v])] for k, v in value.items()}
    expected = origin or hint
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{key}: expected {getattr(expected, '__name__', expected)}, got {value!r}")
    return value


def load_config(path: str | Path, overrides: dict | None = None) -> RunConfig:
    """Read and validate a YAML config; ``overrides`` maps dotted keys (``train.steps``) to values.

    Relative paths in the config are relative to the current directory, like command-line paths.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, "cannot read the YAML config "
                               f"({exc.__class__.__name__}: {str(exc).splitlines()[0]})") from None
    for key, value in (overrides or {}).items():
        section, _, name = key.rpartition(".")
        target = raw
        for part in filter(None, section.split(".")):
            target = target.setdefault(part, {})
        target[name] = value
    try:
        return build_config(raw)
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def build_config(raw: dict) -> RunConfig:
    """A checked run config from its dictionary form (a ``ValueError`` names the bad key)."""
    config = from_dict(RunConfig, raw)
    config.validate()
    return config
