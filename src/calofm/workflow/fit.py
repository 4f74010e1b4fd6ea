"""One training run from a validated config: assemble, train with periodic validation, save.

Shared by ``calofm train``, ``calofm adapt`` and the study runner, so all three write the same
run folder (config.yaml, checkpoint, model, metrics.csv, validation.csv) and resume alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml

from calofm.core.errors import InputError
from calofm.evaluate.samples import sample_from_arrays
from calofm.evaluate.suite import quick_metrics
from calofm.train.config import RunConfig
from calofm.train.loop import Trainer
from calofm.train.run import TrainedModel, assemble


def validator(validation, describe: dict, n_showers: int):
    """Validation callback: generate each detector's validation conditions, compare with Geant4."""
    def validate(sampler, step: int) -> dict:
        model = TrainedModel(describe, sampler)
        row = {}
        for d in validation:
            s = d.showers.take(np.arange(min(n_showers, len(d.showers))))
            rows = np.concatenate(list(model.generate(s.energy, s.theta, s.phi, d.name, seed=step)))
            reference = sample_from_arrays("geant4", s.showers, s.energy, d.readout)
            generated = sample_from_arrays("model", rows, s.energy, d.readout)
            row.update({f"{d.name}/{k}": v for k, v in quick_metrics(reference, generated, d.readout).items()})
        return row
    return validate


def fit(config: RunConfig, source: str | Path = "config", progress: bool = True,
        log: Callable[[str], None] = print) -> dict:
    """Train the run ``config`` describes into ``config.out`` (resuming if it was interrupted).

    ``source`` names the config in error messages. Returns the loop's summary plus the run's
    description (with ``adapted``: the strategy's parameter accounting, for adaptations).
    """
    if not config.out:
        raise InputError(source, "no run folder: set 'out' in the config or pass --out")
    out = Path(config.out)
    try:
        built = assemble(config)
    except ValueError as exc:
        raise InputError(source, str(exc)) from None
    for note in built.notes:
        log(f"note: {note}")
    what = config.process.name
    if built.adaptation:
        a = built.adaptation
        what = f"{what} adaptation ({a.strategy}) of {config.adapt.base}"
    trainable = sum(p.numel() for p in built.process.parameters() if p.requires_grad)
    log(f"training {what} on {', '.join(f'{k} ({v})' for k, v in built.describe['n_train'].items())} showers: "
        f"{trainable:,} trainable parameters"
        + (f" ({built.adaptation.percent:.2f} % of the model)" if built.adaptation else "")
        + f", {config.train.steps} steps -> {out}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    validation = [d for d in built.validation if len(d.showers)]
    validate = validator(validation, built.describe, config.train.validate_showers) if validation else None
    trainer = Trainer(built.process, built.x, built.cond, config.train, out, built.describe, validate,
                      progress=progress, log=log, lr_scale=built.lr_scale, fold=built.fold)
    result = trainer.run()
    loss = "" if result["loss"] is None else f", last logged loss {result['loss']:.4f}"
    log(f"done: step {result['step']}{loss}, {result['seconds']:.0f} s; model in {out / 'model.safetensors'}")
    return {**result, "describe": built.describe}
