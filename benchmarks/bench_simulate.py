"""Simulation benchmarks: Geant4 ms per GeV per core for every preset, the cost of Birks' law, and
the 2-worker speed-up.

    python benchmarks/bench_simulate.py [--n 10] [--energy 10] [--birks-n 50] [--speedup-n 200] [--json out.json]

ms/GeV counts the time inside the workers (Geant4 tracking, scoring, writing), not their start-up.
Birks: 10 GeV pi+ (FTFP_BERT) and e- in the scintillator presets, quenched (the default) and not
(kB = 0: the recorder keeps 4 numbers per step instead of 7 and skips the numpy quenching).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from calofm.simulate.detectors import get_detector, preset_names
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.physics import Physics, default_physics
from calofm.simulate.runner import Run, simulate

SCINTILLATOR_PRESETS = ("par04-scipb", "ild-ecal-hcal")


def per_preset(n: int, energy: float, tmp: Path) -> dict:
    out = {}
    for name in preset_names():
        stats = simulate(Run(get_detector(name), Gun("e-", Spectrum.parse(str(energy))), n), tmp / f"{name}.h5",
                         workers=1, progress=False)
        out[name] = 1e3 * stats["worker_seconds"] / stats["gev"]
    return out


def birks_cost(n: int, tmp: Path) -> dict:
    out = {}
    for name in SCINTILLATOR_PRESETS:
        for particle in ("pi+", "e-"):
            for kb, label in ((None, "birks"), (0.0, "no_birks")):
                physics = Physics(default_physics(particle), kb)
                stats = simulate(Run(get_detector(name), Gun(particle, Spectrum.parse("10")), n, physics=physics),
                                 tmp / f"{name}-{particle}-{label}.h5", workers=1, progress=False)
                out[f"{name} {particle} {label}"] = 1e3 * stats["worker_seconds"] / stats["gev"]
    return out


def speedup(n: int, tmp: Path) -> dict:
    run = Run(get_detector("par04-siw"), Gun("e-", Spectrum.parse("loguniform:1:100")), n)
    wall = {w: simulate(run, tmp / f"w{w}.h5", workers=w, progress=False)["seconds"] for w in (1, 2)}
    return {"wall_s_1_worker": wall[1], "wall_s_2_workers": wall[2], "speedup": wall[1] / wall[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10, help="electrons per preset (default 10)")
    parser.add_argument("--energy", type=float, default=10.0, help="their energy in GeV (default 10)")
    parser.add_argument("--birks-n", type=int, default=50, help="showers per Birks case (default 50)")
    parser.add_argument("--speedup-n", type=int, default=200, help="par04-siw showers (1-100 GeV) for the speed-up")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"ms_per_GeV_per_core": per_preset(args.n, args.energy, Path(tmp)),
                   "birks_ms_per_GeV_per_core": birks_cost(args.birks_n, Path(tmp)),
                   "workers": speedup(args.speedup_n, Path(tmp))}
    for name, value in {**results["ms_per_GeV_per_core"], **results["birks_ms_per_GeV_per_core"]}.items():
        print(f"  {name:30s} {value:7.2f} ms/GeV")
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in results["workers"].items()))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
