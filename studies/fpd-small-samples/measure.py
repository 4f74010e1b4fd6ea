"""Can FPD tell a 5 % voxel-energy scale from Geant4 at small samples? And what can? (calofm's evaluation issue)

    .venv/bin/python studies/fpd-small-samples/measure.py [--sizes 500,1000,2000,5000,10000] [--repeats 3]

Toy showers on the dataset-2 mesh (calofm.data.toy: Gamma longitudinal profile, core + halo radially;
not Geant4, but the question is one of sample size) stand in for Geant4: for each size n and repeat,
three independent samples of n showers: the reference, a second "Geant4" sample, and a "model" whose
voxel energies are scaled by 1.05. Each probe compares the second sample and the model with the
reference:

- FPD on the 362 high-level features (the CaloChallenge vector) with two batch schemes: ``jetnet``,
  the CaloChallenge / JetNet default, batches of 10 000-50 000 drawn with replacement; ``sample``,
  batches that follow the sample (n/5 ... n, 5 batches per size), as calofm's studies use;
- FPD on the seven global features of ``calofm.evaluate.features.global_vector`` (E_inc, E_tot/E_inc,
  occupancy, centre and width in z and r), both schemes;
- the Wasserstein-1 distance of E_tot/E_inc (one of the six observables of the geometric mean).

The separation is (mean of the model - mean of Geant4) / sqrt(var_model + var_Geant4) over the
repeats. Writes results.json and table.md beside this script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import wasserstein_distance

from calofm.data.toy import toy_showers
from calofm.evaluate.features import FeatureExtractor, global_vector, high_level_vector
from calofm.evaluate.fpd import fpd
from calofm.geometry import calochallenge_binning

HERE = Path(__file__).parent
SCHEMES = {"jetnet": lambda n: {}, "sample": lambda n: {"min_samples": max(n // 5, 2), "max_samples": n,
                                                         "num_batches": 5}}


def _fpd(features: str, scheme: str):
    return lambda ref, other, n: fpd(ref[features][:n], other[features][:n], **SCHEMES[scheme](n))


PROBES = {  # name -> (reference pool, other pool, n) -> (value, error); shown x 10^3
    **{f"FPD, 362 features, {scheme}": _fpd("challenge", scheme) for scheme in SCHEMES},
    **{f"FPD, 7 global features, {scheme}": _fpd("global", scheme) for scheme in SCHEMES},
    "W1 of E_tot/E_inc": lambda ref, other, n: (wasserstein_distance(ref["ratio"][:n], other["ratio"][:n]), 0.0),
}


def features(binning, n: int, seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    showers = toy_showers(binning, n, seed=seed, e_min=1e3, e_max=1e5)
    voxels = np.where(showers.showers * scale < 0.5e-3 / 0.033, 0, showers.showers * scale)
    f = FeatureExtractor(binning)(voxels, showers.energy)
    return {"challenge": high_level_vector(f), "global": global_vector(f, binning), "ratio": f.e_tot / f.e_inc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="500,1000,2000,5000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(v) for v in args.sizes.split(",")]
    binning = calochallenge_binning("dataset_2")
    biggest = max(sizes)
    rows = []
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        pools = {"reference": features(binning, biggest, 1000 + 3 * rep),
                 "geant4": features(binning, biggest, 1001 + 3 * rep),
                 "model": features(binning, biggest, 1002 + 3 * rep, scale=1.05)}
        for n in sizes:
            for probe, measure in PROBES.items():
                for sample in ("geant4", "model"):
                    value, error = measure(pools["reference"], pools[sample], n)
                    rows.append({"repeat": rep, "n": n, "probe": probe, "sample": sample, "value": value,
                                 "error": error})
        print(f"repeat {rep}: {time.perf_counter() - t0:.0f} s", flush=True)
    table = ["| probe | showers | x 10^3, Geant4 vs Geant4 | x 10^3, x1.05 vs Geant4 | separation (sigma) |",
             "| --- | --- | --- | --- | --- |"]
    summary = []
    for probe in PROBES:
        for n in sizes:
            stats = {}
            for sample in ("geant4", "model"):
                values = np.array([r["value"] for r in rows if r["n"] == n and r["probe"] == probe
                                   and r["sample"] == sample])
                stats[sample] = (values.mean(), values.std(ddof=1) if len(values) > 1 else np.nan)
            sigma = (stats["model"][0] - stats["geant4"][0]) / np.hypot(stats["model"][1], stats["geant4"][1])
            summary.append({"n": n, "probe": probe, "geant4": stats["geant4"], "model": stats["model"],
                            "separation_sigma": sigma})
            table.append(f"| {probe} | {n} | {stats['geant4'][0] * 1e3:.2f} +- {stats['geant4'][1] * 1e3:.2f} | "
                         f"{stats['model'][0] * 1e3:.2f} +- {stats['model'][1] * 1e3:.2f} | {sigma:.1f} |")
    (HERE / "results.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=float))
    (HERE / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
