"""Generation speed of a default-size CaloDiT-2 or CaloDREAM++ beside Geant4, without a trained run.

    python benchmarks/bench_generate.py [--energy loguniform:1:1000] [--geant4-showers 20] [--json out.json]
    python benchmarks/bench_generate.py --family vit [--steps 20]
    python benchmarks/bench_generate.py --family nexttoken [--tokens 300]

Speed does not depend on the weights, so a freshly initialised CaloDiT-2 (6 blocks, 384 dims, 360
tokens, a one-hot of 4 detectors + 1 free slot as Par04's) goes through `calofm bench`'s
measurement: the one-step (CD) generator at CPU 1 thread batch 1 in PyTorch and in ONNX Runtime,
CPU batch 100, GPU batches where present, and Geant4 in par04-siw on one core. The EDM sampler
(Heun, 32 steps) is timed at CPU 1 thread batch 1 for comparison.

``--family vit``: a default-size CaloDREAM++ (energy network 64 dims 4 + 4 layers; ViT 6 blocks,
480 dims, 135 patches of 3 x 16 x 1 on the 9 x 16 x 45 mesh), sampled with RK4 (CaloDREAM++, table 2:
full generation and one RK4 step): CPU 1 thread batch 1, CPU batch 100 (``--cpu-batch``), and GPU
batch 100 (fp32, bf16) where present.

``--family nexttoken``: a default-size next-token transformer (the next-token foundation model; 256 dims, 6 blocks, 8
heads, two experts) on the ILD mesh (6480 voxels: vocabularies of 6483), generating ``--tokens``
token pairs per shower (the end token is masked, so every shower has that length; 2-8 GeV ILD
photons have about 240 hits, 10-90 GeV ones about 800) with the preallocated KV cache and
without it (the whole prefix recomputed at every step): CPU 1 thread batch 1, CPU batch
``--cpu-batch``, and GPU batch 100 and 1000 (fp32) where present.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

import torch

from calofm.data.preprocess import ConditionTransform, VoxelTransform
from calofm.data.tokens import END, special_token
from calofm.generative import EDM, AutoRegressive, Consistency, FactorisedFlowMatching
from calofm.geometry import calochallenge_binning
from calofm.inference import TrainedModel
from calofm.models import CaloDREAM, DiT, NextToken, PointWise
from calofm.workflow.bench import Decoding, ms_per_shower, run_bench

DETECTORS = ["par04-siw", "par04-scipb", "ild-w", "ild-pb"]


def default_cd(**net_args) -> TrainedModel:
    """A default-size CaloDiT-2 consistency model with fresh weights (``net_args``: other DiT
    arguments), as `load_model` would return it."""
    conditions = ConditionTransform(e_max=1e6, detectors=DETECTORS, n_slots=len(DETECTORS) + 1)
    net = DiT(n_cond=conditions.n_cond, **net_args)
    describe = {"backbone": "dit", "backbone_args": {"shape": list(net.shape)}, "process": "consistency",
                "voxels": VoxelTransform(mean=-13.0, std=3.5, log_max=6.5).to_dict(),
                "conditions": conditions.to_dict(),
                "readouts": {d: calochallenge_binning("dataset_2").to_dict() for d in DETECTORS}}
    return TrainedModel(describe, Consistency(net))


class Sampler(NamedTuple):
    """What ``ms_per_shower`` times: a process, the shape of one shower's noise, the condition width."""

    process: torch.nn.Module
    shape: tuple
    n_cond: int


def default_vit(steps: int, **net_args) -> Sampler:
    """A default-size CaloDREAM++ (fresh weights; ``net_args``: other sizes) sampled with ``steps`` RK4 steps."""
    mesh = calochallenge_binning("dataset_2")
    n_cond = ConditionTransform(e_max=1e6, detectors=DETECTORS, n_slots=len(DETECTORS) + 1).n_cond
    net = CaloDREAM(n_cond, **CaloDREAM.geometry_args(mesh, net_args))
    return Sampler(FactorisedFlowMatching(net, solver="rk4", steps=steps).eval(), (net.split + mesh.n_voxels,), n_cond)


def default_nexttoken(tokens: int, **net_args) -> Sampler:
    """A default-size next-token model (fresh weights, two experts; ``net_args``: other sizes) whose
    showers all have ``tokens`` token pairs (the end token is masked)."""
    n_cond = 4 + 2
    net = NextToken(n_cond, **NextToken.geometry_args(calochallenge_binning("dataset_2"), {"n_experts": 2, **net_args}))
    with torch.no_grad():
        for head in net.spatial_heads:
            head.bias[special_token(net.vocab, END)] = -1e9
    return Sampler(AutoRegressive(net).eval(), (tokens + 1, 2), n_cond)


def default_pointwise(points: int, **net_args) -> Sampler:
    """CaloClouds II's one-step PointWise consistency model (fresh weights) on ``points`` points per
    shower; the ShowerFlow that gives the points per layer is not timed (it is a small flow)."""
    n_cond = 4 + 2
    return Sampler(Consistency(PointWise(n_cond, **net_args)).eval(), (points, 4), n_cond)


def time_vit(steps: int, cpu_batch: int) -> None:
    """ms per shower of a default-size CaloDREAM++ (fresh weights) with RK4, full and one step."""
    threads = torch.get_num_threads()
    for label, n in ((f"RK4 {steps} steps", steps), ("1 RK4 step", 1)):
        process, shape, n_cond = default_vit(n)
        if n == steps:
            print(f"CaloDREAM++: {sum(p.numel() for p in process.parameters()) / 1e6:.1f} M parameters, "
                  f"{process.net.shape.patching.n_tokens} patches")
        torch.set_num_threads(1)
        print(f"  {label}, CPU 1 thread batch 1: {ms_per_shower(process, shape, n_cond, 1, 'cpu', repeats=2):.1f} ms")
        torch.set_num_threads(threads)
        if cpu_batch:
            print(f"  {label}, CPU {threads} threads batch {cpu_batch}: "
                  f"{ms_per_shower(process, shape, n_cond, cpu_batch, 'cpu', repeats=1):.1f} ms")
        if torch.cuda.is_available():
            for dtype in ("fp32", "bf16"):
                ms = ms_per_shower(process, shape, n_cond, 100, "cuda", dtype, repeats=5)
                print(f"  {label}, {torch.cuda.get_device_name()} {dtype} batch 100: {ms:.2f} ms")
            process.cpu()


def time_nexttoken(tokens: int, cpu_batch: int) -> None:
    """ms per shower of a default-size next-token model (fresh weights), with and without KV cache."""
    cached, shape, n_cond = default_nexttoken(tokens)
    net = cached.net
    print(f"next-token: {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters "
          f"({net.active_parameters() / 1e6:.1f} M active), {tokens} token pairs per shower")
    threads = torch.get_num_threads()
    cases = [("CPU 1 thread batch 1", 1, "cpu", 1)] + ([(f"CPU {threads} threads batch {cpu_batch}", cpu_batch, "cpu",
                                                         threads)] if cpu_batch else [])
    if torch.cuda.is_available():
        cases += [(f"{torch.cuda.get_device_name()} fp32 batch {b}", b, "cuda", threads) for b in (100, 1000)]
    for label, batch, device, n_threads in cases:
        torch.set_num_threads(n_threads)
        for name, decode in (("KV cache", "cached"), ("no cache", "uncached")):
            ms = ms_per_shower(Decoding(cached, decode), shape, n_cond, batch, device, repeats=1)
            print(f"  {label}, {name}: {ms:.1f} ms per shower")
    torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--energy", default="loguniform:1:1000", help="electron energies in GeV for Geant4")
    parser.add_argument("--geant4-showers", type=int, default=20, help="showers Geant4 simulates for its timing")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--family", choices=["dit", "vit", "nexttoken"], default="dit",
                        help="model family (default dit)")
    parser.add_argument("--steps", type=int, default=20, help="vit: RK4 steps of a full generation (default 20)")
    parser.add_argument("--cpu-batch", type=int, default=100,
                        help="vit, nexttoken: CPU batch size beside batch 1 (0: skip)")
    parser.add_argument("--tokens", type=int, default=300, help="nexttoken: token pairs per shower (default 300)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.family == "vit":
        time_vit(args.steps, args.cpu_batch)
        return
    if args.family == "nexttoken":
        time_nexttoken(args.tokens, args.cpu_batch)
        return
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
