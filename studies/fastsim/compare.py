"""Full against fast simulation in one Geant4 application: the same particles, evaluated and timed.

    .venv/bin/python studies/fastsim/compare.py [--scale cpu|smoke] [--workers 2]

For each case, the same run (detector, gun, seed) is simulated twice by ``calofm simulate``: Geant4
alone, then with ``--fast-sim``. ``calofm evaluate`` then compares the fast file with the full one
(its Geant4-vs-Geant4 floor from the full file's halves), and the per-event times are those the
workers measured in this same process, Geant4's start-up and table building excluded for both, the
model's loading excluded too. Cases:

- em: electrons in par04-siw, handed to fm-1-fast (one step), to fm-1 (8 RK4 steps) and to
  fm-1-fast exported in Par04's contract through ONNX Runtime (the file Geant4 would load);
- hybrid: pi+ in ild-ecal-hcal, whose pi0 photons born in the ECAL go to fm-1-fast's ild-w-gamma class
  (the ECAL of ild-ecal-hcal is ild-w's stack), everything else staying with Geant4.

Writes studies/fastsim/results-SCALE/{results.json,table.md} and each comparison's report.md;
the showers go to runs/fastsim-SCALE/. Every simulation resumes or is skipped when run again.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from calofm.evaluate.report import evaluate
from calofm.evaluate.suite import Settings
from calofm.evaluate.tables import markdown_table
from calofm.export.generator import export
from calofm.inference import load_model
from calofm.inference.fastsim import FastSim
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, parse_conditions
from calofm.simulate.physics import Physics, default_physics
from calofm.simulate.runner import Run, simulate

HERE = Path(__file__).parent
SCALES = {"cpu": {"em": 1000, "hybrid": 400}, "smoke": {"em": 20, "hybrid": 6}}
CASES = (  # name, detector, particle, energy (GeV), fast-simulation options
    ("em", "par04-siw", "e-", "loguniform:1:100", [("fm-1-fast", {}), ("fm-1", {}), ("fm-1-fast-par04.onnx", {})]),
    ("hybrid", "ild-ecal-hcal", "pi+", "uniform:10:50",
     [("fm-1-fast", {"particles": ("gamma",), "classes": "ild-w-gamma", "section": "ecal"})]),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=SCALES, default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    data, results = Path(f"runs/fastsim-{args.scale}"), HERE / f"results-{args.scale}"
    data.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    onnx = data / "fm-1-fast-par04.onnx"
    if not onnx.exists():
        export(load_model("fm-1-fast"), "onnx", onnx, contract="par04")
    rows = []
    for case, preset, particle, energy, models in CASES:
        detector = get_detector(preset)
        run = Run(detector, Gun(particle, *parse_conditions(energy, "1.5707963267948966", "0")),
                  SCALES[args.scale][case], seed=11, physics=Physics(default_physics(particle)))
        full_file = data / f"{case}-geant4.h5"
        full = _simulate(run, full_file, args.workers)
        for model, options in models:
            path = str(data / model) if model.endswith(".onnx") else model
            fast_sim = FastSim.open(path, detector, **{"particles": ("e-", "e+", "gamma"), **options})
            tag = f"{case}-{model.removesuffix('.onnx')}"
            fast = _simulate(replace(run, fast_sim=fast_sim), data / f"{tag}.h5", args.workers)
            metrics = _evaluate(data / f"{tag}.h5", full_file, data / f"{tag}-eval")
            shutil.copy(data / f"{tag}-eval" / "report.md", results / f"{tag}-report.md")
            rows.append(_row(case, preset, particle, energy, model, options, full, fast, metrics))
            print(json.dumps(rows[-1]))
    (results / "results.json").write_text(json.dumps(rows, indent=1))
    (results / "table.md").write_text(_table(rows))


def _simulate(run: Run, out: Path, workers: int) -> dict:
    """``calofm simulate``'s statistics of ``run``; those of the run that wrote ``out`` when it is done."""
    saved = out.with_suffix(".stats.json")
    stats = simulate(run, out, workers=workers, overwrite=True)
    if stats["already_done"] and saved.exists():
        return json.loads(saved.read_text())
    saved.write_text(json.dumps(stats))
    return stats


def _evaluate(fast: Path, full: Path, out: Path) -> dict:
    """``calofm evaluate``'s metrics of ``fast`` against ``full``; kept from an earlier run when newer than both."""
    kept = out / "metrics.json"
    if kept.exists() and kept.stat().st_mtime > max(fast.stat().st_mtime, full.stat().st_mtime):
        return json.loads(kept.read_text())
    return evaluate(fast, full, out, Settings(epochs=20))


def _row(case, preset, particle, energy, model, options, full, fast, metrics) -> dict:
    per_event = {k: 1e3 * s["worker_seconds"] / max(s["events"] - s["resumed"], 1) for k, s in
                 (("geant4", full), ("fast", fast))}
    m, g = metrics["comparisons"]["model"], metrics["comparisons"]["geant4"] or {}  # no floor for tiny samples
    none = {"value": None, "error": None}
    return {"case": case, "detector": preset, "particle": particle, "energy_GeV": energy, "model": model,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
            "events": full["events"], "geant4_ms_per_event": per_event["geant4"],
            "fast_ms_per_event": per_event["fast"], "speed_up": per_event["geant4"] / per_event["fast"],
            "model_ms_per_event": 1e3 * fast["model_seconds"] / max(fast["events"] - fast["resumed"], 1),
            "handed_off": fast["handed_off"], "handed_off_energy_fraction": fast["handed_off_gev"] / fast["gev"],
            "gm_wasserstein": m["geometric_mean_wasserstein"],
            "gm_wasserstein_geant4": g.get("geometric_mean_wasserstein", none),
            "auc_high": m["classifier"]["high"]["auc"], "auc_low": m["classifier"]["low"]["auc"],
            "auc_high_geant4": g.get("classifier", {}).get("high", {}).get("auc", none)}


def _table(rows) -> str:
    def v(x):
        return "-" if x["value"] is None else f"{x['value']:.3f} +- {x['error']:.3f}" if x.get("error") \
            else f"{x['value']:.3f}"
    header = ("case", "model", "events", "Geant4 ms/event", "fast ms/event", "speed-up", "model ms/event",
              "energy handed off", "GM W1 fast (G4 floor)", "AUC high fast (G4)", "AUC low fast")
    body = [(r["case"], r["model"], str(r["events"]), f"{r['geant4_ms_per_event']:.1f}",
             f"{r['fast_ms_per_event']:.1f}", f"{r['speed_up']:.1f}x", f"{r['model_ms_per_event']:.1f}",
             f"{100 * r['handed_off_energy_fraction']:.0f} %",
             f"{v(r['gm_wasserstein'])} ({v(r['gm_wasserstein_geant4'])})",
             f"{v(r['auc_high'])} ({v(r['auc_high_geant4'])})", v(r["auc_low"])) for r in rows]
    return "\n".join(markdown_table(header, body)) + "\n"


if __name__ == "__main__":
    main()
