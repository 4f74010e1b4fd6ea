"""Expected values of the CaloChallenge reference evaluation for tests/test_calochallenge.py, obtained
by running the reference code itself (never copied into calofm) on the toy file pairs of
``conftest.calochallenge_pair``:

    .venv/bin/python tests/data/calochallenge/make_expected.py [REFERENCE_CODE_DIR]

REFERENCE_CODE_DIR defaults to ../shared/reference/calochallenge_code (the CaloChallenge homepage
repository's ``code/``, with ``run_reference.sh``, which builds the reference's own venv on first use:
internet once). For each dataset pair it runs the reference's ``hist`` and ``prdc`` modes and reads
their text files (full precision), and computes FPD and KPD with the reference's own feature code and
JetNet in the reference's working copy, printing them at full precision (its ``fpd`` mode writes four
decimals only). Writes tests/data/calochallenge/expected.json with the inputs' SHA-256, so a test
notices when the regenerated inputs differ from the ones these numbers belong to.
"""

from __future__ import annotations

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
from conftest import CALOCHALLENGE_PAIRS, calochallenge_pair  # noqa: E402

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


def main() -> None:
    code = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared/reference/calochallenge_code").resolve()
    env = Path(os.environ.get("CCENV", "/tmp/ccenv"))
    expected = {"source": "CaloChallenge reference evaluate.py (github.com/CaloChallenge/homepage, code/), run by "
                          "tests/data/calochallenge/make_expected.py", "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in CALOCHALLENGE_PAIRS:
            generated, reference = calochallenge_pair(dataset, Path(tmp) / dataset)
            out = Path(tmp) / dataset / "out"
            for mode in ("hist", "prdc"):
                subprocess.run([str(code / "run_reference.sh"), str(generated), str(reference), dataset, mode,
                                str(out)], check=True)
            work = max(glob.glob("/tmp/ccref.*"), key=os.path.getmtime)  # run_reference.sh's working copy
            run = subprocess.run([str(env / "bin/python"), "-c", HARNESS, str(generated), str(reference), dataset],
                                 cwd=work, check=True, capture_output=True, text=True)
            distances = json.loads(run.stdout.split("RESULT ", 1)[1])
            expected["datasets"][dataset] = {
                "sha256": {"generated": sha256(generated), "reference": sha256(reference)},
                "separation_powers": separation_powers(out / f"histogram_chi2_{dataset}.txt"),
                "prdc": prdc(out / f"prdc_{dataset}.txt"), **distances}
            print(dataset, json.dumps(expected["datasets"][dataset])[:300])
    path = Path(__file__).with_name("expected.json")
    path.write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
