"""Ship calofm-fm-1 into the package, with the check its tests reproduce.

    .venv/bin/python studies/fm-1/ship.py [--teacher runs/fm-1/pretrain] [--fast runs/fm-1/fast]

Copies the pre-trained run (``fm-1``) and its flow-distilled one-step student (``fm-1-fast``) to
``src/calofm/shipped/<name>/`` and writes ``card.json`` beside each: the six-observable GM of the
shipped weights on a fixed sample, 400 Geant4 electrons of 2-8 GeV in par04-siw (seed 0, two
workers: the sample the test suite simulates as its ``geant4_presets`` fixture), generated with
seed 1. ``tests/test_fm1.py`` regenerates it and checks the GM within the stated error.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from calofm.core.files import atomic_path
from calofm.data.datasets import read_detector
from calofm.evaluate.distances import six_observable_geometric_mean
from calofm.inference import load_model
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, simulate
from calofm.workflow.study import held_out_distances

SHELF = Path("src/calofm/shipped")
CHECK = {"preset": "par04-siw", "particle": "e-", "energy": "loguniform:2:8", "n": 400, "seed": 0, "workers": 2,
         "class": "par04-siw-e-", "generate_seed": 1}


def check_sample(folder: Path) -> Path:
    """The card check's Geant4 showers (simulated once, then read from ``folder``)."""
    path = folder / f"{CHECK['preset']}.h5"
    if not path.exists():
        gun = Gun(CHECK["particle"], Spectrum.parse(CHECK["energy"]))
        simulate(Run(get_detector(CHECK["preset"]), gun, CHECK["n"], seed=CHECK["seed"]), path,
                 workers=CHECK["workers"], progress=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=Path("runs/fm-1/pretrain"), help="the pre-training run")
    parser.add_argument("--fast", type=Path, default=Path("runs/fm-1/fast"), help="its flow-distilled student")
    parser.add_argument("--check-data", type=Path, default=Path("runs/fm-1/check"), help="where the check sample lies")
    args = parser.parse_args()
    args.check_data.mkdir(parents=True, exist_ok=True)
    reference = read_detector(CHECK["class"], [check_sample(args.check_data)])
    for name, run in (("fm-1", args.teacher), ("fm-1-fast", args.fast)):
        folder = SHELF / name
        folder.mkdir(parents=True, exist_ok=True)
        for file in ("model.safetensors", "model.json"):
            with atomic_path(folder / file) as tmp:
                shutil.copyfile(run / file, tmp)
        model = load_model(folder)
        gm, error = six_observable_geometric_mean(held_out_distances(model, reference, seed=CHECK["generate_seed"]))
        card = {"check": {**CHECK, "gm": gm, "error": error, "steps": model.default_steps}}
        with atomic_path(folder / "card.json") as tmp:
            tmp.write_text(json.dumps(card, indent=1) + "\n")
        print(f"{name}: {model.path} ({model.path.stat().st_size / 1e6:.1f} MB), check GM {gm:.4f} +- {error:.4f}")


if __name__ == "__main__":
    main()
