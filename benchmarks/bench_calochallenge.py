"""calofm's CaloChallenge protocol beside the reference evaluation code, on the same files.

    .venv/bin/python benchmarks/bench_calochallenge.py [--n 10000] [--reference-code DIR]

Toy dataset-2 files (``--n`` reference showers and ``--n`` model showers with voxel energies x 1.05)
go through the reference's ``hist`` and ``fpd`` modes (its ``run_reference.sh``, own venv, CPU) and
through ``calofm evaluate --protocol calochallenge --parts hist,fpd``. Prints wall time and peak
memory of each (RSS of the process tree, from wait4) and the ratio. The reference's classifier
modes need 60 000 training showers per class and stop with an error on smaller files, so they
are not part of the comparison.
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
    args = parser.parse_args()
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
        for mode in ("hist", "fpd"):
            (tmp / "reference.pkl").unlink(missing_ok=True)  # the reference caches features beside the file
            seconds, mib = timed([str(args.reference_code / "run_reference.sh"), *files, "2", mode, str(tmp / "ref")])
            written = tmp / "ref" / {"hist": "histogram_chi2_2.txt", "fpd": "fpd_kpd_2.txt"}[mode]
            if not written.exists():  # run_reference.sh exits 0 whatever evaluate.py did
                raise SystemExit(f"the reference's {mode} mode wrote no {written.name}")
            rows.append((f"reference {mode}", seconds, mib))
        seconds, mib = timed([sys.executable, "-m", "calofm.cli.main", "evaluate", "--protocol", "calochallenge",
                              "--parts", "hist,fpd", "--generated", files[0], "--reference", files[1],
                              "--out", str(tmp / "calofm")])
        rows.append(("calofm hist,fpd", seconds, mib))
    reference_total = sum(s for name, s, _ in rows if name.startswith("reference"))
    print(f"{args.n} model and {args.n} reference dataset-2 showers, this machine ({os.cpu_count()} cores)")
    for name, seconds, mib in rows:
        print(f"  {name:18s} {seconds:8.1f} s   peak {mib:8.0f} MiB")
    print(f"  reference hist + fpd {reference_total:.1f} s against calofm {rows[-1][1]:.1f} s: "
          f"{reference_total / rows[-1][1]:.1f}x")


if __name__ == "__main__":
    main()
