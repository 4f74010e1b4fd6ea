"""Generation speed of CaloDiT-2: ms per shower for EDM (Heun, 32 steps) and CD (1 step).

    python benchmarks/bench_generate.py [--model RUN] [--json out.json]

Without --model, a freshly initialised default-size CaloDiT-2 (6 blocks, 384 dims, 360 tokens)
is timed: speed does not depend on the weights. Cases: CPU with 1 thread at batch 1 and, where a
GPU is present, batch 100 and 10000 in fp32 and bf16. The first call of each case is a warm-up
and is not timed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from calofm.generative import EDM, Consistency
from calofm.models import DiT
from calofm.train.run import load_model

N_COND = 4 + 4  # E, sin phi, cos phi, theta + a one-hot of 3 pre-training detectors and 1 free slot


def processes(model: Path | None) -> dict[str, torch.nn.Module]:
    if model is None:
        net = DiT(n_cond=N_COND)
        return {"EDM-32": EDM(net), "CD-1": Consistency(net)}
    loaded = load_model(model).process
    return {f"{loaded.name}-{loaded.hparams['steps']}": loaded}


@torch.no_grad()
def ms_per_shower(process, batch: int, device: str, dtype=None, repeats: int = 3) -> float:
    process = process.to(device).eval()
    shape = process.net.shape
    cond = torch.rand((batch, process.net.cond_embed[0].in_features), device=device)
    noise = torch.randn((batch, *shape), device=device)
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        process.sample(noise, cond)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            process.sample(noise, cond)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats / batch * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a trained run (default: a fresh default-size CaloDiT-2)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []

    def record(**result) -> None:
        results.append(result)
        print(json.dumps(result))

    for name, process in processes(args.model).items():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        record(process=name, device="cpu", threads=1, batch=1, ms_per_shower=ms_per_shower(process, 1, "cpu"))
        torch.set_num_threads(threads)
        if torch.cuda.is_available():
            for batch in (100, 10_000):
                for dtype in ("fp32", "bf16"):
                    record(process=name, device=torch.cuda.get_device_name(), dtype=dtype, batch=batch,
                           ms_per_shower=ms_per_shower(process, batch, "cuda", dtype))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
