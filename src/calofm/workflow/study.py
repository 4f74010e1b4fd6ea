"""Data-efficiency studies (`calofm study`): strategies x training sizes x seeds on one target detector.

Each cell adapts a base run (EDM, flow matching or point clouds, of any model family; a strategy
entry may name its own ``base``, so one study can place families side by side) with one strategy
(or trains from scratch) on a nested subset of the target's training file drawn with the cell's
seed, generates the conditions of the held-out test file, and evaluates against it. A point-cloud
cell first adapts the base's ShowerFlow (``cells/counts-<full|scratch>-n<size>-s<seed>/``, shared
by the cells of that size and seed). The summary follows table 2 of the CaloClouds II transfer study:
the six-observable W1 and quantile-KL geometric means x 10^-2 as mean +- standard error over seeds (one seed: the
metric's own error), the share of parameters trained, plus the high-level classifier AUC and FPD;
the gain of each strategy over the scratch row of the same base in %, and one plot per metric
against training size.

Folder: ``cells/<label>-n<size>-s<seed>/`` (``run/`` the training run, ``generated.h5`` (run
``calofm evaluate`` on it for every plot), ``metrics.json`` the suite's comparison with half A of
the test file, ``result.json`` written last: a cell with it is not rerun; one
without resumes its training from the last checkpoint), ``metrics.json`` (schema
``calofm-study/1``: ``rows`` label -> {strategy, percent, trainable, sizes: {size: {gm, kl, auc, fpd:
{value, error}, seeds}}, mean}, ``gain_over_scratch``, ``floor`` (test half B vs half A; cached in floor.json),
``cells``), ``report.md``, ``*.png``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from calofm.adapt import STRATEGIES
from calofm.core.cluster import ClusterSpec, run_tasks
from calofm.core.errors import InputError
from calofm.core.files import atomic_path
from calofm.data.datasets import read_detector
from calofm.evaluate.distances import observable_distances
from calofm.evaluate.fpd import sample_batches
from calofm.evaluate.samples import load_sample, sample_from_arrays
from calofm.evaluate.suite import Settings, compare, observables, split_reference
from calofm.evaluate.tables import markdown_table
from calofm.inference import load_model
from calofm.train.config import RunConfig, build_config, from_dict
from calofm.train.run import COUNTS
from calofm.train.saved import resolve
from calofm.workflow.fit import fit

SCHEMA = "calofm-study/1"
METRICS = {  # key in result.json: (label, scale shown in tables)
    "gm": ("six-observable W1 geometric mean x 10^-2", 100.0),
    "kl": ("six-observable quantile-KL geometric mean x 10^-2", 100.0),
    "auc": ("high-level classifier AUC", 1.0),
    "fpd": ("FPD x 10^3", 1000.0),
}


@dataclass
class TargetConfig:
    name: str = ""                  # the new detector's name (its one-hot slot in the adapted model)
    train: str = ""                 # Geant4 showers to draw the training subsets from
    test: str = ""                  # held-out Geant4 showers: the reference of every evaluation


@dataclass
class StrategyConfig:
    strategy: str | None = None     # default: the label
    base: str | None = None         # the run this row adapts (default: the study's base)
    model: dict = field(default_factory=dict)  # adapt.model: the patch of a target of another geometry
    args: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)  # train.* keys for this strategy (lr defaults per strategy)


@dataclass
class EvalConfig:
    n: int | None = None            # generated showers (default: as many as the test file)
    steps: int | None = None        # sampler steps (default: the model's)
    classifier_epochs: int = 20
    seed: int = 0


@dataclass
class StudyConfig:
    out: str = ""
    base: str = ""                  # pre-trained run (EDM or flow matching) of rows that name none
    target: TargetConfig = field(default_factory=TargetConfig)
    strategies: dict = field(default_factory=dict)  # label -> StrategyConfig fields
    sizes: list = field(default_factory=list)
    seeds: list = field(default_factory=lambda: [0])
    train: dict = field(default_factory=dict)       # train.* keys for every cell
    counts_train: dict = field(default_factory=dict)  # point-cloud bases: train.* keys of the ShowerFlow cells
    evaluate: EvalConfig = field(default_factory=EvalConfig)


def load_study(path: str | Path) -> tuple[StudyConfig, dict[str, StrategyConfig]]:
    """Read and check a study YAML; errors name the file and the key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        study = from_dict(StudyConfig, raw)
        strategies = {str(label): from_dict(StrategyConfig, spec or {}, f"strategies.{label}.")
                      for label, spec in study.strategies.items()}
        problems = [(not study.out, "out", "name the study folder"),
                    (not study.base and not all(s.base for s in strategies.values()), "base",
                     "name the pre-trained run (here or in every strategy)"),
                    (not all((study.target.name, study.target.train, study.target.test)), "target",
                     "needs name, train and test"),
                    (not strategies, "strategies", "name at least one"),
                    (not study.sizes or not all(isinstance(n, int) and n > 0 for n in study.sizes), "sizes",
                     "a list of positive training sizes"),
                    (not study.seeds or not all(isinstance(s, int) for s in study.seeds), "seeds",
                     "a list of integers")]
        for bad, key, problem in problems:
            if bad:
                raise ValueError(f"{key}: {problem}")
        for label in strategies:
            cell_config(study, strategies, label, study.sizes[0], study.seeds[0])  # validates every strategy
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read the study ({exc.__class__.__name__})") from None
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    return study, strategies


def cell_config(study: StudyConfig, strategies: dict[str, StrategyConfig], label: str, size: int,
                 seed: int) -> RunConfig:
    spec = strategies[label]
    strategy = spec.strategy or label
    if strategy not in STRATEGIES:
        raise ValueError(f"strategies.{label}: unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    base = spec.base or study.base
    train = {"lr": STRATEGIES[strategy].lr, **study.train, **spec.train, "seed": seed}
    raw = {"out": str(cell_folder(study, label, size, seed) / "run"), "data": _cell_data(study, size, seed),
           "adapt": {"base": base, "strategy": strategy, "args": spec.args, "model": spec.model},
           "train": train}
    if (resolve(base) / COUNTS).exists():  # a point-cloud base: the points per layer come from the ShowerFlow cell
        raw["model"] = {"counts": str(cell_folder(study, f"counts-{_counts_strategy(strategy)}", size, seed) / "run")}
    try:
        return build_config(raw)
    except ValueError as exc:
        raise ValueError(f"strategies.{label}: {exc}") from None


def _cell_data(study: StudyConfig, size: int, seed: int) -> dict:
    """A cell's data: the nested subset of ``size`` target training showers drawn with ``seed``."""
    return {"detectors": {study.target.name: [study.target.train]}, "n_train": size, "val_fraction": 0.0,
            "split_seed": seed}


def _counts_strategy(strategy: str) -> str:
    """The ShowerFlow's strategy under a PointWise ``strategy`` (CaloClouds II transfer study, section 4.3: from scratch
    for the scratch rows, fully fine-tuned for every other)."""
    return "scratch" if strategy == "scratch" else "full"


def _counts_config(study: StudyConfig, config: RunConfig, size: int, seed: int) -> RunConfig:
    """The ShowerFlow cell the point-cloud cell ``config`` draws its points per layer from (shared
    by the cells of one size and seed)."""
    return build_config({
        "out": config.model.counts, "data": _cell_data(study, size, seed),
        "adapt": {"base": str(resolve(config.adapt.base) / COUNTS),
                  "strategy": _counts_strategy(config.adapt.strategy)},
        # Adam at 1e-4, as table 5 of the CaloClouds II transfer study
        "train": {"lr": 1e-4, **study.train, **study.counts_train, "seed": seed}})


def cell_folder(study: StudyConfig, label: str, size: int, seed: int) -> Path:
    """The folder of the cell (label, size, seed)."""
    return Path(study.out) / "cells" / f"{label}-n{size}-s{seed}"


def run_cell(study: StudyConfig, strategies: dict[str, StrategyConfig], label: str, size: int, seed: int,
             reference: Reference, progress: bool = True, log=print) -> dict:
    """Train, generate and evaluate one cell (or read its finished result)."""
    folder = cell_folder(study, label, size, seed)
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    config = cell_config(study, strategies, label, size, seed)
    if config.model.counts:  # a point-cloud base: its ShowerFlow adapts first
        counts = _counts_config(study, config, size, seed)
        fit(counts, f"{study.out}: ShowerFlow ({counts.adapt.strategy})", progress=progress, log=log)
    trained = fit(config, f"{study.out}: {label}", progress=progress, log=log)
    comparison = evaluate_model(load_model(config.out), study, reference, folder, seed, progress)
    adapted = trained["describe"]["adapted"]
    result = {"label": label, "strategy": adapted["strategy"], "base": config.adapt.base, "size": size, "seed": seed,
              "n_train": trained["describe"]["n_train"][study.target.name],
              "trainable": adapted["trainable"], "percent": adapted["percent"],
              **metric_values(comparison), "seconds": round(time.perf_counter() - t0, 1)}
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def evaluate_model(model, study: StudyConfig, reference: Reference, folder: Path, seed: int,
                   progress: bool = True) -> dict:
    """Generate the test file's conditions for the study's target into ``folder/generated.h5`` and
    compare them with half A of the test file (``folder/metrics.json``); returns the comparison."""
    test, n = reference.showers, min(study.evaluate.n or len(reference.showers), len(reference.showers))
    model.write(folder / "generated.h5", test.energy[:n], test.theta[:n], test.phi[:n], study.target.name,
                steps=study.evaluate.steps, seed=1000 + seed, progress=progress)
    generated, _ = load_sample(folder / "generated.h5", reference.binning)
    comparison = compare(reference.half, generated, reference.binning, reference.settings(len(generated)))
    with atomic_path(folder / "metrics.json") as tmp:
        tmp.write_text(json.dumps(comparison, indent=1))
    return comparison


def held_out_distances(model, reference, seed: int = 1, n_bootstrap: int = 3) -> dict:
    """The CaloClouds II transfer study's six-observable distances of ``model``'s showers, generated
    for the conditions of ``reference`` (a :class:`~calofm.data.datasets.DetectorShowers` whose name
    is the model's class), from its Geant4 showers: a quick held-out check (fm-1's card check, tests)."""
    s = reference.showers
    rows = np.concatenate(list(model.generate(s.energy, s.theta, s.phi, reference.name, seed=seed)))
    g4 = sample_from_arrays("g4", s.showers, s.energy, reference.readout)
    generated = sample_from_arrays("model", rows, s.energy, reference.readout)
    return observable_distances(observables(g4, reference.readout), observables(generated, reference.readout),
                                n_bootstrap=n_bootstrap)


class Reference:
    """The target's test showers: conditions to generate, half A to compare with, half B for the floor."""

    def __init__(self, study: StudyConfig):
        test = read_detector(study.target.name, [study.target.test], regular=False)  # angles filled where absent
        self.showers, self.binning = test.showers, test.readout
        sample = sample_from_arrays("geant4", self.showers.showers, self.showers.energy, self.binning,
                                    self.showers.theta)
        self.classifier_epochs, self.seed = study.evaluate.classifier_epochs, study.evaluate.seed
        halves = split_reference(sample, self.seed)
        self.half, self.other = halves if halves else (sample, None)

    def settings(self, n_generated: int) -> Settings:
        """The suite's settings, FPD/KPD batches sized to the samples (JetNet's defaults assume 10k+
        showers) with 5 x 5 FPD batches instead of 20 x 10: a study compares many cells."""
        n = min(n_generated, len(self.half))
        return Settings(metrics=("distances", "fpd", "classifier"), classifiers=("high",),
                        epochs=self.classifier_epochs, seed=self.seed,
                        fpd_kwargs=sample_batches(n),
                        kpd_kwargs={"batch_size": max(n, 2)})

    def floor(self) -> dict | None:
        """Geant4 half B against half A: what a perfect model would score."""
        if self.other is None:
            return None
        return metric_values(compare(self.half, self.other, self.binning, self.settings(len(self.other))))


def metric_values(comparison: dict) -> dict:
    """(value, error) of the study's metrics from one metrics.json comparison."""
    picks = {"gm": comparison.get("geometric_mean_wasserstein"), "kl": comparison.get("geometric_mean_kl"),
             "fpd": comparison.get("fpd"),
             "auc": comparison.get("classifier", {}).get("high", {}).get("auc")}
    return {key: [(m or {}).get("value"), (m or {}).get("error")] for key, m in picks.items()}


def run_study(path: str | Path, progress: bool = True, log=print, preamble: str = "",
              cluster: ClusterSpec | None = None, retries: int = 2) -> dict:
    """Run (or finish) every cell of the study at ``path``; write metrics.json, report.md and plots.
    ``preamble`` (markdown) opens the report. With ``cluster``, the cells run in parallel, one Dask
    task each (:mod:`calofm.core.cluster`; the study's files must be where the workers see them)."""
    study, strategies = load_study(path)
    out = Path(study.out)
    out.mkdir(parents=True, exist_ok=True)
    reference = Reference(study)
    cells = [(label, size, seed) for size in study.sizes for label in strategies for seed in study.seeds]
    if cluster is not None:
        results = run_tasks(cluster, _cluster_cell, [(str(path), *cell, reference) for cell in cells], "study cells",
                            out / "logs", retries, progress)
    else:
        results = []
        for i, (label, size, seed) in enumerate(cells, 1):
            log(f"[study {i}/{len(cells)}] {label}, {size} showers, seed {seed}")
            results.append(run_cell(study, strategies, label, size, seed, reference, progress, log))
    floor = cached(out / "floor.json", reference.floor)
    summary = {"schema": SCHEMA, **summarise(results), "floor": floor, "config": asdict(study)}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    plot_paths = plot(summary, out)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(summary, plot_paths, preamble))
    for label, gains in summary.get("gain_over_scratch", {}).items():
        log(f"   {label}: geometric mean " + ", ".join(
            f"{'-' if g is None else f'{g:+.0f} %'} at {size}" for size, g in gains.items()) + " vs scratch")
    log(f"study done: {out / 'report.md'}")
    return summary


def _cluster_cell(path: str, label: str, size: int, seed: int, reference: Reference) -> dict:
    """One cluster task: one cell of the study at ``path`` (its config read in the worker)."""
    study, strategies = load_study(path)
    return run_cell(study, strategies, label, size, seed, reference, progress=False, log=lambda *_: None)


def cached(path: Path, compute):
    """``compute()``'s JSON result, stored at ``path`` so a rerun reads it."""
    if path.exists():
        return json.loads(path.read_text())
    value = compute()
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value))
    return value


def summarise(results: list[dict]) -> dict:
    """Per (label, size): mean and standard error over seeds of each metric; gain over scratch."""
    labels = list(dict.fromkeys(r["label"] for r in results))
    sizes = sorted({r["size"] for r in results})
    rows = {}
    for label in labels:
        mine = [r for r in results if r["label"] == label]
        row = {"strategy": mine[0]["strategy"], "base": mine[0].get("base"), "percent": mine[0]["percent"],
               "trainable": mine[0]["trainable"], "sizes": {}}
        for size in sizes:
            cell = [r for r in mine if r["size"] == size]
            if cell:
                row["sizes"][str(size)] = {key: mean_error([r.get(key, (None, None)) for r in cell]) for key in METRICS}
                row["sizes"][str(size)]["seeds"] = len(cell)
        row["mean"] = {key: mean_error([r.get(key, (None, None)) for r in mine]) for key in METRICS}
        rows[label] = row
    summary = {"sizes": sizes, "rows": rows, "cells": results}
    scratch = {row["base"]: label for label, row in reversed(rows.items()) if row["strategy"] == "scratch"}
    gains = {label: {size: _gain(rows[scratch[row["base"]]]["sizes"].get(size, {}).get("gm"), cell.get("gm"))
                     for size, cell in row["sizes"].items()}
             for label, row in rows.items() if row["base"] in scratch and label != scratch[row["base"]]}
    if gains:
        summary["gain_over_scratch"] = gains
    return summary


def mean_error(pairs: list) -> dict:
    """Mean and standard error over seeds; with one seed (or identical values), the value's own error."""
    values = np.array([v for v, _ in pairs if v is not None], dtype=float)
    if len(values) < len(pairs) or not len(values):
        return {"value": None, "error": None}
    if len(values) == 1:
        return {"value": float(values[0]), "error": pairs[0][1]}
    return {"value": float(values.mean()), "error": float(values.std(ddof=1) / math.sqrt(len(values)))}


def _gain(scratch: dict | None, other: dict | None) -> float | None:
    """How much lower ``other``'s geometric mean is than scratch's, in % of scratch's."""
    if not scratch or not other or scratch["value"] in (None, 0) or other["value"] is None:
        return None
    return 100.0 * (scratch["value"] - other["value"]) / scratch["value"]


def _fmt(m: dict | None, scale: float) -> str:
    if not m or m.get("value") is None:
        return "-"
    err = m.get("error")
    digits = 3 if scale == 1.0 else 2
    return f"{m['value'] * scale:.{digits}f}" + ("" if err is None else f" ± {err * scale:.{digits}f}")


def markdown(summary: dict, plots: dict[str, str], preamble: str = "") -> str:
    sizes = [str(s) for s in summary["sizes"]]
    floor = summary.get("floor")
    lines = ["# Adaptation study", "", *([preamble, ""] if preamble else []),
             "Rows: strategies; columns: target training showers. Values: mean ± standard error over seeds "
             "(a single seed shows the metric's own uncertainty). Lower is better, except AUC whose ideal is 0.5.",
             ""]
    for key, (label, scale) in METRICS.items():
        rows = [(name, f"{row['percent']:.2f}", *(_fmt(row["sizes"].get(s, {}).get(key), scale) for s in sizes),
                 _fmt(row["mean"][key], scale)) for name, row in summary["rows"].items()]
        if floor and floor.get(key):
            value = {"value": floor[key][0], "error": floor[key][1]}
            rows.append(("Geant4 vs Geant4 (floor)", "-", *(_fmt(value, scale) for _ in sizes), ""))
        lines += [f"## {label}", "", *markdown_table(("strategy", "params (%)", *sizes, "mean"), rows, compact=True)]
        if key in plots:
            lines += ["", f"![{label}]({plots[key]})"]
        lines.append("")
    if "gain_over_scratch" in summary:
        rows = [(name, *("-" if gains.get(s) is None else f"{gains[s]:+.0f}" for s in sizes))
                for name, gains in summary["gain_over_scratch"].items()]
        lines += ["## Gain over scratch (geometric mean, %)", "",
                  *markdown_table(("strategy", *sizes), rows, compact=True), ""]
    rows = []
    for r in summary["cells"]:
        gm, kl, auc, fpd = ({"value": v, "error": e}
                            for v, e in (r.get(k, (None, None)) for k in ("gm", "kl", "auc", "fpd")))
        rows.append((r["label"], r["size"], r["seed"], r["n_train"], f"{r['trainable']:,}",
                     _fmt(gm, 100), _fmt(kl, 100), _fmt(auc, 1), _fmt(fpd, 1000), f"{r['seconds']:.0f}"))
    lines += ["## Cells", "", *markdown_table(("strategy", "size", "seed", "trained showers", "trainable", "GM x 10^-2",
                                               "KL GM x 10^-2", "AUC", "FPD x 10^3", "seconds"), rows, compact=True)]
    return "\n".join(lines) + "\n"


def plot(summary: dict, out: Path) -> dict[str, str]:
    """One PNG per metric: against training size (log x, one line per strategy), or against strategy
    where the study has one size. Distances are drawn on a log axis, so the Geant4 floor, often ten
    times below the models, stays visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    paths = {}
    one_size = len(summary["sizes"]) == 1
    bases = list(dict.fromkeys(row.get("base") for row in summary["rows"].values()))
    with plt.style.context({**hep.style.ROOT, "text.usetex": False, "font.size": 11}):
        for key, (label, scale) in METRICS.items():
            fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(summary["rows"])) if one_size else 6, 4.5))
            drawn = []
            for i, (name, row) in enumerate(summary["rows"].items()):
                points = [(int(s), c[key]) for s, c in row["sizes"].items() if c[key]["value"] is not None]
                if not points:
                    continue
                y = [p[1]["value"] * scale for p in points]
                err = [(p[1]["error"] or 0.0) * scale for p in points]
                family = bases.index(row.get("base"))  # one marker and line style per base run
                x = [i] if one_size else [p[0] for p in points]
                ax.errorbar(x, y, yerr=err, marker="os^D"[family % 4], ls=["-", "--", ":", "-."][family % 4],
                            color=plt.cm.tab10(i % 10), capsize=3, label=None if one_size else name)
                drawn += y
            floor = summary.get("floor") or {}
            if floor.get(key) and floor[key][0] is not None:
                ax.axhline(floor[key][0] * scale, color="black", ls="--", label="Geant4 vs Geant4")
                drawn.append(floor[key][0] * scale)
            if one_size:
                ax.set_xticks(range(len(summary["rows"])), list(summary["rows"]), rotation=30, ha="right")
                ax.set_xlabel(f"strategy ({summary['sizes'][0]} target showers)")
            else:
                ax.set_xscale("log")
                ax.set_xlabel("target training showers")
            if key != "auc" and drawn and min(drawn) > 0:
                ax.set_yscale("log")
            ax.set_ylabel(label)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=9)
            fig.tight_layout()
            name = f"study_{key}.png"
            with atomic_path(out / name) as tmp:
                fig.savefig(tmp, format="png", dpi=110)
            plt.close(fig)
            paths[key] = name
    return paths
