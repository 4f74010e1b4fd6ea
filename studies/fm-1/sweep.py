"""The scaling sweep that chooses calofm-fm-1's family: CaloDiT-2 (EDM) against CaloDREAM++ (flow matching).

Run from the repository root, after ``studies/fm-1/simulate.sh``:

    python studies/fm-1/sweep.py [--jobs 2] [--out runs/fm-1/sweep] [--results studies/fm-1]

Every run is a ``calofm train`` on the fm-1 pre-training data, on one CPU thread. The grid:

- each family at three sizes with a step budget of 500 and 2000 steps;
- the data scaled with the compute: 300 showers per class for 500 steps, all of them for 2000;
- at the middle size, the other two (data, steps) corners, so data and steps are measured apart.

Every run validates four times on 30 held-out showers per class. Compute is the run's training time
on one thread (its log without the validations). Each run's last validation gives the six-observable
W1 geometric mean (GM) and the energy-ratio W1, each a geometric mean over the classes. The fit is
GM = a * C^-b per family over the runs' end points. A finished run is not trained again.

Writes ``sweep.json``, ``sweep.md`` (table and fit) and ``sweep.png`` (learning curves, fits) to the
results folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

DATA = Path("runs/fm-1/data")
PRESETS = ("par04-siw", "ild-w", "ild-pb", "pbwo4", "lar-pb")
PARTICLES = ("e-", "gamma")
ENERGY = {"dim": 64, "heads": 4, "encoder_layers": 2, "decoder_layers": 2, "ff_dim": 128}
SIZES = {  # family -> size -> (backbone arguments)
    "dit": {"S": {"patch": [3, 4, 5], "dim": 48, "depth": 2, "heads": 2, "mlp_dim": 96},
            "M": {"patch": [3, 4, 5], "dim": 96, "depth": 3, "heads": 4, "mlp_dim": 192},
            "L": {"patch": [3, 4, 5], "dim": 144, "depth": 4, "heads": 4, "mlp_dim": 288}},
    "vit": {"S": {"patch": [5, 16, 3], "dim": 48, "depth": 2, "heads": 2, "mlp_dim": 96, "energy": ENERGY},
            "M": {"patch": [5, 16, 3], "dim": 96, "depth": 3, "heads": 4, "mlp_dim": 192, "energy": ENERGY},
            "L": {"patch": [5, 16, 3], "dim": 144, "depth": 4, "heads": 4, "mlp_dim": 288, "energy": ENERGY}},
}
PROCESS = {"dit": {"name": "edm", "args": {"steps": 16}}, "vit": {"name": "cfm", "args": {"steps": 8}}}
LR = {"dit": 2e-3, "vit": 2e-3}
BUDGETS = ((500, 300), (2000, None))  # (steps, showers per class: None = all)
CORNERS = ((500, None), (2000, 300))  # the middle size's other (steps, data) corners


def classes() -> dict[str, list[str]]:
    """Class name -> its files: one class per (preset, particle), normal and inclined incidence."""
    return {f"{preset}-{particle}": [str(DATA / f"{preset}-{particle}.h5"),
                                      str(DATA / f"{preset}-{particle}-inclined.h5")]
            for preset in PRESETS for particle in PARTICLES}


def grid() -> list[dict]:
    runs = []
    for family, sizes in SIZES.items():
        for size in sizes:
            cells = BUDGETS + (CORNERS if size == "M" else ())
            runs += [{"family": family, "size": size, "steps": steps, "n_train": n} for steps, n in cells]
    return runs


def name(run: dict) -> str:
    return f"{run['family']}-{run['size']}-{run['steps']}-n{run['n_train'] or 'all'}"


def config(run: dict, out: Path) -> dict:
    family = run["family"]
    return {"out": str(out / name(run)),
            "data": {"detectors": classes(), "val_fraction": 0.04, "n_train": run["n_train"], "free_slots": 2},
            "model": {"backbone": family, "args": SIZES[family][run["size"]]},
            "process": PROCESS[family],
            "train": {"steps": run["steps"], "batch_size": 64, "lr": LR[family], "device": "cpu", "seed": 0,
                      "log_every": max(1, run["steps"] // 80), "checkpoint_every": 500,
                      "validate_every": run["steps"] // 4, "validate_showers": 30}}


def train(run: dict, out: Path) -> None:
    folder = out / name(run)
    described = folder / "model.json"
    if described.exists() and json.loads(described.read_text()).get("step") == run["steps"]:
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = out / f"{name(run)}.yaml"
    path.write_text(yaml.safe_dump(config(run, out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with open(folder.with_suffix(".log"), "w") as log:
        subprocess.run([sys.executable, "-m", "calofm.cli.main", "train", "--config", str(path), "--no-progress"],
                       env=env, stdout=log, stderr=subprocess.STDOUT, check=True)


def seconds_per_step(folder: Path, validate_every: int) -> float:
    """Training time per step: the median of the logged intervals that hold no validation."""
    rows = list(csv.DictReader(open(folder / "metrics.csv")))
    steps = np.array([int(r["step"]) for r in rows])
    seconds = np.array([float(r["seconds"]) for r in rows])
    clean = (steps[1:] - 1) // validate_every == (steps[:-1]) // validate_every
    return float(np.median(np.diff(seconds)[clean] / np.diff(steps)[clean]))


def curve(folder: Path) -> list[dict]:
    """Per validation: step, GM and energy-ratio W1, each the geometric mean over the classes (a
    crystal's narrow energy response makes its normalised W1 100x the others': an arithmetic mean
    would be that one class)."""
    points = []
    for row in csv.DictReader(open(folder / "validation.csv")):
        def over_classes(metric: str) -> float:
            return math.exp(np.mean([math.log(float(v)) for k, v in row.items() if k.endswith(f"/{metric}")]))

        points.append({"step": int(row["step"]), "gm": over_classes("gm_w1"),
                       "w1_energy_ratio": over_classes("w1_energy_ratio")})
    return points


def parameters(folder: Path) -> int:
    from calofm.inference import load_model

    return sum(p.numel() for p in load_model(folder).process.parameters())


def fit(compute: np.ndarray, gm: np.ndarray) -> tuple[float, float]:
    """(a, b) of GM = a C^-b by least squares in log-log."""
    slope, intercept = np.polyfit(np.log(compute), np.log(gm), 1)
    return float(math.exp(intercept)), float(-slope)


def analyse(out: Path, results: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for run in grid():
        folder = out / name(run)
        t = seconds_per_step(folder, run["steps"] // 4)
        points = curve(folder)
        for p in points:
            p["cpu_s"] = p["step"] * t
        rows.append({**run, "name": name(run), "parameters": parameters(folder), "s_per_step": t,
                     "cpu_s": run["steps"] * t, "gm": points[-1]["gm"],
                     "w1_energy_ratio": points[-1]["w1_energy_ratio"], "curve": points})
    fits = {}
    for family in SIZES:
        mine = [r for r in rows if r["family"] == family]
        a, b = fit(np.array([r["cpu_s"] for r in mine]), np.array([r["gm"] for r in mine]))
        fits[family] = {"a": a, "b": b}
    results.mkdir(parents=True, exist_ok=True)
    (results / "sweep.json").write_text(json.dumps({"runs": rows, "fits": fits}, indent=1))
    lines = ["# calofm-fm-1 scaling sweep", "",
             "| run | parameters | steps | showers per class | CPU s (1 thread) | GM | energy-ratio W1 |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['name']} | {r['parameters']:,} | {r['steps']} | {r['n_train'] or 'all'} | {r['cpu_s']:.0f} | "
              f"{r['gm']:.3f} | {r['w1_energy_ratio']:.3f} |" for r in rows]
    lines += ["", "Fit GM = a C^-b (C: CPU seconds on one thread, end points of every run of the family):", ""]
    lines += [f"- {family}: a = {f['a']:.3g}, b = {f['b']:.3f}" for family, f in fits.items()]
    (results / "sweep.md").write_text("\n".join(lines) + "\n")

    fig, (ax, ax_ratio) = plt.subplots(1, 2, figsize=(13, 5))
    colours = {"dit": "tab:blue", "vit": "tab:orange"}
    styles = {"S": ":", "M": "-", "L": "--"}
    for r in rows:
        cpu = [p["cpu_s"] for p in r["curve"]]
        for axis, key in ((ax, "gm"), (ax_ratio, "w1_energy_ratio")):
            axis.plot(cpu, [p[key] for p in r["curve"]], styles[r["size"]], marker="o", ms=3, alpha=0.7,
                      color=colours[r["family"]], label=r["name"])
    grid_c = np.geomspace(min(r["cpu_s"] for r in rows) / 4, max(r["cpu_s"] for r in rows) * 100, 50)
    for family, f in fits.items():
        ax.plot(grid_c, f["a"] * grid_c ** -f["b"], color=colours[family], lw=2.5, alpha=0.4,
                label=f"fit {family}: GM = {f['a']:.3g} C^-{f['b']:.3f}")
    ax.set(xscale="log", yscale="log", xlabel="training CPU seconds (one thread)",
           ylabel="six-observable W1 GM (validation)")
    ax_ratio.set(xscale="log", yscale="log", xlabel="training CPU seconds (one thread)",
                 ylabel="energy-ratio W1 / reference std (validation)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(results / "sweep.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once, one thread each (default 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/fm-1/sweep"), help="run folders")
    parser.add_argument("--results", type=Path, default=Path("studies/fm-1"), help="where the tables go")
    args = parser.parse_args()
    runs = sorted(grid(), key=lambda r: -r["steps"])  # the long ones first: the pool ends evenly
    with ThreadPoolExecutor(args.jobs) as pool:
        for _ in pool.map(lambda r: train(r, args.out), runs):
            pass
    analyse(args.out, args.results)


if __name__ == "__main__":
    main()
