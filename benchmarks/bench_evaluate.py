"""Evaluation benchmark: wall time and peak memory of `calofm evaluate` on dataset-2-sized showers.

    python benchmarks/bench_evaluate.py [--n 10000] [--epochs 50] [--classifiers high,low] [--json out.json]

Both samples are analytic toy showers on the dataset-2 mesh (the cost of the suite does not depend
on the physics); the reference has 2n showers so that its halves give the Geant4 floor at n each.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from calofm.data import write_showers
from calofm.data.toy import toy_showers
from calofm.evaluate.report import evaluate
from calofm.evaluate.suite import Settings
from calofm.geometry import calochallenge_binning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="generated showers (reference: 2n)")
    parser.add_argument("--epochs", type=int, default=50, help="classifier epochs (default 50)")
    parser.add_argument("--classifiers", default="high,low", help="classifiers to train (default high,low)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    ds2 = calochallenge_binning("dataset_2")
    with tempfile.TemporaryDirectory() as tmp:
        ref, gen = Path(tmp) / "ref.h5", Path(tmp) / "gen.h5"
        write_showers(ref, toy_showers(ds2, 2 * args.n, seed=1), "calochallenge", ds2)
        write_showers(gen, toy_showers(ds2, args.n, seed=2), "calochallenge", ds2)
        settings = Settings(classifiers=tuple(args.classifiers.split(",")), epochs=args.epochs)
        start = time.perf_counter()
        evaluate(gen, ref, Path(tmp) / "eval", settings)
        wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    results = {"n": args.n, "epochs": args.epochs, "classifiers": args.classifiers, "wall_s": wall, "peak_rss_GB": peak_gb}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
