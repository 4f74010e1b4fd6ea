"""calofm's CaloChallenge protocol beside the reference evaluation code, on the same files.

    .venv/bin/python benchmarks/bench_calochallenge.py [--n 10000] [--reference-code DIR] [--epochs 50]

Toy dataset-2 files (``--n`` reference showers and ``--n`` model showers with voxel energies x 1.05)
go through the reference's ``hist`` and ``fpd`` modes (its ``run_reference.sh``, own venv, CPU), its
``cls-low`` and ``cls-high`` classifiers, and ``calofm evaluate --protocol calochallenge --parts
hist,fpd,cls-low,cls-high``, in float32 and in bfloat16. Prints wall time and peak memory of each
(RSS of the largest process, from wait4) and the ratios.

The reference's classifier modes split by fixed counts (60 000 training showers per class for
dataset 2) and stop with an error on smaller files. For the same work on these files, the benchmark
calls the reference's own classifier functions (``ttv_split`` with its default fractions 0.6 / 0.2 /
0.2, the same splits calofm uses here, ``DNN``, ``train_and_evaluate_cls``, ``evaluate_cls`` with
calibration) in the reference's working copy and venv, unmodified, as its ``cls-*`` modes call them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from calofm.data import write_showers
from calofm.data.toy import toy_showers
from calofm.geometry import calochallenge_binning

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = """
import argparse, os, sys
import h5py, numpy as np, torch
from torch.utils.data import DataLoader, TensorDataset
import evaluate, HighLevelFeatures as HLF
gen, ref, mode, epochs, out = sys.argv[1:6]
arrays = []
for path, label in ((gen, 0.), (ref, 1.)):
    f = h5py.File(path, 'r')
    shower, energy = evaluate.extract_shower_and_energy(f, which='input')
    shower = np.where(shower < 0.5e-3 / 0.033, np.zeros_like(shower), shower)
    hlf = HLF.HighLevelFeatures('electron', filename='binning_dataset_2.xml')
    hlf.CalculateFeatures(shower)
    hlf.Einc = energy
    prepare = {'cls-low': evaluate.prepare_low_data_for_classifier,
               'cls-high': evaluate.prepare_high_data_for_classifier}[mode]
    arrays.append(prepare(f, hlf, label, threshold=0.5e-3 / 0.033))
train, test, val = evaluate.ttv_split(*arrays)
args = argparse.Namespace(cls_n_epochs=int(epochs), save_mem=False, device=torch.device('cpu'), mode=mode,
                          dataset='2', output_dir=out)
model = evaluate.DNN(num_layer=2, num_hidden=2048, input_dim=train.shape[1] - 1)
loaders = [DataLoader(TensorDataset(torch.tensor(d)), batch_size=1000, shuffle=s)
           for d, s in ((train, True), (test, False), (val, False))]
evaluate.train_and_evaluate_cls(model, loaders[0], loaders[1], torch.optim.Adam(model.parameters(), lr=2e-4), args)
model = evaluate.load_classifier(model, args)
with torch.no_grad():
    print('RESULT', evaluate.evaluate_cls(model, loaders[2], args, final_eval=True, calibration_data=loaders[1]))
"""


def timed(cmd: list[str], **kwargs) -> tuple[float, float]:
    """Wall seconds and the peak RSS (MiB) of the largest process of ``cmd``'s tree."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{' '.join(cmd[:3])} ... failed with status {status}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="showers in each file (default 10000)")
    parser.add_argument("--reference-code", type=Path, default=ROOT.parent / "shared/reference/calochallenge_code")
    parser.add_argument("--epochs", type=int, default=50, help="classifier epochs (default 50, the reference's)")
    parser.add_argument("--precisions", default="float32,bfloat16", help="calofm's classifier precisions to time")
    parser.add_argument("--calofm-only", action="store_true", help="time calofm alone (the reference takes 25 min)")
    args = parser.parse_args()
    env = Path(os.environ.get("CCENV", "/tmp/ccenv"))
    binning = calochallenge_binning("dataset_2")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        reference = toy_showers(binning, args.n, seed=31, e_min=1e3, e_max=1e5)
        model = toy_showers(binning, args.n, seed=32, e_min=1e3, e_max=1e5)
        model = model.with_fields(showers=(model.showers * 1.05).astype(np.float32))
        write_showers(tmp / "reference.h5", reference, "calochallenge", binning)
        write_showers(tmp / "model.h5", model, "calochallenge", binning)
        files = [str(tmp / "model.h5"), str(tmp / "reference.h5")]
        rows = []
        for mode in () if args.calofm_only else ("hist", "fpd"):
            (tmp / "reference.pkl").unlink(missing_ok=True)  # the reference caches features beside the file
            seconds, mib = timed([str(args.reference_code / "run_reference.sh"), *files, "2", mode, str(tmp / "ref")])
            written = tmp / "ref" / {"hist": "histogram_chi2_2.txt", "fpd": "fpd_kpd_2.txt"}[mode]
            if not written.exists():  # run_reference.sh exits 0 whatever evaluate.py did
                raise SystemExit(f"the reference's {mode} mode wrote no {written.name}")
            rows.append((f"reference {mode}", seconds, mib))
        for mode in () if args.calofm_only else ("cls-low", "cls-high"):
            work = max((p for p in Path("/tmp").glob("ccref.*")), key=os.path.getmtime)  # run_reference.sh's copy
            seconds, mib = timed([str(env / "bin/python"), "-c", CLASSIFIER, *files, mode, str(args.epochs),
                                  str(tmp / "ref")], cwd=work)
            rows.append((f"reference {mode}", seconds, mib))
        for precision in args.precisions.split(","):
            seconds, mib = timed([sys.executable, "-m", "calofm.cli.main", "evaluate", "--protocol", "calochallenge",
                                  "--parts", "hist,fpd,cls-low,cls-high", "--epochs", str(args.epochs),
                                  "--precision", precision, "--generated", files[0], "--reference", files[1],
                                  "--out", str(tmp / f"calofm-{precision}")])
            rows.append((f"calofm, {precision}", seconds, mib))
    print(f"{args.n} model and {args.n} reference dataset-2 showers, {args.epochs} classifier epochs, this machine "
          f"({os.cpu_count()} cores)")
    for name, seconds, mib in rows:
        print(f"  {name:20s} {seconds:8.1f} s   peak {mib:8.0f} MiB")
    reference = sum(seconds for name, seconds, _ in rows if name.startswith("reference"))
    for name, seconds, _ in rows if reference else ():
        if name.startswith("calofm"):
                print(f"  reference hist + fpd + cls-low + cls-high {reference:.1f} s against {name} {seconds:.1f} s: "
                  f"{reference / seconds:.1f}x")


if __name__ == "__main__":
    main()
