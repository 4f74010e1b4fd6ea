"""The cost of a GDML detector against the same detector as a preset.

    python benchmarks/bench_gdml.py [--detector par04-siw] [--n 300] [--workers 2] [--repeat 2] [--json out.json]

``--n`` electrons (1-100 GeV, normal incidence, seed 1) in the preset, in the preset written as GDML
(calofm's frame: the showers must be bit-identical) and in the preset written as GDML turned by 30
degrees and moved to (100, -50, 400) mm, read with that frame. Reported: the best wall time of
``--repeat`` runs (the child process that reads the GDML file and Geant4's start-up included), the
simulation's own ms per event per core, and the time to read and check the GDML file alone.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from calofm.data import open_showers
from calofm.simulate.detectors import Frame, get_detector
from calofm.simulate.gdml import write_gdml, write_sidecar
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, simulate


def routes(name: str, tmp: Path) -> dict[str, str]:
    """The detector files of the three routes: preset name, GDML sidecar in calofm's frame, turned."""
    preset = get_detector(name)
    files = {"preset": name}
    for route, frame in (("gdml", Frame()),
                         ("gdml-turned", Frame((100.0, -50.0, 400.0), (0.5, 0.0, math.sqrt(0.75))))):
        gdml = write_gdml(preset, tmp / f"{route}.gdml", frame)
        files[route] = str(write_sidecar(preset, gdml, tmp / f"{route}.yaml", frame))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detector", default="par04-siw")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    gun = Gun("e-", Spectrum.parse("loguniform:1:100"))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for route, spec in routes(args.detector, tmp).items():
            start = time.perf_counter()
            detector = get_detector(spec)  # a GDML route reads and checks its file here
            read = time.perf_counter() - start
            walls, per_event = [], []
            for i in range(args.repeat):
                out = tmp / f"{route}-{i}.h5"
                start = time.perf_counter()
                stats = simulate(Run(detector, gun, args.n, seed=1), out, workers=args.workers, progress=False)
                walls.append(time.perf_counter() - start + read)
                per_event.append(1000 * stats["worker_seconds"] / stats["events"])
            with open_showers(out) as f:
                showers = f.read().showers
            results[route] = {"read_s": round(read, 3), "wall_s": round(min(walls), 2),
                              "ms_per_event_per_core": round(min(per_event), 1),
                              "showers_sum_GeV": round(float(showers.sum(dtype=np.float64)) / 1000, 3),
                              "showers": showers}
    same = np.array_equal(results["gdml"].pop("showers"), results["preset"]["showers"])
    results["gdml-turned"].pop("showers")
    results["preset"].pop("showers")
    report = {"detector": args.detector, "n": args.n, "workers": args.workers, "gdml_bit_identical": same,
              "routes": results}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    assert same, "the GDML route must give the preset's showers bit for bit"


if __name__ == "__main__":
    main()
