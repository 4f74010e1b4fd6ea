"""One training run from a validated config: assemble, train with periodic validation, save.

Shared by ``calofm train``, ``calofm adapt`` and the study runner, so all three write the same
run folder (config.yaml, checkpoint, model, metrics.csv, validation.csv) and resume alike.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from calofm.core.errors import InputError
from calofm.core.files import atomic_path, check_output
from calofm.data.points import LayerCountTransform, PointCloudTransform
from calofm.evaluate.distances import wasserstein_normalised
from calofm.evaluate.samples import sample_from_arrays
from calofm.evaluate.suite import quick_metrics
from calofm.inference import CALIBRATION, load_model, trained_model
from calofm.train.config import RunConfig
from calofm.train.loop import MODEL, Trainer
from calofm.train.run import assemble


def validator(validation, describe: dict, n_showers: int, out: Path):
    """Validation callback: generate each detector's validation conditions, compare with Geant4 (for
    a ShowerFlow run, the points per layer)."""
    def validate(sampler, step: int) -> dict:
        model = trained_model(describe, sampler, out / MODEL)
        row = {}
        for d in validation:
            s = d.showers.take(np.arange(min(n_showers, len(d.showers))))
            generated = np.concatenate(list(model.generate(s.energy, s.theta, s.phi, d.name, seed=step)))
            if model.representation_kind == LayerCountTransform.kind:
                metrics = count_metrics(model.voxels.layer_counts(s, d.readout), generated)
            else:
                metrics = quick_metrics(sample_from_arrays("geant4", s.showers, s.energy, d.mesh),
                                        sample_from_arrays("model", generated, s.energy, d.mesh), d.mesh)
            row.update({f"{d.name}/{k}": v for k, v in metrics.items()})
        return row
    return validate


def count_metrics(reference: np.ndarray, generated: np.ndarray) -> dict:
    """Points per layer (N, L) against Geant4's: normalised W1 of the total, and its mean over the
    layers that hold points."""
    per_layer = [wasserstein_normalised(reference[:, i], generated[:, i])
                 for i in range(reference.shape[1]) if reference[:, i].std() > 0]
    return {"w1_points": wasserstein_normalised(reference.sum(1), generated.sum(1)),
            "w1_layer_points": float(np.mean(per_layer))}


def calibrate(out: Path, detectors, log: Callable[[str], None]) -> None:
    """Fit the occupancy calibration of a point-cloud run on its training ``detectors`` and store it."""
    model = load_model(out)
    fits = {d.name: model.fit_calibration(d).to_dict() for d in detectors}
    with atomic_path(out / CALIBRATION) as tmp:
        tmp.write_text(json.dumps(fits, indent=1))
    log(f"occupancy calibration fitted on {', '.join(fits)} -> {out / CALIBRATION}")


def fit(config: RunConfig, source: str | Path = "config", progress: bool = True,
        log: Callable[[str], None] = print) -> dict:
    """Train the run ``config`` describes into ``config.out`` (resuming if it was interrupted).

    ``source`` names the config in error messages. Returns the loop's summary plus the run's
    description (with ``adapted``: the strategy's parameter accounting, for adaptations).
    """
    if not config.out:
        raise InputError(source, "no run folder: set 'out' in the config or pass --out")
    out = check_output(config.out, folder=True)
    try:
        built = assemble(config)
    except ValueError as exc:
        raise InputError(source, str(exc)) from None
    for note in built.notes:
        log(f"note: {note}")
    what = config.process.name
    if built.adaptation:
        a = built.adaptation
        what = f"{built.describe['process']} adaptation ({a.strategy}) of {config.adapt.base}"
    trainable = sum(p.numel() for p in built.process.parameters() if p.requires_grad)
    log(f"training {what} on {', '.join(f'{k} ({v})' for k, v in built.describe['n_train'].items())} showers: "
        f"{trainable:,} trainable parameters"
        + (f" ({built.adaptation.percent:.2f} % of the model)" if built.adaptation else "")
        + f", {config.train.steps} steps -> {out}")
    validation = [d for d in built.validation if len(d.showers)]
    validate = validator(validation, built.describe, config.train.validate_showers, out) if validation else None
    trainer = Trainer(built.process, built.x, built.cond, config.train, out, built.describe, validate,
                      progress=progress, log=log, lr_scale=built.lr_scale, fold=built.fold)
    # the run folder appears only once everything before the first step has worked
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    for name, origin in built.files.items():  # files the model needs beside it (a ShowerFlow model)
        with atomic_path(out / name) as tmp:
            shutil.copyfile(origin, tmp)
    result = trainer.run()
    fitted = out / CALIBRATION
    if built.describe["voxels"]["kind"] == PointCloudTransform.kind and (
            not fitted.exists() or fitted.stat().st_mtime < (out / MODEL).stat().st_mtime):
        calibrate(out, built.train, log)
    loss = "" if result["loss"] is None else f", last logged loss {result['loss']:.4f}"
    log(f"done: step {result['step']}{loss}, {result['seconds']:.0f} s; model in {out / 'model.safetensors'}")
    return {**result, "describe": built.describe}
