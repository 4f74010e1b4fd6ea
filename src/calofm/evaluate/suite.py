"""The evaluation suite: compare a generated sample with Geant4, beside the Geant4-vs-Geant4 floor.

The reference is split in two halves A and B (when large enough). A is the reference of both
comparisons: "model" (generated vs A) and "geant4" (B vs A), so the floor is measured with the
same statistics a perfect model would have. Every metric is a {"value", "error"} pair.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from calofm.evaluate import classifier as cls
from calofm.evaluate.distances import (
    SIX_OBSERVABLES,
    bootstrap,
    observable_distances,
    six_observable_geometric_mean,
)
from calofm.evaluate.features import global_vector, high_level_vector, relevant_depths
from calofm.evaluate.fpd import fpd, kpd, sample_batches
from calofm.evaluate.prdc import prdc, prdc_inputs
from calofm.evaluate.samples import Sample

METRICS = ("distances", "classifier", "fpd", "prdc")
CLASSIFIERS = ("high", "low", "low-normed", "cnn")
MIN_FLOOR_SHOWERS = 200  # a reference smaller than 2 x this is not split for the floor
# FPD on the CaloChallenge features did not separate a 5 % voxel-energy scale from Geant4 at any size up
# to this many showers per sample; on the seven global features it does from about 1000
# (studies/fpd-small-samples). Below it, that FPD is not shown as evidence.
FPD_EVIDENCE_SHOWERS = 50_000
FPD_SIGMAS = 3.0  # a model's FPD is told from the Geant4 floor when it exceeds it by this many errors
ERRORS = {"fpd": "errors of JetNet's fit", "fpd_global": "bootstrap errors"}


@dataclass
class Settings:
    metrics: tuple[str, ...] = METRICS
    classifiers: tuple[str, ...] = ("high", "low")
    epochs: int = 50
    repeats: int = 1
    device: str = "cpu"
    seed: int = 0
    n_bootstrap: int = 20
    progress: bool = False
    classifier_kwargs: dict = field(default_factory=dict)
    fpd_kwargs: dict = field(default_factory=dict)  # e.g. smaller min/max_samples for quick looks
    kpd_kwargs: dict = field(default_factory=dict)


def pair(value, error=None) -> dict:
    """A metric as stored in metrics.json; null where undefined or infinite (e.g. a generated
    sample without any deposit is infinitely far from Geant4), so the file stays strict JSON."""
    def number(v):
        return None if v is None or not math.isfinite(v) else float(v)
    return {"value": number(value), "error": number(error)}


def observables(sample: Sample, binning) -> dict[str, np.ndarray]:
    """The samples the distances compare (``distances.OBSERVABLE_DEFINITIONS``): 1D per-shower or
    per-voxel values, and 2D (N, bins) energy profiles whose bin index is energy-weighted.

    Empty showers stay in (they make the distances infinite); the voxel spectrum is left out only
    when no shower of the sample kept its voxels (a slice beyond the voxel cap)."""
    f = sample.features
    depth = relevant_depths(binning)
    out = {
        "energy_ratio": f.e_tot / f.e_inc,
        "visible_energy": f.e_tot,
        "occupancy": f.n_hit / binning.n_voxels,
        "z_centre": np.divide(f.e_layer @ depth, f.e_tot, out=np.zeros_like(f.e_tot, dtype=np.float64),
                              where=f.e_tot > 0),
        "longitudinal_profile": f.e_layer,
        "radial_profile": f.e_radial,
    }
    return {"voxel_energy": sample.voxel_energies, **out} if len(sample.voxels) else out


def compare(reference: Sample, generated: Sample, binning, settings: Settings) -> dict:
    """All selected metrics for one (reference, generated) pair."""
    out: dict = {"n_reference": len(reference), "n_generated": len(generated)}
    if "distances" in settings.metrics:
        distances = observable_distances(observables(reference, binning), observables(generated, binning),
                                         n_bootstrap=settings.n_bootstrap, seed=settings.seed)
        out["observables"] = {name: {kind: pair(*value) for kind, value in d.items()} for name, d in distances.items()}
        if all(name in distances for name in SIX_OBSERVABLES):
            out["geometric_mean_wasserstein"] = pair(*six_observable_geometric_mean(distances))
            out["geometric_mean_kl"] = pair(*six_observable_geometric_mean(distances, "kl"))
    hl_ref, hl_gen = high_level_vector(reference.features), high_level_vector(generated.features)
    if "fpd" in settings.metrics:
        out["fpd"] = pair(*fpd(hl_ref, hl_gen, seed=settings.seed, **settings.fpd_kwargs))
        out["kpd"] = pair(*kpd(hl_ref, hl_gen, seed=settings.seed, **settings.kpd_kwargs))
        out["fpd_global"] = pair(*global_fpd(reference, generated, binning, settings))
    if "prdc" in settings.metrics:
        result = prdc(prdc_inputs(reference.voxels), prdc_inputs(generated.voxels), seed=settings.seed)
        out["prdc"] = {k: pair(v) for k, v in result.items()}
    if "classifier" in settings.metrics:
        out["classifier"] = {}
        for name in settings.classifiers:
            try:
                out["classifier"][name] = _classifier(name, reference, generated, binning, hl_ref, hl_gen, settings)
            except cls.ClassifierInputError as exc:  # e.g. an energy slice too small to split three ways
                out["classifier"][name] = {"skipped": str(exc)}
    return out


def _classifier(name, reference: Sample, generated: Sample, binning, hl_ref, hl_gen, settings: Settings) -> dict:
    kw = dict(epochs=settings.epochs, repeats=settings.repeats, device=settings.device, seed=settings.seed,
              progress=settings.progress, **settings.classifier_kwargs)
    # the test trains on n rows per class: inputs for more rows than the smaller sample holds would
    # only cost memory (1.2 GB per 7400 dataset-3 showers)
    n = min(len(reference.voxels), len(generated.voxels))
    v_ref, v_gen = reference.voxels[:n], generated.voxels[:n]
    e_ref, e_gen = reference.features.e_inc[:n], generated.features.e_inc[:n]
    if name == "high":
        result = cls.classifier_test(hl_ref, hl_gen, **kw)
    elif name == "low":
        result = cls.classifier_test(cls.low_level_inputs(v_ref, e_ref), cls.low_level_inputs(v_gen, e_gen), **kw)
    elif name == "low-normed":
        sizes = [layer.n_voxels for layer in binning.layers]
        result = cls.classifier_test(cls.low_normed_inputs(v_ref, e_ref, sizes),
                                     cls.low_normed_inputs(v_gen, e_gen, sizes), **kw)
    elif name == "cnn":
        if not binning.is_regular:
            return {"skipped": "the ResNet needs a regular (z, alpha, r) mesh"}
        (x_ref, c_ref), (x_gen, c_gen) = cls.resnet_inputs(v_ref, e_ref), cls.resnet_inputs(v_gen, e_gen)
        result = cls.classifier_test(x_ref, x_gen, model="cnn", extra_reference=c_ref, extra_generated=c_gen,
                                     shape=binning.shape, **kw)
    else:
        raise ValueError(f"unknown classifier {name!r}; known: {', '.join(CLASSIFIERS)}")
    spread = settings.repeats > 1  # one training has no error estimate
    return {"auc": pair(result["auc"], result["auc_std"] if spread else None),
            "jsd": pair(result["jsd"], result["jsd_std"] if spread else None),
            "n_train": result["n_train"], "n_test": result["n_test"], "n_val": result["n_val"],
            "best_epochs": result["best_epochs"]}


def global_fpd(reference: Sample, generated: Sample, binning, settings: Settings) -> tuple[float, float]:
    """FPD on the seven global features, with the bootstrap error over showers (as the distances'):
    the batch error of JetNet's fit, drawn from one sample, misses the sample's own fluctuation, which
    is what a model is compared with the floor against. Batches follow the sample (n/5 ... n, 5 x 5,
    as calofm's studies; 10x cheaper than JetNet's 10 000-50 000 for every replica). The replicas' fit
    warnings are not repeated."""
    batches = sample_batches(min(len(reference), len(generated)))

    def value(ref: np.ndarray, gen: np.ndarray) -> float:
        return fpd(ref, gen, seed=settings.seed, **batches)[0]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return bootstrap(value, global_vector(reference.features, binning), global_vector(generated.features, binning),
                         settings.n_bootstrap, settings.seed)


def fpd_evidence(model: dict, floor: dict | None) -> dict:
    """What each FPD of ``model`` (a comparison with "fpd" and "fpd_global") says beside the floor:
    {key: {"separates": true | false | null, "shown": bool, "why": one line}}. null: not evidence either
    way, because the sample is too small for the feature count (measured; then not shown) or there is
    no floor to compare with."""
    out, n = {}, min(model["n_reference"], model["n_generated"])
    for key, features in (("fpd", "the CaloChallenge features"), ("fpd_global", "the seven global features")):
        m, g = model.get(key, {}), (floor or {}).get(key, {})
        if key == "fpd" and n < FPD_EVIDENCE_SHOWERS:
            out[key] = {"separates": None, "shown": False, "why": (
                f"not evidence at {n} showers: FPD on {features} did not separate a 5 % energy scale from Geant4 "
                f"at any size up to {FPD_EVIDENCE_SHOWERS} showers per sample (measured, studies/fpd-small-samples), "
                f"so it is shown from {FPD_EVIDENCE_SHOWERS}; FPD on the seven global features separates that "
                "scale from about 1000 showers")}
        elif m.get("value") is None or g.get("value") is None:
            out[key] = {"separates": None, "shown": True,
                        "why": "no Geant4 floor to compare with (reference too small to split)"}
        else:
            difference, error = m["value"] - g["value"], math.hypot(m["error"] or 0.0, g["error"] or 0.0)
            sigma = difference / error if error > 0 else math.copysign(math.inf, difference)
            verdict = "told from" if sigma > FPD_SIGMAS else "not told from"
            out[key] = {"separates": bool(sigma > FPD_SIGMAS), "shown": True, "why": (
                f"{verdict} Geant4: {m['value'] * 1e3:.4g} x 10^-3 against the floor's {g['value'] * 1e3:.4g}, "
                f"{sigma:.1f} sigma (threshold {FPD_SIGMAS:g}; {ERRORS[key]})")}
    return out


def quick_metrics(reference: Sample, generated: Sample, binning, seed: int = 0) -> dict[str, float]:
    """The cheap metrics watched during training: the W1 of the visible/incident energy ratio and
    the six-observable W1 geometric mean of the CaloClouds II transfer study with its error. A generated
    sample without any deposit above threshold (e.g. an untrained model) has no profiles: its geometric
    mean is inf."""
    distances = observable_distances(observables(reference, binning), observables(generated, binning),
                                     n_bootstrap=5, seed=seed)
    value, error = six_observable_geometric_mean(distances)
    return {"w1_energy_ratio": distances["energy_ratio"]["wasserstein"][0], "gm_w1": value, "gm_w1_err": error}


def split_reference(reference: Sample, seed: int) -> tuple[Sample, Sample] | None:
    """Halves A and B of the reference for the Geant4-vs-Geant4 floor, or None if too small."""
    if len(reference) < 2 * MIN_FLOOR_SHOWERS:
        return None
    order = np.random.default_rng(seed).permutation(len(reference))
    half = len(reference) // 2
    return reference.take(np.sort(order[:half])), reference.take(np.sort(order[half:2 * half]))


def slice_bins(values: np.ndarray, edges: list[float] | None) -> list[tuple[float, float]]:
    """Slices of ``values``: given edges, or decades of incident energy covering the data."""
    if edges is None:
        lo, hi = math.floor(np.log10(values.min())), math.ceil(np.log10(values.max()))
        edges = [10.0**k for k in range(lo, hi + 1)]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:])]
