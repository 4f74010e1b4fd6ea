"""`calofm train` and `calofm generate`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import yaml

from calofm.cli.options import non_negative_int, positive_float, positive_int, probability
from calofm.core.errors import CalofmError
from calofm.core.files import check_output
from calofm.generative import SOLVERS
from calofm.inference import TokenModel, load_model
from calofm.simulate.gun import parse_conditions
from calofm.train.config import load_config
from calofm.workflow.fit import fit

EXAMPLE = """\
example config (CaloDiT-2 pre-training; every key but data.detectors has a default):

  out: runs/pretrain
  data:
    detectors: {par04-siw: siw.h5, par04-scipb: scipb.h5, ild-w: ildw.h5}
    free_slots: 1          # one-hot = K detectors + 1 free slot for a new detector
    val_fraction: 0.05
  model: {backbone: dit, args: {patch: [3, 2, 3], dim: 384, depth: 6, heads: 6, mlp_dim: 1536}}
  process: {name: edm}     # or {name: cd, teacher: runs/pretrain} for consistency distillation
  train: {steps: 100000, batch_size: 256, lr: 5.0e-4, weight_decay: 1.0e-4, warmup: 0.1, decay: 0.4,
          ema: 0.999, precision: fp32, compile: false, checkpoint_every: 1000, validate_every: 5000,
          accumulate: 1}    # batch_size is global: processes x accumulate chunks per step

CaloDREAM++ (energy network + universal ViT, factorised flow matching; any layered readout):

  model: {backbone: vit, args: {patch: [3, 16, 1], dim: 480, depth: 6, heads: 6, mlp_dim: 1920,
          energy: {dim: 64, heads: 4, encoder_layers: 4, decoder_layers: 4, ff_dim: 1024}}}
  process: {name: cfm, args: {solver: rk4, steps: 20}}   # patch: one per grid for irregular readouts

Point clouds (CaloClouds II; two runs, the second naming the first; studies/caloclouds/):

  model: {backbone: showerflow}                  process: {name: likelihood}   # points per layer
  model: {backbone: pointwise, counts: runs/showerflow}
  process: {name: edm, args: {sigma_data: 0.5, steps: 32}}                     # the points
"""


def add_parsers(sub) -> None:
    p = sub.add_parser("train",
                       help="train a model (EDM, flow matching, likelihood, or consistency distillation of an EDM run)",
                       description="Train the model a YAML config describes, on one or several detectors' "
                                   "Geant4 showers. Writes the run folder: checkpoint.safetensors (+ .json; "
                                   "the run resumes from it when re-run with the same config), "
                                   "model.safetensors (+ .json; the EMA generator), metrics.csv and "
                                   "validation.csv (six-observable W1 geometric mean per detector). Several "
                                   "processes: torchrun --nproc-per-node N -m calofm.cli.main train ...",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="YAML config (see the example below)")
    p.add_argument("--out", help="run folder (overrides the config's 'out')")
    p.add_argument("--steps", type=positive_int, help="training steps (overrides train.steps)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides train.device)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set train.batch_size=64 (repeatable; VALUE is YAML)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=train)

    p = sub.add_parser("generate", help="generate showers with a trained model",
                       description="Generate showers for one detector with a trained run (EDM: Heun sampler, "
                                   "default 32 steps; CD: one step). Writes CaloChallenge HDF5 (incident_energies "
                                   "in MeV, showers in CaloChallenge voxel order) with the incidence angles in "
                                   "incident_theta / incident_phi and the detector's mesh in the 'readout' "
                                   "attribute, so `calofm evaluate` reads it directly.")
    p.add_argument("--model", type=Path, required=True,
                   help="run folder (or its model.safetensors), or the name of a shipped model (fm-1)")
    p.add_argument("--n", type=positive_int, required=True, help="number of showers")
    p.add_argument("--energy", required=True, help="incident energy in GeV: X, fixed:X, uniform:A:B or loguniform:A:B")
    p.add_argument("--detector", required=True, help="detector name (one the model was trained or adapted on)")
    p.add_argument("--theta", default=str(math.pi / 2), help="polar angle in rad, same forms (default pi/2)")
    p.add_argument("--phi", default="0", help="azimuth in rad, same forms (default 0)")
    p.add_argument("--steps", type=positive_int,
                   help="sampler steps (default: the model's, 32 for EDM, 1 for CD, 20 for CFM)")
    p.add_argument("--solver", choices=SOLVERS, help="ODE solver of a flow-matching model (default: the model's, "
                                                     "rk4; adaptive: dopri5, ignores --steps)")
    p.add_argument("--temperature", type=positive_float,
                   help="next-token models: sampling temperature (default: the model's, 1)")
    p.add_argument("--top-k", type=non_negative_int,
                   help="next-token models: draw from the k most likely tokens only (0: all)")
    p.add_argument("--top-p", type=probability,
                   help="next-token models: draw from the smallest set holding this probability")
    p.add_argument("--deeper", metavar="K:LAYERS",
                   help="next-token models: the next-token foundation model's calibration, the K most "
                        "energetic deposits of each shower LAYERS layers deeper (off "
                        "by default; recorded in the file's metadata)")
    p.add_argument("--batch-size", type=positive_int, default=1000, help="showers per batch (default 1000)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed of conditions and noise (default 0)")
    p.add_argument("--out", type=Path, required=True, help="output HDF5 file (appears only once complete)")
    p.set_defaults(run=generate)


def key_values(items: list[str], option: str) -> dict:
    """Repeated ``option KEY=VALUE`` arguments as a dict; VALUE is read as YAML (numbers, lists)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise CalofmError(f"{option} {item!r}: expected KEY=VALUE")
        out[key] = yaml.safe_load(value)
    return out


def _overrides(args) -> dict:
    out = key_values(args.set, "--set")
    for key, value in (("out", args.out), ("train.steps", args.steps), ("train.device", args.device)):
        if value is not None:
            out[key] = value
    return out


def train(args) -> int:
    fit(load_config(args.config, _overrides(args)), args.config, progress=not args.no_progress)
    return 0


def generate(args) -> int:
    try:
        energy_gev, theta, phi = parse_conditions(args.energy, args.theta, args.phi)
    except ValueError as exc:
        raise CalofmError(str(exc)) from None
    check_output(args.out)
    model = load_model(args.model, args.device)
    model.readout(args.detector)  # an unknown detector fails before any work
    if args.solver:
        if not hasattr(model.process, "set_solver"):
            raise CalofmError(f"--solver: {args.model} is a {model.describe['process']} model, not flow matching")
        model.process.set_solver(args.solver)
    _next_token_options(model, args)
    rng = np.random.default_rng(args.seed)
    energy = np.array([energy_gev.draw(rng) for _ in range(args.n)]) * 1000.0
    thetas = np.array([theta.draw(rng) for _ in range(args.n)])
    phis = np.array([phi.draw(rng) for _ in range(args.n)])
    model.write(args.out, energy, thetas, phis, args.detector, steps=args.steps, batch_size=args.batch_size,
                seed=args.seed, progress=True)
    print(f"wrote {args.n} {args.detector} showers to {args.out}")
    return 0


def _next_token_options(model, args) -> None:
    """Apply --temperature, --top-k, --top-p and --deeper, which only next-token models take."""
    sampling = {k: v for k, v in (("temperature", args.temperature), ("top_k", args.top_k), ("top_p", args.top_p))
                if v is not None}
    if (sampling or args.deeper) and not isinstance(model, TokenModel):
        raise CalofmError(f"--temperature, --top-k, --top-p and --deeper: {args.model} is a "
                          f"{model.describe['backbone']} model, not a next-token one")
    if sampling:
        try:
            model.process.set_sampling(**{**model.process.hparams, **sampling})
        except ValueError as exc:
            raise CalofmError(str(exc)) from None
    if args.deeper:
        k, sep, layers = args.deeper.partition(":")
        if not (sep and k.isdigit() and layers.isdigit()):
            raise CalofmError(f"--deeper {args.deeper!r}: expected K:LAYERS, two non-negative integers")
        model.deeper = (int(k), int(layers))
