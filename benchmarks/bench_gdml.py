"""The cost of a GDML detector against the same detector as a preset.

    python benchmarks/bench_gdml.py [--detector par04-siw] [--n 300] [--workers 2] [--repeat 2] [--json out.json]

``--n`` electrons (1-100 GeV, normal incidence, seed 1) in the preset, in the preset written as GDML
(calofm's frame: the showers must be bit-identical), and in the preset turned by 30 degrees and
moved to (100, -50, 400) mm, read with that frame: in a turned envelope (as ``write_gdml`` writes
it) and with each slab turned in the world. Reported: the best wall time of
``--repeat`` runs (the child process that reads the GDML file and Geant4's start-up included), the
simulation's own ms per event per core, and the time to read and check the GDML file alone.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from calofm.data import open_showers
from calofm.simulate.detectors import Frame, get_detector
from calofm.simulate.gdml import write_gdml, write_sidecar
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, simulate

TURN = Frame((100.0, -50.0, 400.0), (0.5, 0.0, math.sqrt(0.75)))  # 30 degrees about y, moved


def slabs_turned_one_by_one(gdml: Path, out: Path) -> Path:
    """``gdml`` (written in calofm's frame) with each slab turned and moved into TURN in the world
    itself, no envelope: how not to write a turned geometry."""
    root = ET.parse(gdml).getroot()
    ET.SubElement(root.find("define"), "rotation", name="turn", y="-30.0", unit="deg")
    for k in "xyz":
        root.find("solids").find("box[@name='world']").set(k, "3000")
    for physvol in root.iter("physvol"):
        position = physvol.find("position")
        for k, v in zip("xyz", TURN.to_geant4(np.array([0.0, 0.0, float(position.get("z"))]))):
            position.set(k, repr(float(v)))
        ET.SubElement(physvol, "rotationref", ref="turn")
    ET.ElementTree(root).write(out)
    return out


def routes(name: str, tmp: Path) -> dict[str, str]:
    """The detector files of the routes: the preset; GDML in calofm's frame; turned in an envelope;
    each slab turned in the world."""
    preset = get_detector(name)
    files = {"preset": name}
    for route, frame in (("gdml", Frame()), ("gdml-turned-envelope", TURN)):
        gdml = write_gdml(preset, tmp / f"{route}.gdml", frame)
        files[route] = str(write_sidecar(preset, gdml, tmp / f"{route}.yaml", frame))
    gdml = slabs_turned_one_by_one(tmp / "gdml.gdml", tmp / "gdml-turned-slabs.gdml")
    files["gdml-turned-slabs"] = str(write_sidecar(preset, gdml, tmp / "gdml-turned-slabs.yaml", TURN))
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
    for route in results.values():
        route.pop("showers", None)
    report = {"detector": args.detector, "n": args.n, "workers": args.workers, "gdml_bit_identical": same,
              "routes": results}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    assert same, "the GDML route must give the preset's showers bit for bit"


if __name__ == "__main__":
    main()
