"""Expected values of the CaloChallenge reference evaluation for tests/test_calochallenge.py, obtained
by running the reference code itself (never copied into calofm) on the toy file pairs of
``conftest.calochallenge_pair``:

    .venv/bin/python tests/data/calochallenge/make_expected.py [--code DIR] [--datasets 1-pions,3] [--classifier]

With ``--datasets`` or ``--classifier`` only those entries are recomputed; the others are kept.
DIR defaults to ../shared/reference/calochallenge_code (the CaloChallenge homepage
repository's ``code/``, with ``run_reference.sh``, which builds the reference's own venv on first use:
internet once). For each dataset pair it runs the reference's ``hist`` and ``prdc`` modes and reads
their text files (full precision), and computes FPD and KPD with the reference's own feature code and
JetNet in the reference's working copy, printing them at full precision (its ``fpd`` mode writes four
decimals only). For the classifier (``conftest.calochallenge_classifier_pair``) it runs the
reference's ``cls-low`` and ``cls-high`` modes several times with its own flags for a smaller network
(``--cls_n_hidden``, ``--cls_n_epochs``; the challenge's 3 x 2048 for 50 epochs takes hours on a CPU in
float64) and keeps every training's AUC and JSD (four decimals, as it writes them): the spread of
repeated trainings. Writes tests/data/calochallenge/expected.json with the inputs' SHA-256, so a test
notices when the regenerated inputs differ from the ones these numbers belong to.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import (  # noqa: E402
    CALOCHALLENGE_CLASSIFIER_PAIR,
    CALOCHALLENGE_PAIRS,
    calochallenge_classifier_pair,
    calochallenge_pair,
)

CLASSIFIER_TRAININGS = 6  # per mode

HARNESS = """
import json, sys
import h5py, numpy as np
import evaluate, HighLevelFeatures as HLF, jetnet
gen, ref, ds = sys.argv[1:4]
particle = {'1-photons': 'photon', '1-pions': 'pion', '2': 'electron', '3': 'electron'}[ds]
min_energy = {'1-photons': 1., '1-pions': 1., '2': 0.5e-3/0.033, '3': 0.5e-3/0.033}[ds]
arrays = []
for path, label in ((gen, 0.), (ref, 1.)):
    f = h5py.File(path, 'r')
    shower, energy = evaluate.extract_shower_and_energy(f, which='input')
    shower = np.where(shower < min_energy, np.zeros_like(shower), shower)
    hlf = HLF.HighLevelFeatures(particle, filename='binning_dataset_{}.xml'.format(ds.replace('-', '_')))
    hlf.CalculateFeatures(shower)
    hlf.Einc = energy
    arrays.append(evaluate.prepare_high_data_for_classifier(f, hlf, label, threshold=min_energy)[:, :-1])
fpd = jetnet.evaluation.fpd(arrays[1], arrays[0], min_samples=10000)
kpd = jetnet.evaluation.kpd(arrays[1], arrays[0], batch_size=10000)
print('RESULT ' + json.dumps({'fpd': [float(v) for v in fpd], 'kpd': [float(v) for v in kpd]}))
"""


def sha256(path: Path) -> str:
    with h5py.File(path, "r") as f:
        digest = hashlib.sha256()
        for key in ("incident_energies", "showers"):
            digest.update(f[key][:].tobytes())
    return digest.hexdigest()


def separation_powers(path: Path) -> dict[str, float]:
    body = path.read_text().split("\n", 1)[1].strip()
    return {label: float(value) for label, value in (block.split(": \n") for block in body.split("\n\n"))}


def prdc(path: Path) -> dict[str, float]:
    text = path.read_text()  # the reference writes the four "key: value" pairs without separators
    out = {}
    for key, following in zip(("precision", "recall", "density", "coverage"), ("recall", "density", "coverage", None)):
        start = text.index(f"{key}: ") + len(key) + 2
        end = text.index(following) if following else len(text)
        out[key] = float(text[start:end])
    return out


def run_reference(code: Path, generated: Path, reference: Path, dataset: str, mode: str, out: Path) -> Path:
    """The reference's ``mode`` through run_reference.sh; returns the working copy it ran in."""
    subprocess.run([str(code / "run_reference.sh"), str(generated), str(reference), dataset, mode, str(out)],
                   check=True)
    return Path(max(glob.glob("/tmp/ccref.*"), key=os.path.getmtime))


def dataset_entry(code: Path, env: Path, dataset: str, folder: Path) -> dict:
    generated, reference = calochallenge_pair(dataset, folder)
    out = folder / "out"
    run_reference(code, generated, reference, dataset, "hist", out)
    work = run_reference(code, generated, reference, dataset, "prdc", out)
    run = subprocess.run([str(env / "bin/python"), "-c", HARNESS, str(generated), str(reference), dataset],
                         cwd=work, check=True, capture_output=True, text=True)
    return {"sha256": {"generated": sha256(generated), "reference": sha256(reference)},
            "separation_powers": separation_powers(out / f"histogram_chi2_{dataset}.txt"),
            "prdc": prdc(out / f"prdc_{dataset}.txt"), **json.loads(run.stdout.split("RESULT ", 1)[1])}


def classifier_entry(code: Path, env: Path, folder: Path) -> dict:
    """AUC and JSD of every training of the reference's cls-low and cls-high on the classifier pair."""
    generated, reference = calochallenge_classifier_pair(folder)
    settings = CALOCHALLENGE_CLASSIFIER_PAIR
    small = folder / "small"  # a working copy of the reference, from a quick run on the small pair
    work = run_reference(code, *calochallenge_pair("1-photons", small), "1-photons", "hist", small / "out")
    entry = {"dataset": "1-photons", **settings, "trainings": CLASSIFIER_TRAININGS,
             "sha256": {"generated": sha256(generated), "reference": sha256(reference)}}
    for mode in ("cls-low", "cls-high"):
        out = folder / mode
        out.mkdir(parents=True)
        for _ in range(CLASSIFIER_TRAININGS):  # unseeded in the reference: each training its own split and start
            subprocess.run([str(env / "bin/python"), "evaluate.py", "-i", str(generated), "-r", str(reference),
                            "-d", "1-photons", "-m", mode, "--output_dir", str(out), "--no_cuda",
                            "--cls_n_hidden", str(settings["hidden"]), "--cls_n_epochs", str(settings["epochs"])],
                           cwd=work, check=True, capture_output=True, env=dict(os.environ, MPLBACKEND="Agg"))
        results = [line.split(" / ") for line in (out / f"classifier_{mode}_1-photons.txt").read_text().splitlines()
                   if " / " in line and not line.startswith("Final")]
        entry[mode] = {"auc": [float(a) for a, _ in results], "jsd": [float(j) for _, j in results]}
        print(mode, entry[mode])
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT.parent / "shared/reference/calochallenge_code")
    parser.add_argument("--datasets", help="comma list of the pairs to recompute (default: all, and the classifier)")
    parser.add_argument("--classifier", action="store_true", help="recompute the classifier entry")
    args = parser.parse_args()
    code, env = args.code.resolve(), Path(os.environ.get("CCENV", "/tmp/ccenv"))
    path = Path(__file__).with_name("expected.json")
    partial = args.datasets is not None or args.classifier
    expected = json.loads(path.read_text()) if partial else {"datasets": {}}
    expected["source"] = ("CaloChallenge reference evaluate.py (github.com/CaloChallenge/homepage, code/), run by "
                          "tests/data/calochallenge/make_expected.py")
    datasets = list(CALOCHALLENGE_PAIRS) if args.datasets is None and not partial else (
        [] if args.datasets is None else args.datasets.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in datasets:
            expected["datasets"][dataset] = dataset_entry(code, env, dataset, Path(tmp) / dataset)
            print(dataset, json.dumps(expected["datasets"][dataset])[:300])
        if args.classifier or not partial:
            expected["classifier"] = classifier_entry(code, env, Path(tmp) / "classifier")
    path.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
