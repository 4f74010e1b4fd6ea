"""Generation speed of a default-size CaloDiT-2 beside Geant4, without a trained run.

    python benchmarks/bench_generate.py [--energy loguniform:1:1000] [--geant4-showers 20] [--json out.json]

Speed does not depend on the weights, so a freshly initialised CaloDiT-2 (6 blocks, 384 dims, 360
tokens, a one-hot of 4 detectors + 1 free slot as Par04's) goes through `calofm bench`'s
measurement: the one-step (CD) generator at CPU 1 thread batch 1 in PyTorch and in ONNX Runtime,
CPU batch 100, GPU batches where present, and Geant4 in par04-siw on one core. The EDM sampler
(Heun, 32 steps) is timed at CPU 1 thread batch 1 for comparison.
"""

from __future__ import annotations

import argparse

import torch

from calofm.data.preprocess import ConditionTransform, VoxelTransform
from calofm.generative import EDM, Consistency
from calofm.models import DiT
from calofm.train.run import TrainedModel
from calofm.workflow.bench import ms_per_shower, run_bench

DETECTORS = ["par04-siw", "par04-scipb", "ild-w", "ild-pb"]


def default_cd() -> TrainedModel:
    """A default-size CaloDiT-2 consistency model with fresh weights, as `load_model` would return it."""
    conditions = ConditionTransform(e_max=1e6, detectors=DETECTORS, n_slots=len(DETECTORS) + 1)
    net = DiT(n_cond=conditions.n_cond)
    describe = {"backbone": "dit", "backbone_args": {"shape": list(net.shape)}, "process": "consistency",
                "voxels": VoxelTransform(mean=-13.0, std=3.5, log_max=6.5).to_dict(),
                "conditions": conditions.to_dict()}
    return TrainedModel(describe, Consistency(net))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--energy", default="loguniform:1:1000", help="electron energies in GeV for Geant4")
    parser.add_argument("--geant4-showers", type=int, default=20, help="showers Geant4 simulates for its timing")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    cd = default_cd()
    run_bench(cd, "par04-siw", args.energy, args.geant4_showers, args.json)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    edm = EDM(cd.process.net)
    print(f"EDM (Heun, 32 steps), CPU 1 thread batch 1: "
          f"{ms_per_shower(edm, cd.shape, cd.conditions.n_cond, 1, 'cpu', repeats=2):.0f} ms per shower")
    torch.set_num_threads(threads)


if __name__ == "__main__":
    main()
