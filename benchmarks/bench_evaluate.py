"""Evaluation benchmark: wall time and peak memory of the full `calofm evaluate` suite.

    python benchmarks/bench_evaluate.py [--n 10000] [--binning dataset_2] [--epochs 50]
                                        [--classifiers high,low] [--keep DIR] [--json out.json]

Both samples are analytic toy showers (the cost of the suite does not depend on the physics),
written in chunks so that even 100k dataset-3 showers never sit in memory here; the reference has
2n showers so that its halves give the Geant4 floor at n each. The suite runs in a child process
whose peak RSS is the number reported (file writing is not counted).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from calofm.data import ShowerWriter
from calofm.data.toy import toy_showers
from calofm.geometry import calochallenge_binning

CHUNK = 2_000


def write_toy(path: Path, binning, n: int, seed: int) -> None:
    if path.exists():
        return
    with ShowerWriter(path, "calochallenge", binning) as w:
        for k, start in enumerate(range(0, n, CHUNK)):
            w.append(toy_showers(binning, min(CHUNK, n - start), seed=seed * 100_003 + k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="generated showers (reference: 2n)")
    parser.add_argument("--binning", default="dataset_2", help="CaloChallenge binning of the toy showers")
    parser.add_argument("--epochs", type=int, default=50, help="classifier epochs (default 50)")
    parser.add_argument("--classifiers", default="high,low", help="classifiers to train (default high,low)")
    parser.add_argument("--keep", type=Path, help="write (or reuse) the toy files here instead of a temporary folder")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    binning = calochallenge_binning(args.binning)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ref, gen = folder / f"ref_{args.binning}_{2 * args.n}.h5", folder / f"gen_{args.binning}_{args.n}.h5"
        write_toy(ref, binning, 2 * args.n, seed=1)
        write_toy(gen, binning, args.n, seed=2)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "calofm.cli.main", "evaluate", "--generated", str(gen),
                        "--reference", str(ref), "--out", str(Path(tmp) / "eval"), "--epochs", str(args.epochs),
                        "--classifiers", args.classifiers], check=True)
        wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    results = {"n": args.n, "binning": args.binning, "n_voxels": binning.n_voxels, "epochs": args.epochs,
               "classifiers": args.classifiers, "wall_s": wall, "peak_rss_GB": peak_gb}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
