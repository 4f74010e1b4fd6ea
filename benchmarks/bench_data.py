"""Data-layer benchmarks: projection points/s (one core) and HDF5 read showers/s.

    python benchmarks/bench_data.py [--points 10000000] [--showers 10000] [--json out.json]

Numbers are best-of-repeats wall time on the machine it runs on; projection runs single-threaded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from calofm.data import open_showers, write_showers  # noqa: E402
from calofm.data.toy import toy_showers  # noqa: E402
from calofm.geometry import calochallenge_binning, ild_ecal, project  # noqa: E402


def best_time(fn, repeats=3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_projection(n_points: int, n_showers: int = 100) -> dict:
    rng = np.random.default_rng(0)
    r = rng.exponential(8.0, n_points)
    a = rng.uniform(-np.pi, np.pi, n_points)
    points = np.stack([r * np.cos(a), r * np.sin(a), rng.gamma(4.0, 12.0, n_points),
                       rng.exponential(1.0, n_points)], axis=1).astype(np.float32)
    offsets = np.linspace(0, n_points, n_showers + 1).astype(np.int64)
    out = {}
    for name, readout in [("dataset_2", calochallenge_binning("dataset_2")),
                          ("dataset_3", calochallenge_binning("dataset_3")),
                          ("dataset_1_photons (irregular)", calochallenge_binning("dataset_1_photons")),
                          ("ild planar", ild_ecal())]:
        out[name] = n_points / best_time(lambda: project(readout, points, offsets))
    return out


def bench_reading(n_showers: int) -> dict:
    binning = calochallenge_binning("dataset_2")
    showers = toy_showers(binning, n_showers, seed=0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("calochallenge", "calofm", "lemurs"):
            path = Path(tmp) / f"{fmt}.h5"
            write_showers(path, showers, fmt, binning)

            def read_all():
                with open_showers(path) as f:
                    for _ in f.iter_chunks(chunk_size=5000):
                        pass

            out[fmt] = n_showers / best_time(read_all)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=10_000_000, help="points projected per run")
    parser.add_argument("--showers", type=int, default=10_000, help="dataset-2 showers written and read")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = {"projection_points_per_s": bench_projection(args.points),
               "read_showers_per_s (dataset_2, validated, gzip)": bench_reading(args.showers)}
    for section, rows in results.items():
        print(section)
        for name, value in rows.items():
            print(f"  {name:32s} {value:12.3e}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
