"""`calofm demo`: the whole product on built-in defaults, needing no files.

The main job (:func:`run_demo`) starts from the shipped foundation model calofm-fm-1: Geant4
electrons in the held-out detector par04-scipb -> adapt fm-1 to 100 of them with scratch (the
same architecture, fresh weights, the same budget), full fine-tuning, BitFit and LoRA over two
seeds -> evaluate each against held-out Geant4 showers -> ``report.md`` (table 2 of the CaloClouds
II transfer study with uncertainties, the gain over scratch, metric plots on a log axis with the
Geant4 floor, and Geant4 against the best adapted model and scratch for the energy ratio, the
longitudinal and radial profiles and the cell-energy spectrum) and ``metrics.json``.

``pretrain=True`` keeps the earlier job for users who want to reproduce pre-training at toy scale:
Geant4 electrons in two presets (par04-siw, ild-w) -> pre-train a small CaloDiT (EDM) on the two
(``families`` adds CaloDREAM++) -> the same adaptation study. Scales: ``cpu`` (default, 2 cores),
``gpu`` (a size worth reporting), ``smoke`` (a one-minute wiring check for the tests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from calofm.core.files import atomic_path
from calofm.data.preprocess import VOXEL_THRESHOLD
from calofm.evaluate import plots
from calofm.evaluate.samples import load_sample
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, simulate
from calofm.train.config import build_config
from calofm.workflow.fit import fit
from calofm.workflow.study import run_study

PRETRAIN, TARGET = ("par04-siw", "ild-w"), "par04-scipb"
FOUNDATION = "fm-1"  # the shipped model the main job adapts
ADAPT_STRATEGIES = {"scratch": {}, "full": {}, "bitfit": {}, "lora": {"args": {"r": 8, "alpha": 8}}}


@dataclass
class AdaptScale:
    """The main job's sizes: Geant4 target showers, the study's cells and their budgets."""

    energy: str                     # GeV spectrum of the target showers (fm-1 knows 1-100 GeV)
    n_target: int                   # target training pool
    n_test: int                     # held-out target showers
    sizes: list[int]
    seeds: list[int]
    adapt: dict                     # train.* of every cell
    evaluate: dict = field(default_factory=dict)


ADAPT_SCALES = {
    "cpu": AdaptScale(energy="loguniform:1:100", n_target=100, n_test=400, sizes=[100], seeds=[0, 1],
                      adapt={"steps": 200, "batch_size": 64, "checkpoint_every": 200},
                      evaluate={"classifier_epochs": 20}),
    "gpu": AdaptScale(energy="loguniform:1:100", n_target=1000, n_test=5000, sizes=[100, 1000], seeds=[0, 1, 2],
                      adapt={"steps": 5000, "batch_size": 256, "precision": "bf16"},
                      evaluate={"classifier_epochs": 50}),
    "smoke": AdaptScale(energy="loguniform:2:6", n_target=40, n_test=100, sizes=[40], seeds=[0],
                        adapt={"steps": 2, "batch_size": 16}, evaluate={"classifier_epochs": 2, "steps": 1}),
}


@dataclass
class Scale:
    energy: str                     # GeV spectrum of every sample
    n_pretrain: int                 # showers per pre-training detector
    n_target: int                   # target training pool (the study draws its sizes from it)
    n_test: int                     # held-out target showers: the reference of every evaluation
    sizes: list[int]
    seeds: list[int]
    model: dict                     # DiT arguments
    pretrain: dict                  # train.* of the pre-training run
    adapt: dict                     # train.* of every adaptation cell
    evaluate: dict = field(default_factory=dict)
    process: dict = field(default_factory=dict)     # EDM arguments (sigma_data: measured from the data)
    strategies: dict = field(default_factory=lambda: {
        "scratch": {}, "full": {}, "bitfit": {}, "lora": {"args": {"r": 8, "alpha": 8}}})
    vit: dict = field(default_factory=dict)         # CaloDREAM++ arguments (model.args of the vit backbone)
    vit_process: dict = field(default_factory=dict)  # its flow-matching arguments
    vit_strategies: dict = field(default_factory=lambda: {"scratch": {}, "full": {}, "reinit": {}})


SCALES = {
    "cpu": Scale(energy="loguniform:2:20", n_pretrain=600, n_target=100, n_test=400, sizes=[100], seeds=[0, 1],
                 model={"patch": [3, 4, 5], "dim": 72, "depth": 2, "heads": 4, "mlp_dim": 144},
                 pretrain={"steps": 1200, "batch_size": 64, "lr": 2e-3, "checkpoint_every": 400},
                 adapt={"steps": 200, "batch_size": 64, "checkpoint_every": 200},
                 evaluate={"classifier_epochs": 20, "steps": 16},
                 vit={"patch": [5, 16, 3], "dim": 72, "depth": 2, "heads": 4, "mlp_dim": 144,
                      "energy": {"dim": 64, "heads": 4, "encoder_layers": 2, "decoder_layers": 2, "ff_dim": 128}},
                 vit_process={"steps": 8}),
    "gpu": Scale(energy="loguniform:1:100", n_pretrain=10_000, n_target=1000, n_test=5000, sizes=[100, 1000],
                 seeds=[0, 1, 2], model={},  # the CaloDiT-2 defaults: 6 blocks, 384 dims
                 pretrain={"steps": 20_000, "batch_size": 256, "lr": 5e-4, "precision": "bf16", "validate_every": 5000},
                 adapt={"steps": 5000, "batch_size": 256, "precision": "bf16"},
                 evaluate={"classifier_epochs": 50}),  # vit: the CaloDREAM++ defaults (6 blocks, 480 dims, RK4 20)
    "smoke": Scale(energy="loguniform:2:6", n_pretrain=60, n_target=40, n_test=400, sizes=[40], seeds=[0],
                   model={"patch": [3, 4, 5], "dim": 48, "depth": 1, "heads": 2, "mlp_dim": 96},
                   pretrain={"steps": 30, "batch_size": 32, "lr": 2e-3},
                   adapt={"steps": 10, "batch_size": 32}, evaluate={"classifier_epochs": 2, "steps": 4},
                   vit={"patch": [5, 16, 3], "dim": 24, "depth": 1, "heads": 2, "mlp_dim": 48,
                        "energy": {"dim": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_dim": 32}},
                   vit_process={"steps": 2}),
}


FAMILIES = {"dit": "CaloDiT-2 (EDM)", "vit": "CaloDREAM++ (ViT, flow matching)"}


def run_demo(out: str | Path, scale: str = "cpu", workers: int = 2, device: str = "auto", seed: int = 0,
             progress: bool = True, log=print, model: str | None = None) -> dict:
    """Simulate the target, adapt ``model`` (default: the shipped fm-1) with each strategy, evaluate,
    draw the physics plots; returns the study summary."""
    s, out, model = ADAPT_SCALES[scale], Path(out), model or FOUNDATION
    t0 = time.perf_counter()
    data = out / "data"
    gun = Gun("e-", Spectrum.parse(s.energy))
    for i, (n, stem) in enumerate([(s.n_target, f"{TARGET}_train"), (s.n_test, f"{TARGET}_test")]):
        log(f"1. Geant4: {n} electrons ({s.energy} GeV) in {TARGET} -> {data / stem}.h5")
        simulate(Run(get_detector(TARGET), gun, n, seed + 10 + i), data / f"{stem}.h5", workers=workers,
                 progress=progress)
    t_sim = time.perf_counter() - t0
    log(f"2. adapting {model} to {TARGET} with {', '.join(ADAPT_STRATEGIES)} on {s.sizes} showers, seeds {s.seeds}")
    path = write_study(out, data, ADAPT_STRATEGIES, s.sizes, [seed + k for k in s.seeds],
                       {"device": device, **s.adapt}, s.evaluate, base=model)
    preamble = (f"calofm demo, scale `{scale}`: {model} adapted to {TARGET}, a detector it has never seen, from "
                f"{' and '.join(map(str, s.sizes))} Geant4 electrons ({s.energy} GeV), each strategy trained "
                f"{s.adapt['steps']} steps; scratch is the same architecture from fresh weights with the same "
                f"budget. Geant4 test set of {s.n_test}. Geant4 took {t_sim / 60:.1f} min.")
    summary = run_study(path, progress=progress, log=log, preamble=preamble)
    log("3. physics plots: Geant4 against the best adapted model and scratch")
    section = physics_section(summary, out, data / f"{TARGET}_test.h5")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text((out / "report.md").read_text() + section)
    log(f"4. report: {out / 'report.md'} ({(time.perf_counter() - t0) / 60:.1f} min in all)")
    return summary


def write_study(out: Path, data: Path, strategies: dict, sizes: list[int], seeds: list[int], train: dict,
                evaluate: dict, base: str | None = None) -> Path:
    """``out/study.yaml``: the adaptation study of the target's Geant4 files in ``data``."""
    study = {"out": str(out), **({"base": base} if base else {}),
             "target": {"name": TARGET, "train": str(data / f"{TARGET}_train.h5"),
                        "test": str(data / f"{TARGET}_test.h5")},
             "strategies": strategies, "sizes": sizes, "seeds": seeds, "train": train, "evaluate": evaluate}
    path = out / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def physics_section(summary: dict, out: Path, test: Path) -> str:
    """Draw Geant4 against the adapted strategy with the lowest GM and against scratch (first seed,
    largest size) for the observables a physicist looks at first; the report's markdown for them."""
    rows, size, seed = summary["rows"], max(summary["sizes"]), summary["config"]["seeds"][0]
    gm = {label: row["sizes"].get(str(size), {}).get("gm", {}).get("value") for label, row in rows.items()}
    ranked = sorted((gm[label], label) for label, row in rows.items()
                    if row["strategy"] != "scratch" and gm[label] is not None)
    picks = [label for _, label in ranked[:1]] + [label for label, row in rows.items() if row["strategy"] == "scratch"]
    reference, binning = load_sample(test)
    samples = {label: load_sample(out / "cells" / f"{label}-n{size}-s{seed}" / "generated.h5", binning)[0]
               for label in picks[:2]}
    figures = {"physics_energy_ratio.png": "energy ratio E_dep / E_inc",
               "physics_longitudinal.png": "longitudinal profile", "physics_radial.png": "radial profile",
               "physics_cell_energy.png": "cell-energy spectrum"}
    ratio = {label: g.features.e_tot / g.features.e_inc for label, g in samples.items()}
    plots.histogram(reference.features.e_tot / reference.features.e_inc, ratio, "E_dep / E_inc",
                    out / "physics_energy_ratio.png")
    layers = np.array([i for i, layer in enumerate(binning.layers) if layer.n_voxels])
    plots.profile(reference.features.e_layer.mean(0), {k: g.features.e_layer.mean(0) for k, g in samples.items()},
                  layers, "layer", out / "physics_longitudinal.png")
    edges = binning.radial_edges()
    plots.profile(reference.features.e_radial.mean(0), {k: g.features.e_radial.mean(0) for k, g in samples.items()},
                  (edges[:-1] + edges[1:]) / 2, "r [mm]", out / "physics_radial.png")
    cells = reference.voxel_energies[reference.voxel_energies >= VOXEL_THRESHOLD]  # the models' own cut
    plots.histogram(cells, {k: g.voxel_energies for k, g in samples.items()},
                    f"cell energy [MeV], above {VOXEL_THRESHOLD * 1e3:.2f} keV", out / "physics_cell_energy.png",
                    log=True)
    lines = ["", "## Geant4 against the best adapted model and scratch", "",
             f"{' and '.join(samples)} (seed {seed}, {size} target showers) against all {len(reference)} held-out "
             "Geant4 showers; the lower panels are model / Geant4.", ""]
    return "\n".join(lines + [f"![{title}]({name})" for name, title in figures.items()]) + "\n"


def run_pretrain_demo(out: str | Path, scale: str = "cpu", workers: int = 2, device: str = "auto", seed: int = 0,
                      progress: bool = True, log=print, families=("dit",)) -> dict:
    """The toy-scale path: simulate, pre-train each family, adapt with its strategies, evaluate;
    returns the study summary."""
    s, out = SCALES[scale], Path(out)
    t0 = time.perf_counter()
    data = out / "data"
    gun = Gun("e-", Spectrum.parse(s.energy))
    samples = [(name, s.n_pretrain, name) for name in PRETRAIN]
    samples += [(TARGET, s.n_target, f"{TARGET}_train"), (TARGET, s.n_test, f"{TARGET}_test")]
    for i, (detector, n, stem) in enumerate(samples):
        log(f"1. Geant4: {n} electrons ({s.energy} GeV) in {detector} -> {data / stem}.h5")
        simulate(Run(get_detector(detector), gun, n, seed + i), data / f"{stem}.h5", workers=workers,
                 progress=progress)
    t_sim = time.perf_counter() - t0

    runs = {"dit": ("pretrain", {"backbone": "dit", "args": s.model}, {"name": "edm", "args": s.process}),
            "vit": ("pretrain-vit", {"backbone": "vit", "args": s.vit}, {"name": "cfm", "args": s.vit_process})}
    strategies = {}
    for family in families:
        folder, model, process = runs[family]
        log(f"2. pre-training {FAMILIES[family]} on {' + '.join(PRETRAIN)}")
        pretrain = {"out": str(out / folder),
                    "data": {"detectors": {name: [str(data / f"{name}.h5")] for name in PRETRAIN}, "val_fraction": 0.1},
                    "model": model, "process": process,
                    "train": {"seed": seed, "device": device, "validate_showers": 200, **s.pretrain}}
        fit(build_config(pretrain), f"demo pre-training ({family})", progress=progress, log=log)
        if family == "dit":  # the CaloDiT-2 rows keep their plain labels
            strategies.update({label: {**spec, "base": str(out / folder)} for label, spec in s.strategies.items()})
        else:
            strategies.update({f"{family}-{label}": {"strategy": label, **spec, "base": str(out / folder)}
                               for label, spec in s.vit_strategies.items()})
    t_pre = time.perf_counter() - t0 - t_sim

    log(f"3. adapting to {TARGET} with {', '.join(strategies)} on {s.sizes} showers, seeds {s.seeds}")
    path = write_study(out, data, strategies, s.sizes, [seed + k for k in s.seeds], {"device": device, **s.adapt},
                       s.evaluate)
    preamble = (f"calofm demo, scale `{scale}` ({s.energy} GeV electrons), "
                f"{' and '.join(FAMILIES[f] for f in families)}: pre-trained on "
                f"{' + '.join(PRETRAIN)} ({s.n_pretrain} Geant4 showers each), adapted to {TARGET} "
                f"(Geant4 test set of {s.n_test}). Geant4 {t_sim / 60:.1f} min, pre-training {t_pre / 60:.1f} min.")
    summary = run_study(path, progress=progress, log=log, preamble=preamble)
    log(f"4. report: {out / 'report.md'} ({(time.perf_counter() - t0) / 60:.1f} min in all)")
    return summary

