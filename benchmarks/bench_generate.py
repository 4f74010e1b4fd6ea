"""Generation speed of CaloDiT-2: ms per shower for EDM (Heun, 32 steps) and CD (1 step).

    python benchmarks/bench_generate.py [--json out.json]

A freshly initialised default-size CaloDiT-2 (6 blocks, 384 dims, 360 tokens) is timed: speed
does not depend on the weights (`calofm bench --model RUN` times a trained run beside Geant4). Cases: CPU with 1 thread at batch 1 and, where a
GPU is present, batch 100 and 10000 in fp32 and bf16. The first call of each case is a warm-up
and is not timed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from calofm.generative import EDM, Consistency
from calofm.models import DiT
from calofm.workflow.bench import ms_per_shower

N_COND = 4 + 4  # E, sin phi, cos phi, theta + a one-hot of 3 pre-training detectors and 1 free slot
SHAPE = (9, 16, 45)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    net = DiT(n_cond=N_COND)

    def record(**result) -> None:
        results.append(result)
        print(json.dumps(result))

    for name, process in {"EDM-32": EDM(net), "CD-1": Consistency(net)}.items():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        record(process=name, device="cpu", threads=1, batch=1, ms_per_shower=ms_per_shower(process, SHAPE, N_COND, 1, "cpu"))
        torch.set_num_threads(threads)
        if torch.cuda.is_available():
            for batch in (100, 10_000):
                for dtype in ("fp32", "bf16"):
                    record(process=name, device=torch.cuda.get_device_name(), dtype=dtype, batch=batch,
                           ms_per_shower=ms_per_shower(process, SHAPE, N_COND, batch, "cuda", dtype))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
