"""`calofm bench`: generation time per shower beside Geant4's, measured in one run."""

from __future__ import annotations

from pathlib import Path

from calofm.inference import load_model


def add_parsers(sub) -> None:
    p = sub.add_parser("bench", help="generation time per shower beside Geant4's, measured in one run",
                       description="Time a trained model's generation (CPU 1 thread batch 1, CPU batch 100, and on "
                                   "a GPU batch 100 and the largest batch that fits, fp32 and bf16) and Geant4's "
                                   "simulation of the same detector and energy spectrum on one core of this machine; "
                                   "print the table and the speed-up, and write bench.json.")
    p.add_argument("--model", type=Path, required=True,
                   help="run folder (or its model.safetensors), or the name of a shipped model (fm-1)")
    p.add_argument("--detector", help="Geant4 preset to time (default: the model's first detector)")
    p.add_argument("--energy", default="loguniform:1:1000", help="electron energies in GeV (default loguniform:1:1000)")
    p.add_argument("--geant4-showers", type=int, default=20,
                   help="showers Geant4 simulates for its timing (default 20)")
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON results (default bench.json)")
    p.set_defaults(run=bench)


def bench(args) -> int:
    from calofm.workflow.bench import run_bench

    model = load_model(args.model)
    detector = args.detector or model.conditions.detectors[0]
    run_bench(model, detector, args.energy, args.geant4_showers, args.out)
    return 0
