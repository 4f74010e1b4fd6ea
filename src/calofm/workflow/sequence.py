"""Additive-growth studies (`calofm study` with ``steps``): the next-token foundation model's sequence of adaptations.

A sequence starts from a pre-trained run and adds one class (a material or a particle) per step,
each step adapting the model the previous one left, so the last model knows every class. A step
with a ``strategy`` (``expert`` or ``particle``, see :mod:`calofm.adapt`; any strategy of the
family) trains on ``size`` showers of its target's training file; a step without one evaluates the
current model as it is (the pre-training classes). Every step generates the conditions of its
target's test file and compares them with half A of it: the W1 and quantile KL of each observable
(cell energy, energy ratio and sum, occupancy, z centre of gravity, layer and radial profiles),
their six-observable geometric means, the classifier AUC and FPD, beside the Geant4 floor (the
test file's two halves against each other). At the end, the last model
regenerates every earlier step's showers with the same seed, and the report says whether they
are bit-identical (the additive strategies promise it).

Folder: ``<label>/`` per step as a study cell (``cells/<label>-n<size>-s<seed>/`` with ``run/``,
``generated.h5``, ``metrics.json``, ``result.json``, ``floor.json``; finished steps are not rerun),
``metrics.json`` (schema ``calofm-sequence/1``), ``report.md`` and ``sequence_w1.png``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from calofm.core.errors import InputError
from calofm.core.files import atomic_path
from calofm.data import open_showers
from calofm.evaluate.distances import SIX_OBSERVABLES
from calofm.evaluate.tables import markdown_table
from calofm.inference import load_model
from calofm.train.config import from_dict
from calofm.workflow.study import (
    EvalConfig,
    Reference,
    StrategyConfig,
    StudyConfig,
    TargetConfig,
    cached,
    cell_config,
    cell_folder,
    evaluate_model,
    metric_values,
    run_cell,
)

SCHEMA = "calofm-sequence/1"
OBSERVABLES = (*SIX_OBSERVABLES, "z_centre")


@dataclass
class StepConfig:
    target: TargetConfig = field(default_factory=TargetConfig)  # train only for a step that trains
    strategy: str | None = None     # none: evaluate the current model on the target
    args: dict = field(default_factory=dict)
    size: int | None = None         # training showers (default: the whole training file)
    train: dict = field(default_factory=dict)


@dataclass
class SequenceConfig:
    out: str = ""
    base: str = ""                  # the pre-trained run the first step starts from
    steps: dict = field(default_factory=dict)  # label -> StepConfig fields, in order
    seed: int = 0
    train: dict = field(default_factory=dict)  # train.* keys of every step
    evaluate: EvalConfig = field(default_factory=EvalConfig)


def is_sequence(path: str | Path) -> bool:
    """Whether the study YAML at ``path`` is a sequence (has ``steps``)."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read the study ({exc.__class__.__name__})") from None
    return isinstance(raw, dict) and "steps" in raw


def load_sequence(path: str | Path) -> tuple[SequenceConfig, dict[str, StepConfig]]:
    """Read and check a sequence YAML; errors name the file and the key."""
    path = Path(path)
    try:
        seq = from_dict(SequenceConfig, yaml.safe_load(path.read_text()) or {})
        steps = {str(label): from_dict(StepConfig, spec or {}, f"steps.{label}.") for label, spec in seq.steps.items()}
        problems = [(not seq.out, "out", "name the study folder"), (not seq.base, "base", "name the pre-trained run"),
                    (not steps, "steps", "name at least one")]
        for label, step in steps.items():
            problems += [(not (step.target.name and step.target.test), f"steps.{label}.target", "needs name and test"),
                         (bool(step.strategy) and not step.target.train, f"steps.{label}.target.train",
                          "a step that trains needs a training file"),
                         (step.size is not None and step.size <= 0, f"steps.{label}.size", "must be positive")]
        for bad, key, problem in problems:
            if bad:
                raise ValueError(f"{key}: {problem}")
        for label, step in steps.items():  # every training step's run config, before hours of training
            if step.strategy:
                study, strategies, size = _step_study(seq, label, step, seq.base)
                try:
                    cell_config(study, strategies, label, size, seq.seed)
                except ValueError as exc:
                    raise ValueError(f"steps.{label}: {str(exc).partition(': ')[2] or exc}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read the study ({exc.__class__.__name__})") from None
    except ValueError as exc:
        raise InputError(path, str(exc)) from None
    return seq, steps


def _step_study(seq: SequenceConfig, label: str, step: StepConfig, base: str) -> tuple[StudyConfig, dict, int]:
    """One step as a one-cell study (``run_cell``'s input): (study, strategies, size)."""
    size = step.size
    if size is None and step.target.train:
        with open_showers(step.target.train) as f:
            size = len(f)
    study = StudyConfig(out=str(Path(seq.out) / label), base=base, target=step.target,
                        sizes=[size or 0], seeds=[seq.seed], train=seq.train, evaluate=seq.evaluate)
    strategies = {label: StrategyConfig(strategy=step.strategy, args=step.args, train=step.train)}
    return study, strategies, size or 0


def run_sequence(path: str | Path, progress: bool = True, log=print, preamble: str = "") -> dict:
    """Run (or finish) every step of the sequence at ``path``; write metrics.json, report.md and the plot."""
    seq, steps = load_sequence(path)
    out = Path(seq.out)
    out.mkdir(parents=True, exist_ok=True)
    current, results = seq.base, []
    for i, (label, step) in enumerate(steps.items(), 1):
        study, strategies, size = _step_study(seq, label, step, current)
        log(f"[sequence {i}/{len(steps)}] {label}: " + (f"{step.strategy} on {size} {step.target.name} showers from "
                                                         f"{current}" if step.strategy else f"{current} as it is"))
        reference = Reference(study)
        folder = cell_folder(study, label, size, seq.seed)
        if step.strategy:
            result = run_cell(study, strategies, label, size, seq.seed, reference, progress, log)
            current = str(folder / "run")
        else:
            result = _cached_evaluation(study, reference, folder, current, progress)
        comparison = json.loads((folder / "metrics.json").read_text())
        floor = cached(folder / "floor.json", reference.floor)
        results.append({**result, "label": label, "target": step.target.name, "model": current, "folder": str(folder),
                        "floor": floor,
                        "observables": {name: {kind: comparison["observables"].get(name, {}).get(kind, {}).get("value")
                                               for kind in ("wasserstein", "kl")} for name in OBSERVABLES}})
    final = load_model(current)
    for r in results:
        r["identical_in_final"] = _regenerates(final, r, seq)
    summary = {"schema": SCHEMA, "steps": results, "final": current, "config": asdict(seq)}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    plot = _plot(results, out)
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(summary, plot, preamble))
    log(f"sequence done: {out / 'report.md'}")
    return summary


def _cached_evaluation(study: StudyConfig, reference: Reference, folder: Path, model: str, progress: bool) -> dict:
    """The result of evaluating ``model`` as it is on the study's target (cached in result.json)."""
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    comparison = evaluate_model(load_model(model), study, reference, folder, study.seeds[0], progress)
    result = {"strategy": None, "size": 0, "seed": study.seeds[0], "trainable": 0, "percent": 0.0,
              **metric_values(comparison)}
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def _regenerates(model, result: dict, seq: SequenceConfig) -> bool:
    """Whether ``model`` generates the step's ``generated.h5`` again, bit for bit (same conditions, seed)."""
    with open_showers(Path(result["folder"]) / "generated.h5") as f:
        before = f.read()
    rows = np.concatenate(list(model.generate(before.energy, before.theta, before.phi, result["target"],
                                              steps=seq.evaluate.steps, seed=1000 + seq.seed)))
    return bool(np.array_equal(rows, before.showers))


def _fmt(value: float | None, scale: float = 100.0) -> str:
    return "-" if value is None else f"{value * scale:.2f}"


def _floor(floor: dict | None) -> str:
    """The test file's half B against half A: what a perfect model would score."""
    return "-" if not floor else f"{_fmt(floor['gm'][0])}, {_fmt(floor['auc'][0], 1)}"


def markdown(summary: dict, plot: str, preamble: str = "") -> str:
    steps = summary["steps"]
    rows = [(r["label"], r["target"], r["strategy"] or "(pre-trained)", r.get("n_train") or "-",
             f"{r['percent']:.2f}", _fmt(r["gm"][0]), _fmt(r["kl"][0]), _fmt(r["auc"][0], 1), _fmt(r["fpd"][0], 1000),
             _floor(r.get("floor")), "bit-identical" if r["identical_in_final"] else "CHANGED") for r in steps]
    lines = ["# Additive-growth sequence (the next-token foundation model)", "", *([preamble, ""] if preamble else []),
             "Each step adapts the model the step before left (the pre-training classes: the pre-trained model as "
             "it is). Values x 10^-2, lower is better; AUC's ideal is 0.5.", "",
             *markdown_table(("step", "class", "strategy", "trained showers", "params trained (%)", "W1 GM", "KL GM",
                              "AUC", "FPD x 10^3", "Geant4 floor: W1 GM, AUC", "final model regenerates it"), rows,
                             compact=True)]
    for kind, title in (("wasserstein", "W1 per observable"), ("kl", "Quantile KL per observable")):
        rows = [(r["label"], *(_fmt(r["observables"][o][kind]) for o in OBSERVABLES)) for r in steps]
        lines += ["", f"## {title} (x 10^-2)", "", *markdown_table(("step", *OBSERVABLES), rows, compact=True)]
    lines += ["", f"![W1 per observable and step]({plot})", "", f"Final model: `{summary['final']}`", ""]
    return "\n".join(lines)


def _plot(results: list[dict], out: Path) -> str:
    """Grouped bars: W1 of every observable (log scale), one colour per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mplhep as hep

    with plt.style.context({**hep.style.ROOT, "text.usetex": False, "font.size": 11}):
        fig, ax = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / len(results)
        for i, r in enumerate(results):
            values = [r["observables"][o]["wasserstein"] or np.nan for o in OBSERVABLES]
            ax.bar(np.arange(len(OBSERVABLES)) + (i - (len(results) - 1) / 2) * width, values, width,
                   color=plt.cm.tab10(i % 10), label=f"{r['label']} ({r['strategy'] or 'pre-trained'})")
        ax.set_xticks(np.arange(len(OBSERVABLES)), [o.replace("_", " ") for o in OBSERVABLES], rotation=20)
        ax.set_yscale("log")
        ax.set_ylabel("W1 (normalised)")
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        name = "sequence_w1.png"
        with atomic_path(out / name) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
    return name
