"""The CaloChallenge protocol (`calofm evaluate --protocol calochallenge`): the numbers of the
CaloChallenge 2022 reference evaluation (``evaluate.py`` of github.com/CaloChallenge/homepage),
defined as it defines them, on the same files.

- The model is compared with the whole reference file; voxels below the dataset's threshold
  (1 MeV for dataset 1, 15.15 keV = 0.5 keV / 0.033 for datasets 2 and 3) are set to 0 first.
- High-level features in the file's float precision, as the reference computes them: E_tot and
  E_layer summed in the showers' dtype; centres and widths of energy in eta = r cos(alpha) and
  phi = r sin(alpha) (layers binned in alpha) and in r, float64 numerators over the showers'-dtype
  sum + 1e-16; sparsity = 1 - fraction of voxels above 0.
- Histograms on the reference's fixed bins (:func:`histogram_bins`): E_tot/E_inc on 100 bins in
  [0.5, 1.5]; E_layer on 39 log bins from the threshold to the reference's maximum; centres and
  widths on 100 bins of fixed ranges per dataset and layer; for dataset 1 E_tot/E_inc per
  incident energy; every voxel on 49 log bins. Separation power 0.5 sum (p - q)^2 / (p + q) of
  the normalised histograms; written to ``histogram_chi2_<dataset>.txt`` in the reference's
  order and format.
- FPD and KPD (JetNet's definitions and defaults: batches of 10 000-50 000 drawn with
  replacement, seed 42; KPD's median of 10 batches of 10 000) of the high-level vector
  [log10 E_inc, log10(E_layer + 1e-8), EC_eta/100, EC_phi/100, W_eta/100, W_phi/100,
  log10(E_tot + 1e-8), sparsity, EC_r/100, W_r/100], written to ``fpd_kpd_<dataset>.txt``.
- PRDC (k = 5) on log10 voxel energies with empty voxels at 0.1 MeV, ``prdc_<dataset>.txt``.
- Classifiers (``cls-low``: [log10 E_inc, voxels / E_inc]; ``cls-high``: the FPD vector;
  ``cls-low-normed``: [log10 E_inc, voxels / E_layer, log10 E_layer]): the reference's DNN (3 hidden
  layers of 2048, LeakyReLU), Adam 2e-4, batches of 1000, 50 epochs, the epoch of best test accuracy,
  isotonic calibration on the test split, AUC and JSD on the validation split. Splits per class as
  the reference's (:func:`classifier_splits`); ``classifier_<mode>_<dataset>.txt``.

Where calofm departs from the reference code it says so in ``docs/evaluation-calochallenge.md``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calofm.evaluate.distances import separation_power_histograms
from calofm.geometry import CylindricalBinning, calochallenge_binning


@dataclass(frozen=True)
class Dataset:
    """One CaloChallenge dataset: its binning and the reference's settings for it."""

    name: str                   # as the reference names it: 1-photons, 1-pions, 2, 3
    binning: str                # calofm's binning name
    min_energy: float           # MeV: voxels below are set to 0
    ec_range: float             # centre of energy histograms: [-x, x]; widths [0, x] (ds1: see ``wide``)
    width_range: float
    splits: tuple[int, int, int]  # the reference's classifier events per class: train, test, validation
    wide: tuple[int, ...] = ()  # dataset-1 layers with the wide ranges (pions' hadronic layers 12, 13)


DATASETS = {d.name: d for d in (
    Dataset("1-photons", "dataset_1_photons", 1.0, 100.0, 100.0, (80_000, 20_000, 21_000)),
    Dataset("1-pions", "dataset_1_pions", 1.0, 100.0, 100.0, (80_000, 20_000, 20_800), wide=(12, 13)),
    Dataset("2", "dataset_2", 0.5e-3 / 0.033, 30.0, 30.0, (60_000, 20_000, 20_000)),
    Dataset("3", "dataset_3", 0.5e-3 / 0.033, 30.0, 30.0, (60_000, 20_000, 20_000)),
)}
WIDE_RANGES = (500.0, 400.0)  # dataset 1, layers in ``wide``: centre [-500, 500], width [0, 400]
DS1_ENERGIES = 2.0 ** np.linspace(8, 23, 16)  # MeV: dataset 1's incident energies, 256 MeV ... 8.4 TeV


def dataset_of(binning: CylindricalBinning) -> Dataset:
    """The CaloChallenge dataset whose binning ``binning`` is (by its voxel count and layers)."""
    for dataset in DATASETS.values():
        candidate = calochallenge_binning(dataset.binning)
        if candidate.n_voxels == binning.n_voxels and candidate.layers == binning.layers:
            return dataset
    raise ValueError(f"the CaloChallenge protocol needs a CaloChallenge binning (368, 533, 6480 or 40500 voxels); "
                     f"this one has {binning.n_voxels}")


class Geometry:
    """The reference's voxel coordinates: per relevant layer its slice, r mid-points, and eta, phi."""

    def __init__(self, binning: CylindricalBinning):
        self.layers = [i for i, layer in enumerate(binning.layers) if layer.n_voxels]
        self.alpha_layers = [i for i in self.layers if binning.layers[i].n_alpha > 1]
        self.slices, self.r, self.eta, self.phi = {}, {}, {}, {}
        for i in self.layers:
            layer = binning.layers[i]
            self.slices[i] = slice(binning.layer_offsets[i], binning.layer_offsets[i + 1])
            edges = list(layer.r_edges)
            r_mid = np.array([a + (b - a) / 2 for a, b in zip(edges, edges[1:])])
            alpha = np.linspace(-math.pi, math.pi, layer.n_alpha + 1)
            a_mid = np.array([a + (b - a) / 2 for a, b in zip(alpha, alpha[1:])])
            r, a = np.tile(r_mid, layer.n_alpha), np.repeat(a_mid, len(r_mid))  # alpha slowest, r fastest
            self.r[i], self.eta[i], self.phi[i] = r, r * np.cos(a), r * np.sin(a)


@dataclass
class ChallengeFeatures:
    """The reference's high-level features of thresholded showers (dicts keyed by layer id)."""

    e_inc: np.ndarray
    e_tot: np.ndarray
    e_layer: dict
    sparsity: dict
    ec_r: dict
    width_r: dict
    ec_eta: dict
    ec_phi: dict
    width_eta: dict
    width_phi: dict

    @classmethod
    def of(cls, showers: np.ndarray, e_inc: np.ndarray, geometry: Geometry) -> ChallengeFeatures:
        f = cls(np.asarray(e_inc).reshape(-1), showers.sum(axis=-1), *({} for _ in range(8)))
        for i in geometry.layers:
            block = showers[:, geometry.slices[i]]
            total = block.sum(axis=-1)
            f.e_layer[i] = total
            f.sparsity[i] = 1.0 - (block > 0).mean(axis=-1)
            f.ec_r[i], f.width_r[i] = _centre_and_width(block, total, geometry.r[i])
            if i in geometry.alpha_layers:
                f.ec_eta[i], f.width_eta[i] = _centre_and_width(block, total, geometry.eta[i])
                f.ec_phi[i], f.width_phi[i] = _centre_and_width(block, total, geometry.phi[i])
        return f

    def vector(self) -> np.ndarray:
        """The high-level classifier and FPD/KPD input (N, d), float64, in the reference's order and
        precision (the logs of E_layer and E_tot taken in the showers' dtype)."""
        def block(per_layer: dict) -> np.ndarray:
            return np.stack(list(per_layer.values()), axis=1)

        parts = [np.log10(self.e_inc)[:, None], np.log10(block(self.e_layer) + 1e-8),
                 block(self.ec_eta) / 1e2, block(self.ec_phi) / 1e2, block(self.width_eta) / 1e2,
                 block(self.width_phi) / 1e2, np.log10(self.e_tot + 1e-8)[:, None], block(self.sparsity),
                 block(self.ec_r) / 1e2, block(self.width_r) / 1e2]
        return np.concatenate(parts, axis=1).astype(np.float64)


def _centre_and_width(block: np.ndarray, total: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy-weighted mean of ``x`` and its spread, with the reference's precision: float64
    numerators over the block's-dtype sum + 1e-16, the variance clipped at 0."""
    denominator = total + 1e-16
    centre = (x * block).sum(axis=-1) / denominator
    second = (x * x * block).sum(axis=-1) / denominator
    return centre, np.sqrt((second - centre**2).clip(min=0.0))


def threshold(showers: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Voxels below the dataset's threshold set to 0 (the threshold itself is kept)."""
    return np.where(showers < dataset.min_energy, 0, showers)


def histogram_bins(dataset: Dataset, reference: ChallengeFeatures, reference_voxel_max) -> list[tuple]:
    """(label, feature name, key, edges) of every histogram, in the reference's order."""
    bins = [("Etot / Einc", "ratio", None, np.linspace(0.5, 1.5, 101))]
    low = np.log10(dataset.min_energy)
    bins += [(f"E layer {i}", "e_layer", i, np.logspace(low, np.log10(reference.e_layer[i].max()), 40))
             for i in reference.e_layer]
    for label, name, lower in (("EC Eta", "ec_eta", -1), ("EC Phi", "ec_phi", -1), ("Width Eta", "width_eta", 0),
                               ("Width Phi", "width_phi", 0)):
        for i in getattr(reference, name):
            wide = WIDE_RANGES[lower == 0] if i in dataset.wide else None
            top = wide or (dataset.ec_range if lower else dataset.width_range)
            bins.append((f"{label} layer {i}", name, i, np.linspace(lower * top, top, 101)))
    if dataset.name.startswith("1-"):
        bins += [(f"Etot / Einc at E = {e}", "ratio_at", k, _ds1_ratio_bins(dataset, k))
                 for k, e in enumerate(DS1_ENERGIES[:-1])]
    bins.append(("Voxel distribution", "voxels", None, np.logspace(low, np.log10(reference_voxel_max), 50)))
    return bins


def _ds1_ratio_bins(dataset: Dataset, k: int) -> np.ndarray:
    """E_tot/E_inc bins at dataset 1's k-th incident energy: narrower for photons from 4 GeV up."""
    return np.linspace(0.9, 1.1, 21) if dataset.name == "1-photons" and k >= 4 else np.linspace(0.4, 1.4, 21)


def _values(features: ChallengeFeatures, showers: np.ndarray, name: str, key):
    if name == "ratio":
        return features.e_tot / features.e_inc
    if name == "ratio_at":
        lo, hi = DS1_ENERGIES[key], DS1_ENERGIES[key + 1]
        chosen = (features.e_inc >= lo) & (features.e_inc < hi)
        return features.e_tot[chosen] / features.e_inc[chosen]
    if name == "voxels":
        return showers.reshape(-1)
    return getattr(features, name)[key]


def separation_powers(dataset: Dataset, reference: ChallengeFeatures, reference_showers: np.ndarray,
                      generated: ChallengeFeatures, generated_showers: np.ndarray) -> dict[str, float]:
    """Label -> separation power of every histogram of the reference evaluation (NaN where a
    sample has no entry in range, as the reference writes)."""
    out = {}
    for label, name, key, edges in histogram_bins(dataset, reference, reference_showers.max()):
        ref = _values(reference, reference_showers, name, key)
        gen = _values(generated, generated_showers, name, key)
        out[label] = _separation_or_nan(ref, gen, edges)
    return out


def _separation_or_nan(reference, generated, edges) -> float:
    """Separation power of the two samples' histograms, each normalised over its in-range entries
    (the files were validated when read, so the arrays go to np.histogram as they are)."""
    counts = [np.histogram(x, edges)[0] for x in (reference, generated)]
    return separation_power_histograms(*counts) if min(c.sum() for c in counts) > 0 else math.nan


def write_separation_powers(path: Path, powers: dict[str, float]) -> None:
    """``histogram_chi2_<dataset>.txt`` as the reference writes it (its name says chi2; the
    values are separation powers)."""
    text = "List of chi2 of the plotted histograms, see eq. 15 of 2009.03796 for its definition.\n"
    text += "".join(f"{label}: \n{_repr(value)}\n\n" for label, value in powers.items())
    Path(path).write_text(text)


def _repr(value: float) -> str:
    return str(np.float64(value))


def write_fpd_kpd(path: Path, fpd: tuple[float, float], kpd: tuple[float, float]) -> None:
    """``fpd_kpd_<dataset>.txt``: both x 10^3 with four decimals, as the reference."""
    Path(path).write_text(f"FPD (x10^3): {fpd[0] * 1e3:.4f} ± {fpd[1] * 1e3:.4f}\n"
                          f"KPD (x10^3): {kpd[0] * 1e3:.4f} ± {kpd[1] * 1e3:.4f}")


def write_prdc(path: Path, values: dict[str, float]) -> None:
    """``prdc_<dataset>.txt``: one ``key: value`` line per metric (the reference runs them together)."""
    Path(path).write_text("".join(f"{key}: {values[key]}\n" for key in ("precision", "recall", "density",
                                                                         "coverage")))


def classifier_splits(dataset: Dataset, n_per_class: int) -> tuple[int, int, int]:
    """Classifier events per class in (train, test, validation). As the reference's ``ttv_split``: its
    train and test counts, the rest of the sample for validation. Where the sample has no more than
    those (the reference crashes), the same proportions of what there is."""
    train, test, val = dataset.splits
    if n_per_class > train + test:
        return train, test, n_per_class - train - test
    train, test = (n_per_class * np.array([train, test])) // (train + test + val)
    return int(train), int(test), int(n_per_class - train - test)


@dataclass(frozen=True)
class ClassifierSettings:
    """The reference's classifier options (its ``--cls_*`` flags) and calofm's run options."""

    hidden: int = 2048       # --cls_n_hidden
    epochs: int = 50         # --cls_n_epochs
    batch_size: int = 1000   # --cls_batch_size
    lr: float = 2e-4         # --cls_lr
    repeats: int = 1         # trainings with seeds seed ... seed + repeats - 1: mean and spread
    seed: int = 0
    device: str = "cpu"
    precision: str = "float32"  # or "bfloat16" (autocast; about 6x faster on CPUs with AMX and on GPUs)
    progress: bool = False


def classifier_inputs(mode: str, voxels: np.ndarray, features: ChallengeFeatures, geometry: Geometry) -> np.ndarray:
    """The input rows of one reference classifier mode (``cls-low``, ``cls-high``, ``cls-low-normed``)."""
    from calofm.evaluate.classifier import low_level_inputs, low_normed_inputs

    if mode == "cls-low":
        return low_level_inputs(voxels, features.e_inc)
    if mode == "cls-high":
        return features.vector().astype(np.float32)
    return low_normed_inputs(voxels, features.e_inc, [geometry.slices[i] for i in geometry.layers])


def challenge_classifier(mode: str, dataset: Dataset, reference: np.ndarray, generated: np.ndarray,
                         settings: ClassifierSettings) -> dict:
    """One reference classifier (generated = 0, reference = 1) on its splits; AUC and JSD (calibrated)."""
    from calofm.evaluate.classifier import classifier_test

    s = settings
    sizes = classifier_splits(dataset, min(len(reference), len(generated)))
    result = classifier_test(reference, generated, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=s.seed,
                             device=s.device, repeats=s.repeats, sizes=sizes, precision=s.precision,
                             model_kwargs={"hidden": s.hidden}, progress=s.progress)
    keys = ("auc", "auc_std", "jsd", "jsd_std", "best_epochs", "n_per_class", "precision")
    return {key: result[key] for key in keys} | {"hidden": s.hidden, "epochs": s.epochs}


def write_classifier(path: Path, result: dict) -> None:
    """``classifier_<mode>_<dataset>.txt`` as the reference writes it (one block: the mean over trainings)."""
    Path(path).write_text("Final result of classifier test (AUC / JSD):\n"
                          f"{result['auc']:.4f} / {result['jsd']:.4f}\n\n")


CLASSIFIERS = ("cls-low", "cls-high", "cls-low-normed")
PARTS = ("hist", "fpd", "prdc", *CLASSIFIERS)  # the reference's modes (its cls-resnet: the default protocol's cnn)
DEFAULT_PARTS = ("hist", "fpd", "prdc", "cls-low", "cls-high")  # what the published tables report
PRDC_MAX_SHOWERS = 10_000  # per sample; the reference's full N x N distances do not fit a workstation at 100k


def evaluate_challenge(generated: str | Path, reference: str | Path, out: str | Path, parts=DEFAULT_PARTS,
                       binning: CylindricalBinning | None = None, log=print,
                       classifier: ClassifierSettings = ClassifierSettings()) -> dict:
    """The reference evaluation's numbers for ``generated`` against the whole ``reference`` file:
    its text files in ``out`` (``histogram_chi2_<ds>.txt``, ``fpd_kpd_<ds>.txt``, ``prdc_<ds>.txt``,
    ``classifier_<mode>_<ds>.txt``) and ``metrics.json`` (``protocol: calochallenge``); returns the
    metrics."""
    from calofm.core.errors import InputError
    from calofm.core.files import atomic_path, check_output
    from calofm.data.files import open_showers
    from calofm.evaluate.fpd import fpd, kpd
    from calofm.evaluate.prdc import prdc, prdc_inputs

    out = check_output(out, folder=True)
    samples, readouts = {}, {}
    for role, path in (("generated", generated), ("reference", reference)):
        with open_showers(path, binning) as f:
            samples[role], readouts[role] = f.read(), f.readout
    readout = readouts["reference"]
    if readouts["generated"].n_voxels != readout.n_voxels:
        raise InputError(generated, f"{readouts['generated'].n_voxels} voxels per shower, the reference "
                                    f"{reference} has {readout.n_voxels}: the files must share one binning")
    dataset = dataset_of(readout)
    geometry = Geometry(readout)
    voxels = {role: threshold(s.showers, dataset) for role, s in samples.items()}
    features = {role: ChallengeFeatures.of(voxels[role], s.energy, geometry) for role, s in samples.items()}
    out.mkdir(parents=True, exist_ok=True)
    metrics = {"schema": "calofm-metrics/1", "protocol": "calochallenge", "dataset": dataset.name,
               "generated": str(generated), "reference": str(reference),
               "n_generated": len(samples["generated"].energy), "n_reference": len(samples["reference"].energy),
               "threshold_MeV": dataset.min_energy}
    ref, gen = features["reference"], features["generated"]
    if "hist" in parts:
        log(f"separation powers of the reference's histograms (dataset {dataset.name})")
        metrics["separation_powers"] = separation_powers(dataset, ref, voxels["reference"], gen, voxels["generated"])
        with atomic_path(out / f"histogram_chi2_{dataset.name}.txt") as tmp:
            write_separation_powers(tmp, metrics["separation_powers"])
    if "fpd" in parts:
        log("FPD and KPD of the high-level features (JetNet's definitions)")
        x, y = ref.vector(), gen.vector()
        fpd_value = fpd(x, y, min_samples=10_000, dtype=np.float64)  # float64 features, as JetNet
        kpd_value = kpd(x, y, batch_size=10_000, dtype=np.float64)
        metrics["fpd"], metrics["kpd"] = list(fpd_value), list(kpd_value)
        with atomic_path(out / f"fpd_kpd_{dataset.name}.txt") as tmp:
            write_fpd_kpd(tmp, fpd_value, kpd_value)
    if "prdc" in parts:
        log("precision, recall, density and coverage of log10 voxel energies")
        metrics["prdc"] = prdc(prdc_inputs(voxels["reference"]), prdc_inputs(voxels["generated"]), k=5,
                               max_samples=PRDC_MAX_SHOWERS)
        with atomic_path(out / f"prdc_{dataset.name}.txt") as tmp:
            write_prdc(tmp, metrics["prdc"])
    for mode in (part for part in parts if part in CLASSIFIERS):
        log(f"{mode} classifier ({classifier.epochs} epochs, {classifier.repeats} training(s), {classifier.precision})")
        rows = {role: classifier_inputs(mode, voxels[role], features[role], geometry) for role in voxels}
        result = challenge_classifier(mode, dataset, rows["reference"], rows["generated"], classifier)
        metrics.setdefault("classifiers", {})[mode] = result
        with atomic_path(out / f"classifier_{mode}_{dataset.name}.txt") as tmp:
            write_classifier(tmp, result)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, default=_json_float))
    return metrics


def _json_float(value):
    value = float(value)
    return None if math.isnan(value) else value


LEADERBOARD = Path(__file__).with_name("leaderboard") / "calochallenge-2022.json"
BOARD_COLUMNS = {  # shown column -> (published column, the user's value from metrics, scale)
    "FPD x1e3": ("FPD * 1e3", lambda m: m.get("fpd", [None])[0], 1e3),
    "KPD x1e3": ("KPD * 1e3", lambda m: m.get("kpd", [None])[0], 1e3),
    "sep E total": ("sep E total", lambda m: _separations(m, "Etot / Einc"), 1.0),
    "sep E layer": ("sep E layer", lambda m: _separations(m, "E layer "), 1.0),
    "sep EC eta": ("sep EC eta", lambda m: _separations(m, "EC Eta layer "), 1.0),
    "sep EC phi": ("sep EC phi", lambda m: _separations(m, "EC Phi layer "), 1.0),
    "sep cell": ("sep cell", lambda m: _separations(m, "Voxel distribution"), 1.0),
    "precision": ("precision", lambda m: m.get("prdc", {}).get("precision"), 1.0),
    "coverage": ("coverage", lambda m: m.get("prdc", {}).get("coverage"), 1.0),
    "AUC low": ("binary cls low", lambda m: m.get("classifiers", {}).get("cls-low", {}).get("auc"), 1.0),
    "AUC high": ("binary cls high", lambda m: m.get("classifiers", {}).get("cls-high", {}).get("auc"), 1.0),
    "GPU ms, batch 100": ("time GPU 100", lambda m: None, 1.0),
}


def _separations(metrics: dict, label: str):
    """The separation power ``label``, or for a per-layer one (``label`` ends with a space) the mean
    over its layers (the published tables give one number per observable)."""
    values = [v for name, v in metrics.get("separation_powers", {}).items()
              if (name.startswith(label) if label.endswith(" ") else name == label)
              and v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


def leaderboard(metrics: dict, name: str = "this model") -> str:
    """The published CaloChallenge 2022 table of ``metrics``' dataset with this model placed in it by
    FPD (markdown); the model's empty cells are what this protocol does not compute."""
    published = json.loads(LEADERBOARD.read_text())
    dataset = metrics["dataset"]
    if dataset not in published["datasets"]:
        raise ValueError(f"the CaloChallenge 2022 results publish no table for dataset {dataset} "
                         f"(tables: {', '.join(published['datasets'])})")
    index = {column: i for i, column in enumerate(published["columns"])}
    rows = [(row[0], [row[index[source]] for source, _, _ in BOARD_COLUMNS.values()])
            for row in published["datasets"][dataset]]
    ours = [None if (v := get(metrics)) is None else v * scale for _, get, scale in BOARD_COLUMNS.values()]
    rows.append((f"**{name}**", ours))
    rows.sort(key=lambda row: math.inf if row[1][0] is None else row[1][0])
    lines = [f"CaloChallenge 2022, dataset {dataset} ({published['source']}), ordered by FPD:", "",
             "| submission | " + " | ".join(BOARD_COLUMNS) + " |", "|" + " --- |" * (len(BOARD_COLUMNS) + 1)]
    lines += [f"| {label} | " + " | ".join("-" if v is None else f"{v:.4g}" for v in values) + " |"
              for label, values in rows]
    return "\n".join(lines) + "\n"
