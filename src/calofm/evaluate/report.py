"""``calofm evaluate``: run the suite, draw the histograms, write metrics.json and report.md.

metrics.json (schema ``calofm-metrics/1``)::

    {"schema": "calofm-metrics/1", "protocol": "calofm", "generated": path, "reference": path, "binning": str,
     "settings": {...},
     "comparisons": {"model": COMPARISON, "geant4": COMPARISON | null},
     "slices": [{"variable": "energy_MeV" | "theta", "range": [lo, hi], "comparisons": {...}}, ...]}

    COMPARISON = {"n_reference", "n_generated",
      "observables": {name: {"wasserstein" | "kl" | "separation_power": {"value", "error"}}},
      "geometric_mean_wasserstein": {"value", "error"},
      "histograms": {name: separation power of the plotted histogram (per-layer ones: mean over layers)},
      "fpd", "kpd": {"value", "error"} (x 1, print x 1e3 as the CaloChallenge),
      "fpd_global": {"value", "error"} (FPD on the seven global features),
      "fpd_evidence": {"fpd" | "fpd_global": {"separates": bool | null, "shown": bool, "why": str}} (model only),
      "prdc": {"precision" | "recall" | "density" | "coverage": {"value", "error": null}},
      "classifier": {"high" | "low" | "low-normed" | "cnn": {"auc", "jsd": {"value", "error"}, "n_train", ...}}}

"model" compares the generated showers with reference half A, "geant4" reference half B with
half A: the floor a perfect model would reach (absent when the reference is too small to split).
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from calofm.core.errors import InputError
from calofm.core.files import atomic_path, check_output
from calofm.evaluate import plots
from calofm.evaluate.distances import histogram_edges, separation_power
from calofm.evaluate.samples import Sample, load_sample
from calofm.evaluate.suite import Settings, compare, fpd_evidence, slice_bins, split_reference
from calofm.evaluate.tables import markdown_table

SCHEMA = "calofm-metrics/1"
MIN_SLICE_SHOWERS = 50

# per-shower scalars: (label, log-x, getter)
_SCALARS = {
    "energy_ratio": ("E_vis / E_inc", False, lambda s: s.features.e_tot / s.features.e_inc),
    "visible_energy": ("E_vis [MeV]", True, lambda s: s.features.e_tot),
    "occupancy": ("voxels with energy", False, lambda s: s.features.n_hit),
    "voxel_energy": ("voxel energy [MeV]", True, lambda s: s.voxel_energies),
}
# per-layer features: (label, log-x, attribute of Features, alpha-binned layers only)
_LAYERED = {
    "e_layer": ("E_layer [MeV]", True, "e_layer", False),
    "sparsity": ("sparsity", False, "sparsity", False),
    "ec_r": ("centre of energy r [mm]", False, "ec_r", False),
    "width_r": ("width r [mm]", False, "width_r", False),
    "ec_eta": ("centre of energy eta [mm]", False, "ec_eta", True),
    "ec_phi": ("centre of energy phi [mm]", False, "ec_phi", True),
    "width_eta": ("width eta [mm]", False, "width_eta", True),
    "width_phi": ("width phi [mm]", False, "width_phi", True),
}


def histograms(reference: Sample, generated: Sample, binning, folder: Path | None) -> dict[str, float]:
    """Separation power of every histogram; with ``folder``, also draw them there as PNG."""
    layers = [i for i, layer in enumerate(binning.layers) if layer.n_voxels]
    alpha_layers = [i for i in layers if binning.layers[i].n_alpha > 1]
    out = {}
    for name, (label, log, get) in _SCALARS.items():
        ref, gen = np.asarray(get(reference), float), np.asarray(get(generated), float)
        out[name] = plots.histogram(ref, gen, label, folder / f"{name}.png", log=log) if folder else \
            separation_power(ref, gen, histogram_edges(ref, gen, log=log))
    for name, (label, log, attr, alpha_only) in _LAYERED.items():
        ref, gen = getattr(reference.features, attr), getattr(generated.features, attr)
        if ref.shape[1] == 0:
            continue
        ids = alpha_layers if alpha_only else layers
        if folder:
            seps = plots.layer_grid(ref, gen, ids, label, folder / f"{name}.png", log=log)
        else:
            seps = [separation_power(ref[:, j], gen[:, j], histogram_edges(ref[:, j], gen[:, j], log=log))
                    for j in range(ref.shape[1])]
        out[name] = float(np.mean(seps))
    if folder:
        plots.profile(reference.features.e_layer.mean(0), generated.features.e_layer.mean(0), np.array(layers),
                      "layer", folder / "longitudinal_profile.png")
        if reference.features.e_radial.shape[1]:
            edges = binning.radial_edges()
            plots.profile(reference.features.e_radial.mean(0), generated.features.e_radial.mean(0),
                          (edges[:-1] + edges[1:]) / 2, "r [mm]", folder / "radial_profile.png")
    return out


def evaluate(generated: str | Path, reference: str | Path, out: str | Path, settings: Settings, binning=None,
             threshold: float = 0.0, energy_bins: list[float] | None = None, theta_bins: list[float] | None = None,
             max_voxel_rows: int | None = None) -> dict:
    """Run the suite and write ``out/metrics.json``, ``out/report.md`` and the plots; return the metrics."""
    out = check_output(out, folder=True)
    gen, gen_binning = load_sample(generated, binning, threshold, max_voxel_rows)
    ref, ref_binning = load_sample(reference, binning, threshold, max_voxel_rows)
    if gen_binning.n_voxels != ref_binning.n_voxels or gen_binning.layers != ref_binning.layers:
        raise InputError(generated, f"binning {gen_binning.describe()} differs from the reference's "
                                    f"({ref_binning.describe()})")
    if not np.any(gen.features.e_tot > 0):
        raise InputError(generated, "no shower deposits any energy above threshold: nothing to compare "
                                    "(an untrained model?)")
    (out / "plots").mkdir(parents=True, exist_ok=True)  # only once the inputs are known to be good
    halves = split_reference(ref, settings.seed)
    ref_a, ref_b = halves if halves else (ref, None)
    del ref, halves  # the halves are copies: keep one reference in memory, not two
    model = compare(ref_a, gen, ref_binning, settings)
    model["histograms"] = histograms(ref_a, gen, ref_binning, out / "plots")
    floor = None
    if ref_b is not None:
        floor = compare(ref_a, ref_b, ref_binning, settings)
        floor["histograms"] = histograms(ref_a, ref_b, ref_binning, None)
    if "fpd" in model:
        model["fpd_evidence"] = fpd_evidence(model, floor)
    metrics = {"schema": SCHEMA, "protocol": "calofm", "generated": str(generated), "reference": str(reference),
               "particles": {"generated": gen.particles, "reference": ref_a.particles},
               "binning": ref_binning.describe(), "threshold_MeV": threshold,
               "settings": asdict(settings), "comparisons": {"model": model, "geant4": floor},
               "slices": _slices(gen, ref_a, ref_b, ref_binning, settings, energy_bins, theta_bins)}
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1))
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text(markdown(metrics))
    return metrics


def _slices(gen: Sample, ref_a: Sample, ref_b: Sample | None, binning, settings: Settings, energy_bins, theta_bins):
    """Distances, FPD/KPD and the high-level classifier in bins of incident energy (and theta when it
    varies). The voxel-level metrics (low-level classifiers, ResNet, PRDC) stay whole-sample: per
    slice they would copy the kept voxels again, which a dataset-3 evaluation cannot afford in 8 GB."""
    per_slice = replace(settings, metrics=tuple(m for m in settings.metrics if m in ("distances", "fpd", "classifier")),
                    classifiers=tuple(c for c in settings.classifiers if c == "high"))
    variables = [("energy_MeV", lambda s: s.features.e_inc, slice_bins(ref_a.features.e_inc, energy_bins))]
    if ref_a.theta is not None and gen.theta is not None and np.ptp(ref_a.theta) > 0:
        edges = theta_bins or list(np.linspace(ref_a.theta.min(), ref_a.theta.max() + 1e-9, 4))
        variables.append(("theta", lambda s: s.theta, list(zip(edges[:-1], edges[1:]))))
    slices = []
    for variable, get, bins in variables:
        for lo, hi in bins:
            parts = [None if s is None else s.take(np.flatnonzero((get(s) >= lo) & (get(s) < hi)))
                     for s in (gen, ref_a, ref_b)]
            if min(len(p) for p in parts[:2]) < MIN_SLICE_SHOWERS:
                continue
            g, a, b = parts
            model = compare(a, g, binning, per_slice)
            floor = compare(a, b, binning, per_slice) if b is not None and len(b) >= MIN_SLICE_SHOWERS else None
            if "fpd" in model:
                model["fpd_evidence"] = fpd_evidence(model, floor)
            slices.append({"variable": variable, "range": [float(lo), float(hi)],
                           "comparisons": {"model": model, "geant4": floor}})
    return slices


def _fmt(metric: dict | None, scale: float = 1.0) -> str:
    if not metric or metric.get("value") is None:
        return "-"
    value = metric["value"] * scale
    return f"{value:.4g}" if metric.get("error") is None else f"{value:.4g} ± {metric['error'] * scale:.2g}"


def _particles(particles: dict) -> str:
    """``reference: pi+ (400); generated: not recorded`` from the showers-per-particle counts."""
    def counts(c: dict) -> str:
        return ", ".join(f"{name} ({n})" for name, n in sorted(c.items())) or "not recorded"

    return "; ".join(f"{side}: {counts(particles.get(side, {}))}" for side in ("reference", "generated"))


_SUMMARY = (("geometric mean of the six Wasserstein distances", "geometric_mean_wasserstein", 1.0),
            ("FPD x 10^3, CaloChallenge features", "fpd", 1e3),
            ("FPD x 10^3, seven global features", "fpd_global", 1e3), ("KPD x 10^3", "kpd", 1e3))
_UNSHOWN = "not shown (see FPD below)"
_PLOTS = (*_SCALARS, *_LAYERED, "longitudinal_profile", "radial_profile")


def _summary_rows(model: dict, floor: dict) -> list[tuple[str, str, str]]:
    """(metric, model, Geant4 floor) for the summary table."""
    unshown = {key for key, evidence in model.get("fpd_evidence", {}).items() if not evidence["shown"]}
    rows = [(label, *((_UNSHOWN,) * 2 if key in unshown else (_fmt(model[key], scale), _fmt(floor.get(key), scale))))
            for label, key, scale in _SUMMARY if key in model]
    for name, result in model.get("classifier", {}).items():
        if "auc" in result:
            other = floor.get("classifier", {}).get(name, {})
            rows += [(f"classifier AUC ({name})", _fmt(result["auc"]), _fmt(other.get("auc"))),
                     (f"classifier JSD ({name})", _fmt(result["jsd"]), _fmt(other.get("jsd")))]
    rows += [(key, _fmt(value), _fmt(floor.get("prdc", {}).get(key))) for key, value in model.get("prdc", {}).items()]
    return rows


def _observable_rows(model: dict, floor: dict) -> list[tuple[str, ...]]:
    rows = []
    for name, d in model["observables"].items():
        f = floor.get("observables", {}).get(name, {})
        rows.append((name, *(_fmt(v) for kind in ("wasserstein", "kl", "separation_power")
                             for v in (d[kind], f.get(kind)))))
    return rows


def _slice_rows(slices: list[dict]) -> list[tuple[str, ...]]:
    rows = []
    for s in slices:
        m, g = s["comparisons"]["model"], s["comparisons"]["geant4"] or {}
        auc_m, auc_g = (c.get("classifier", {}).get("high", {}).get("auc") for c in (m, g))
        rows.append((s["variable"], f"{s['range'][0]:.4g} - {s['range'][1]:.4g}",
                     _fmt(m.get("geometric_mean_wasserstein")), _fmt(g.get("geometric_mean_wasserstein")),
                     _fmt(m.get("fpd_global"), 1e3), _fmt(g.get("fpd_global"), 1e3), _fmt(auc_m), _fmt(auc_g)))
    return rows


def markdown(metrics: dict) -> str:
    """The human report: summary table (model beside the Geant4 floor), observables, slices, plots."""
    model, floor = metrics["comparisons"]["model"], metrics["comparisons"]["geant4"] or {}
    halves = (f", {floor.get('n_generated')} in half B for the Geant4 floor)" if floor
              else ", too small to split: no floor)")
    lines = ["# calofm evaluation", "", f"- generated: `{metrics['generated']}` ({model['n_generated']} showers)",
             f"- reference: `{metrics['reference']}` ({model['n_reference']} showers in half A" + halves,
             f"- particles: {_particles(metrics.get('particles', {}))}",
             f"- binning: {metrics['binning']}",
             "- protocol: calofm (the model against half A of the reference, the Geant4 floor beside it, bootstrap "
             "errors; `calofm evaluate --protocol calochallenge` gives the CaloChallenge's own numbers)",
             "", "## Summary", ""]
    lines += markdown_table(("metric", "model", "Geant4 vs Geant4"), _summary_rows(model, floor))
    if "fpd_evidence" in model:
        lines += ["", "## FPD", "", *(f"- {label}: {model['fpd_evidence'][key]['why']}"
                                      for label, key, _ in _SUMMARY if key in model["fpd_evidence"])]
    if "observables" in model:
        lines += ["", "## Observables", ""]
        lines += markdown_table(("observable", "W1 / std (model)", "W1 / std (G4)", "KL (model)", "KL (G4)",
                                 "separation (model)", "separation (G4)"), _observable_rows(model, floor))
    lines += ["", "## Histogram separation powers", ""]
    lines += markdown_table(("histogram", "model", "Geant4 vs Geant4"),
                            [(name, f"{value:.3g}", f"{floor.get('histograms', {}).get(name, float('nan')):.3g}")
                             for name, value in model["histograms"].items()])
    if metrics["slices"]:
        lines += ["", "## Slices", ""]
        lines += markdown_table(("variable", "range", "geometric mean W1 (model)", "(G4)",
                                 "FPD x 10^3, global features (model)", "(G4)",
                                 "high-level AUC (model)", "(G4)"), _slice_rows(metrics["slices"]))
    lines += ["", "## Plots", "", *(f"![{name}](plots/{name}.png)" for name in _PLOTS)]
    return "\n".join(lines) + "\n"
