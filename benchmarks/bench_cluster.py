"""The cost of running on a Dask cluster: a simulation and a study, on one machine, with and without it.

    python benchmarks/bench_cluster.py [--n 2000] [--workers 2] [--steps 100] [--json out.json]

1. ``--n`` electrons of 5 GeV in par04-siw: ``--workers W`` against ``--cluster local:W`` with its
   default task count and with one task per worker (wall time, Dask's start-up and the merge
   included). The showers must be identical.
2. A 4-cell study (full fine-tuning and BitFit x 2 seeds, ``--steps`` steps each, fm-1 adapted to
   100 Geant4 electrons in par04-scipb, evaluated on 200), serial against ``--cluster local:W``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from calofm.core.cluster import ClusterSpec
from calofm.data import open_showers
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, simulate, simulate_on_cluster
from calofm.workflow.study import run_study


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def showers(path: Path) -> np.ndarray:
    with open_showers(path) as f:
        return f.read().showers


def simulation(n: int, workers: int, tmp: Path) -> dict:
    run = Run(get_detector("par04-siw"), Gun("e-", Spectrum.parse("5")), n, seed=3)
    cluster = ClusterSpec.parse(f"local:{workers}")
    seconds = {"workers": timed(simulate, run, tmp / "workers.h5", workers=workers, progress=False),
               "cluster_default_tasks": timed(simulate_on_cluster, run, tmp / "cluster.h5", cluster, progress=False),
               "cluster_one_task_per_worker": timed(simulate_on_cluster, run, tmp / "cluster1.h5", cluster,
                                                    tasks=workers, progress=False)}
    reference = showers(tmp / "workers.h5")
    assert all(np.array_equal(showers(tmp / f), reference) for f in ("cluster.h5", "cluster1.h5"))
    return {"showers": n, "seconds": seconds}


def study(workers: int, steps: int, tmp: Path) -> dict:
    target = Run(get_detector("par04-scipb"), Gun("e-", Spectrum.parse("loguniform:1:100")), 100, seed=1)
    simulate(target, tmp / "train.h5", workers=workers, progress=False)
    simulate(replace(target, n=200, seed=2), tmp / "test.h5", workers=workers, progress=False)
    seconds = {}
    for name, cluster in (("serial", None), ("cluster", ClusterSpec.parse(f"local:{workers}"))):
        config = {"out": str(tmp / name), "base": "fm-1",
                  "target": {"name": "par04-scipb", "train": str(tmp / "train.h5"), "test": str(tmp / "test.h5")},
                  "strategies": {"full": {}, "bitfit": {}}, "sizes": [100], "seeds": [0, 1],
                  "train": {"steps": steps, "batch_size": 64, "device": "cpu"},
                  "evaluate": {"classifier_epochs": 10}}
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        seconds[name] = timed(run_study, path, progress=False, log=lambda *_: None, cluster=cluster)
    return {"cells": 4, "steps": steps, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"workers": args.workers, "simulation": simulation(args.n, args.workers, Path(tmp)),
                   "study": study(args.workers, args.steps, Path(tmp))}
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
