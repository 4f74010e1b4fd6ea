"""`calofm adapt` and `calofm study`."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from calofm.adapt import STRATEGIES
from calofm.cli.options import cluster_options, cluster_spec, fraction, non_negative_int, positive_float, positive_int
from calofm.cli.train import key_values
from calofm.core.errors import CalofmError, InputError
from calofm.data import open_showers
from calofm.train.config import RunConfig, build_config
from calofm.train.saved import read_model
from calofm.workflow.fit import fit
from calofm.workflow.sequence import is_sequence, run_sequence
from calofm.workflow.study import run_study


def strategy_help() -> str:
    """Every registered strategy and what it trains (its docstring's summary), the additive ones last."""
    listed = {additive: "; ".join(f"{name}: {s.summary()}" for name, s in STRATEGIES.items() if s.additive == additive)
              for additive in (False, True)}
    return (f"{listed[False]}; for a next-token mixture of experts, which grows instead so that earlier classes stay "
            f"bit-identical: {listed[True]}")


def add_parsers(sub) -> None:
    p = sub.add_parser("adapt", help="adapt a pre-trained run (EDM, flow matching, ShowerFlow, next-token) to a new "
                                     "detector",
                       description="Adapt a pre-trained run of any model family (CaloDiT-2 EDM, CaloDREAM++ flow "
                                   "matching, the point-cloud ShowerFlow and PointWise runs, the next-token mixture "
                                   "of experts) to a new detector's "
                                   "showers, in the model's free detector slot, with one transfer strategy; "
                                   "optionally re-distil the one-step student (initialised from the pre-trained "
                                   "student, the adapted model as teacher: consistency distillation for an EDM run, "
                                   "flow distillation for flow matching, e.g. --from fm-1 --distil fm-1-fast). "
                                   "Writes OUT (the adapted run) and OUT/fast. Strategies: " + strategy_help() + ".",
                       epilog="examples:\n"
                              "  calofm adapt --from runs/pretrain --data scipb.h5 --strategy lora --arg r=16 "
                              "--n-train 100 --distil runs/pretrain-cd --out runs/scipb-lora\n"
                              "  calofm adapt --from fm-1 --data scipb.h5 --strategy full --steps 300 "
                              "--distil fm-1-fast --out runs/scipb-fm1\n"
                              "  calofm adapt --from runs/points/counts.safetensors --data siw.h5 "
                              "--out runs/siw-flow\n"
                              "  calofm adapt --from runs/points --data siw.h5 --strategy bitfit "
                              "--counts runs/siw-flow --out runs/siw-points\n"
                              "  calofm adapt --from runs/nexttoken --data pb.h5 --strategy expert "
                              "--arg init=ild-ta-gamma --out runs/pb",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="base", required=True,
                   help="pre-trained run folder or model file, or the name of a shipped model (fm-1)")
    p.add_argument("--data", type=Path, required=True, help="the new detector's Geant4 showers (any calofm format)")
    p.add_argument("--detector", help="name of the new detector (default: the file's 'detector' attribute)")
    p.add_argument("--strategy", default="full", choices=list(STRATEGIES), help="transfer strategy (default full)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy argument: " + "; ".join(
                       f"{name}: " + ", ".join(f"{k}={v or 'DETECTOR'}" for k, v in s.args.items())
                       for name, s in STRATEGIES.items() if s.args))
    p.add_argument("--patch", metavar="YAML", help="a flow-matching (vit) base adapted to another geometry: the "
                                                  "target's patch, e.g. '[1, 5, 1]' or one per grid "
                                                  "'[[5, 5, 3], [3, 5, 5]]' (default: the base's patch)")
    p.add_argument("--counts", metavar="RUN", help="a point-cloud (pointwise) base: the ShowerFlow run that gives the "
                                                  "new detector's points per layer (adapt the base's "
                                                  "counts.safetensors to it first)")
    p.add_argument("--n-train", type=positive_int, help="use this many training showers (a nested subset; default all)")
    p.add_argument("--val-fraction", type=fraction, default=0.0,
                   help="fraction held out for validation during training (default 0: evaluate on a test file)")
    p.add_argument("--steps", type=positive_int, default=5000, help="training steps (default 5000)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default per strategy: "
                                            + ", ".join(f"{name} {s.lr:g}" for name, s in STRATEGIES.items()) + ")")
    p.add_argument("--batch-size", type=positive_int, default=256, help="batch size (default 256)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the training subset, data order and noise")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--distil", "--cd", metavar="RUN", dest="distil",
                   help="the pre-trained one-step student (a CD run of an EDM base, a flow-distilled run of a "
                        "flow-matching base, or a shipped name such as fm-1-fast): re-distil the adapted model into "
                        "OUT/fast")
    p.add_argument("--distil-steps", "--cd-steps", type=positive_int, dest="distil_steps",
                   help="distillation steps (default: --steps)")
    p.add_argument("--out", type=Path, required=True, help="run folder of the adapted model")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=adapt)

    p = sub.add_parser("study", help="grid of strategies x training sizes x seeds, evaluated on a test set",
                       description="Run a data-efficiency study: every (strategy, training size, seed) cell adapts "
                                   "the base run (or trains from scratch), generates the test set's conditions and "
                                   "evaluates against it (six-observable W1 geometric mean, high-level classifier "
                                   "AUC, FPD). Writes OUT/cells/*/ (run folder, generated.h5, metrics.json), "
                                   "OUT/metrics.json, OUT/report.md with a table laid out as table 2 of the "
                                   "CaloClouds II transfer study (Gaede, Kasieczka, Valente) and the gain over "
                                   "scratch, and one plot per metric against training size. Finished cells are not "
                                   "rerun. A YAML with 'steps' is a sequence instead (the additive growth of the "
                                   "next-token calorimeter foundation model, mixture of experts + PEFT): each step "
                                   "adapts the model the step before left to one new class and is evaluated per "
                                   "observable; the report says whether the last model still generates every "
                                   "earlier class bit-identically.",
                       epilog=STUDY_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="study YAML (see the example below)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    cluster_options(p, "cells", "Each cell of a study is one task, the cells run in parallel, and the table is the "
                                "serial run's; the study's files must be where the workers see them (a shared file "
                                "system on a batch cluster). A sequence runs its steps in order and takes no --cluster")
    p.set_defaults(run=study)


STUDY_EXAMPLE = """\
example study.yaml:

  out: studies/scipb
  base: runs/pretrain                  # pre-trained run (EDM or flow matching)
  target: {name: par04-scipb, train: scipb_train.h5, test: scipb_test.h5}
  strategies:                          # label: {strategy, args, train, base}; label alone = that strategy
    scratch: {}
    full: {}
    bitfit: {}
    lora-r16: {strategy: lora, args: {r: 16, alpha: 16}}
    vit-scratch: {strategy: scratch, base: runs/vit}   # another family beside it, gain vs its own scratch
    vit-full: {strategy: full, base: runs/vit}
  sizes: [100, 1000]
  seeds: [0, 1, 2]
  train: {steps: 5000, batch_size: 256}    # any train.* key, for every cell (a strategy's own train: wins)
  evaluate: {n: 2000, classifier_epochs: 20}

example sequence.yaml (additive growth as in the next-token calorimeter foundation model; a next-token base
pre-trained on photons in W and Ta):

  out: studies/growth
  base: runs/nexttoken                 # pre-trained with data.free_slots >= the classes to add
  steps:                               # in order; each adapts the model the step before left
    photons-w: {target: {name: ild-w-gamma, test: w_gamma_test.h5}}       # no strategy: evaluate as is
    photons-pb: {strategy: expert, args: {init: ild-ta-gamma}, size: 1000,
                 target: {name: ild-pb-gamma, train: pb_gamma.h5, test: pb_gamma_test.h5}}
    electrons-w: {strategy: particle, args: {init: ild-w-gamma, r: 8, alpha: 8}, size: 1000,
                  target: {name: ild-w-e-, train: w_e.h5, test: w_e_test.h5}}
  train: {steps: 5000, batch_size: 64}
  evaluate: {n: 2000, classifier_epochs: 20}
"""


FAST = "fast"  # the re-distilled one-step student's folder inside the adapted run


def adapt(args) -> int:
    detector = args.detector
    if detector is None:
        with open_showers(args.data) as f:
            detector = f.metadata.get("detector")
        if not detector:
            raise InputError(args.data, "has no 'detector' attribute; name the new detector with --detector")
    train = {"steps": args.steps, "lr": args.lr or STRATEGIES[args.strategy].lr, "batch_size": args.batch_size,
             "seed": args.seed, "device": args.device}
    raw = {"out": str(args.out),
           "data": {"detectors": {str(detector): [str(args.data)]}, "n_train": args.n_train,
                    "val_fraction": args.val_fraction, "split_seed": args.seed},
           "adapt": {"base": args.base, "strategy": args.strategy, "args": key_values(args.arg, "--arg"),
                     "model": {} if args.patch is None else {"patch": yaml.safe_load(args.patch)}},
           "model": {"counts": args.counts}, "train": train}
    name = args.distil and ("cd" if read_model(args.distil)[0]["process"] == "consistency" else "fd")  # checked first
    fit(_config(raw), "adapt", progress=not args.no_progress)
    if args.distil:
        fast = {"out": str(args.out / FAST),
                "process": {"name": name, "teacher": str(args.out), "student": args.distil},
                "train": {**train, "steps": args.distil_steps or args.steps, "lr": STRATEGIES["full"].lr}}
        fit(_config(fast), f"adapt --distil ({name})", progress=not args.no_progress)
    return 0


def _config(raw: dict) -> RunConfig:
    try:
        return build_config(raw)
    except ValueError as exc:
        raise CalofmError(str(exc)) from None


def study(args) -> int:
    if is_sequence(args.config):
        if args.cluster:
            raise InputError("--cluster", f"{args.config} is a sequence: each step adapts the model the step before "
                                          "left, so its steps run in order")
        run_sequence(args.config, progress=not args.no_progress)
    else:
        run_study(args.config, progress=not args.no_progress, cluster=cluster_spec(args) if args.cluster else None,
                  retries=args.retries)
    return 0
