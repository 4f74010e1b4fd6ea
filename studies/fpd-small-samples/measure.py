"""Can FPD tell a 5 % voxel-energy scale from Geant4 at small samples? (calofm's evaluation issue)

    .venv/bin/python studies/fpd-small-samples/measure.py [--sizes 500,1000,2000,5000,10000] [--repeats 3]

Toy showers on the dataset-2 mesh (calofm.data.toy: Gamma longitudinal profile, core + halo radially;
not Geant4, but the question is one of sample size) stand in for Geant4: for each size n and repeat,
three independent samples of n showers: the reference, a second "Geant4" sample, and a "model" whose
voxel energies are scaled by 1.05. FPD of the second sample and of the model against the reference on
the 362 high-level features (the CaloChallenge vector), with two batch schemes:

- ``jetnet``: the CaloChallenge / JetNet default, batches of 10 000-50 000 drawn with replacement;
- ``sample``: batches that follow the sample (n/5 ... n, 5 batches per size), as calofm's studies use.

The separation is (mean FPD of the model - mean FPD of Geant4) / sqrt(var_model + var_Geant4) over the
repeats. Writes results.json and table.md beside this script.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from calofm.data.toy import toy_showers
from calofm.evaluate.features import FeatureExtractor, high_level_vector
from calofm.evaluate.fpd import fpd
from calofm.geometry import calochallenge_binning

HERE = Path(__file__).parent
SCHEMES = {"jetnet": lambda n: {}, "sample": lambda n: {"min_samples": max(n // 5, 2), "max_samples": n,
                                                         "num_batches": 5}}


def features(binning, n: int, seed: int, scale: float = 1.0) -> np.ndarray:
    showers = toy_showers(binning, n, seed=seed, e_min=1e3, e_max=1e5)
    voxels = np.where(showers.showers * scale < 0.5e-3 / 0.033, 0, showers.showers * scale)
    return high_level_vector(FeatureExtractor(binning)(voxels, showers.energy))


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
            for scheme, kwargs in SCHEMES.items():
                for sample in ("geant4", "model"):
                    value, error = fpd(pools["reference"][:n], pools[sample][:n], **kwargs(n))
                    rows.append({"repeat": rep, "n": n, "scheme": scheme, "sample": sample, "fpd": value,
                                 "error": error})
        print(f"repeat {rep}: {time.perf_counter() - t0:.0f} s", flush=True)
    table = ["| showers | scheme | FPD x 10^3, Geant4 vs Geant4 | FPD x 10^3, x1.05 vs Geant4 | separation (sigma) |",
             "| --- | --- | --- | --- | --- |"]
    summary = []
    for n in sizes:
        for scheme in SCHEMES:
            stats = {}
            for sample in ("geant4", "model"):
                values = np.array([r["fpd"] for r in rows if r["n"] == n and r["scheme"] == scheme
                                   and r["sample"] == sample])
                stats[sample] = (values.mean(), values.std(ddof=1) if len(values) > 1 else np.nan)
            sigma = (stats["model"][0] - stats["geant4"][0]) / np.hypot(stats["model"][1], stats["geant4"][1])
            summary.append({"n": n, "scheme": scheme, "geant4": stats["geant4"], "model": stats["model"],
                            "separation_sigma": sigma})
            table.append(f"| {n} | {scheme} | {stats['geant4'][0] * 1e3:.1f} +- {stats['geant4'][1] * 1e3:.1f} | "
                         f"{stats['model'][0] * 1e3:.1f} +- {stats['model'][1] * 1e3:.1f} | {sigma:.1f} |")
    (HERE / "results.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=float))
    (HERE / "table.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
