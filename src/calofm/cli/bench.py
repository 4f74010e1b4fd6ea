"""`calofm bench`: generation time per shower beside Geant4's, measured in one run."""

from __future__ import annotations

import time
from pathlib import Path

from calofm.cli.options import positive_int
from calofm.core.errors import CalofmError
from calofm.core.files import check_output
from calofm.inference import load_model


def add_parsers(sub) -> None:
    p = sub.add_parser("bench", help="generation time per shower beside Geant4's, measured in one run",
                       description="Time a trained model's generation (CPU 1 thread batch 1, CPU batch 100, and on "
                                   "a GPU batch 100 and the largest batch that fits, fp32 and bf16) and Geant4's "
                                   "simulation of the same detector and energy spectrum on one core of this machine; "
                                   "print the table and the speed-up, and write bench.json.")
    p.add_argument("--model", type=Path, required=True,
                   help="run folder (or its model.safetensors), or the name of a shipped model (fm-1)")
    p.add_argument("--detector", help="Geant4 preset to time (default: the preset of the model's first detector, "
                                      "e.g. par04-siw for fm-1's class par04-siw-e-)")
    p.add_argument("--energy", default="loguniform:1:1000", help="electron energies in GeV (default loguniform:1:1000)")
    p.add_argument("--geant4-showers", type=positive_int, default=20,
                   help="showers Geant4 simulates for its timing (default 20)")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON results (default bench.json)")
    p.set_defaults(run=bench)


def bench(args) -> int:
    from calofm.workflow.bench import run_bench

    check_output(args.out)
    start = time.perf_counter()
    model = load_model(args.model)
    load_seconds = time.perf_counter() - start
    detector = args.detector or _preset_of(model.conditions.detectors[0])
    run_bench(model, detector, args.energy, args.geant4_showers, args.out, load_seconds=load_seconds)
    return 0


def _preset_of(name: str) -> str:
    """The Geant4 preset a model class is named after: itself, or the longest preset it starts with
    followed by a dash (classes of one detector and several particles: par04-siw-e-, par04-siw-gamma)."""
    from calofm.simulate.detectors import preset_names

    presets = sorted(preset_names(), key=len, reverse=True)
    match = next((p for p in presets if name == p or name.startswith(p + "-")), None)
    if match is None:
        raise CalofmError(f"--detector: the model's first detector {name!r} is no Geant4 preset; name one "
                          f"({', '.join(sorted(presets))})")
    return match
