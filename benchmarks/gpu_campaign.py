"""The GPU campaign (`make gpu-campaign`): every GPU number calofm owes, in one prepared command that
fits the device's limits (one H100 or H200 and 16 cores for at most 10 minutes a command).

    python benchmarks/gpu_campaign.py --out DIR [--work DIR] [--minutes 9] [--scale h100|smoke] [--workers 16]

Stages, one after another, each in its own process group with a deadline (the process's start plus
its cumulative share of ``--minutes`` less a reserve for the outputs, so a stage that ends early
leaves its time to the next):

1. ``bench``: ms per shower of every model family (CaloDiT-2 CD-1, the flow-distilled fm-1-fast,
   a default-size CaloDREAM++ and the shipped fm-1 with RK4, CaloClouds II's PointWise consistency
   model, the next-token MoE with its KV cache) at batch 1, 100 and the largest batch that fits,
   fp32 and bf16, eager and compiled (``torch.compile`` for fixed shapes, with CUDA graphs for the
   one-step samplers; for the next-token model its own decoding step captured as a CUDA graph),
   with the peak GPU memory of each. Cases run most important first; those the deadline leaves
   are listed.
2. ``simulate``: Geant4 electrons on every core: the held-out detector (par04-scipb) test and
   training files, then the pre-training presets, each sized from the throughput measured so far.
3. ``pretrain``: CaloDREAM++ (the family the CPU scaling sweep chose) at the largest of its
   candidate sizes whose measured steps per second reach ``min_steps`` in the stage's time, bf16.
   Beside it, Geant4 on one core (``geant4``) for the speed-up, while the GPU trains.
4. ``adapt``: the pre-trained model adapted to par04-scipb with 100 and 1000 showers, scratch and
   full fine-tuning (calofm study: evaluated against the held-out Geant4 file with the Geant4 floor).

After every stage ``results.json`` (schema ``calofm-gpu-campaign/1``), ``report.md``, ``bench.png``,
``adapt.png`` and ``logs.txt`` are rewritten in ``--out`` (the device returns at most 8 files;
everything else stays in ``--work``).
A stage killed at its deadline keeps what it recorded (each stage rewrites its JSON after every
item). ``--scale smoke`` runs the same stages at tiny sizes on a CPU in about a minute (the tests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

SCHEMA = "calofm-gpu-campaign/1"
STAGES = ("bench", "simulate", "pretrain", "adapt")
TARGET = "par04-scipb"
GRACE = 10.0  # seconds a stage may overrun its deadline (its own checks) before it is killed
RESERVE = 20.0  # seconds of the budget kept after the last stage's deadline: its grace and the outputs
STARTED = time.time()  # the budget counts from the start of the process, imports included
TARGETS = {"cd1_large_batch_ms": 0.2, "fm_batch100_ms": 34.0, "minutes": 9.0}
FM1_SIZE = {"patch": [5, 16, 3], "dim": 96, "depth": 3, "heads": 4, "mlp_dim": 192,
            "energy": {"dim": 128, "heads": 4, "encoder_layers": 2, "decoder_layers": 2, "ff_dim": 256}}


@dataclass
class Scale:
    """The campaign's sizes; ``shares`` split ``--minutes`` between the stages."""

    energy: str                       # GeV, log-uniform electrons everywhere
    target_train: int                 # held-out detector: training pool (the largest adaptation size)
    target_test: int                  # and its test file
    pretrain_detectors: list[str]
    n_pretrain: int                   # showers per pre-training detector, at most
    candidates: dict[str, dict]       # CaloDREAM++ sizes, small to large: model.args and lr
    batch: int                        # pre-training batch
    min_steps: int                    # the largest candidate reaching this many steps is trained
    max_steps: int
    probe_steps: int
    adapt_sizes: list[int]
    adapt_steps: tuple[int, int]      # (min, max) steps of an adaptation cell, sized from the measured rate
    adapt_batch: int
    cell_overhead: float              # seconds of generation and evaluation per cell (planning only)
    classifier_epochs: int
    bench_default_size: bool          # default-size backbones (else tiny ones)
    tokens: int                       # next-token pairs per shower
    points: int                       # PointWise points per shower
    batch_sizes: tuple[str, ...]      # the bench's batches: numbers, and "largest" (the largest that fits, CUDA only)
    largest_limit: int
    case_reserve: tuple[float, float]  # seconds a bench case needs left to start: (eager, compiled)
    geant4_showers: int
    threads: int | None = None        # torch/BLAS threads per stage (None: every core)
    shares: dict[str, float] = field(default_factory=lambda: {
        "bench": 0.25, "simulate": 0.2, "pretrain": 0.3, "adapt": 0.25})


SCALES = {
    "h100": Scale(energy="loguniform:1:100", target_train=1000, target_test=2000,
                  pretrain_detectors=["par04-siw", "ild-w", "lar-pb", "pbwo4"], n_pretrain=4000,
                  candidates={"fm-1": {"args": FM1_SIZE, "lr": 1.5e-3},
                              "M": {"args": {**FM1_SIZE, "dim": 192, "depth": 6, "heads": 6, "mlp_dim": 768},
                                    "lr": 1e-3},
                              "CaloDREAM++": {"args": {"patch": [5, 16, 3]}, "lr": 5e-4}},
                  batch=256, min_steps=2000, max_steps=20_000, probe_steps=60, adapt_sizes=[100, 1000],
                  adapt_steps=(200, 2000), adapt_batch=128, cell_overhead=15.0, classifier_epochs=20,
                  bench_default_size=True, tokens=300, points=1500, batch_sizes=("1", "100", "largest"),
                  largest_limit=2**16, case_reserve=(5.0, 60.0), geant4_showers=20),
    "smoke": Scale(energy="loguniform:2:6", target_train=30, target_test=40, pretrain_detectors=["par04-siw", "ild-w"],
                   n_pretrain=30,
                   candidates={"S": {"args": {**FM1_SIZE, "dim": 24, "depth": 1, "heads": 2, "mlp_dim": 48,
                                              "energy": {"dim": 64, "heads": 2, "encoder_layers": 1,
                                                         "decoder_layers": 1, "ff_dim": 32}}, "lr": 2e-3}},
                   batch=16, min_steps=10, max_steps=20, probe_steps=10, adapt_sizes=[30], adapt_steps=(2, 3),
                   adapt_batch=8, cell_overhead=1.0, classifier_epochs=2, bench_default_size=False, tokens=4,
                   points=20, batch_sizes=("1", "4", "largest"), largest_limit=0, case_reserve=(0.0, 0.0),
                   geant4_showers=2, threads=1),  # one thread per stage: a cheap check on a busy CI machine
}


# --- the record every stage keeps -------------------------------------------------------------

class Record:
    """A stage's results, rewritten to ``work/stages/NAME.json`` after every item (atomic), so a
    stage killed at its deadline still reports what it finished."""

    def __init__(self, work: Path, name: str):
        self.path = work / "stages" / f"{name}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data: dict = {}

    def __setitem__(self, key: str, value) -> None:
        self.data[key] = value
        self.save()

    def append(self, key: str, value) -> None:
        self.data.setdefault(key, []).append(value)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=float))
        tmp.replace(self.path)


def read_record(work: Path, name: str) -> dict:
    path = work / "stages" / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- 1. bench ---------------------------------------------------------------------------------

def bench_families(scale: Scale) -> dict:
    """Family label -> builder of (process, noise shape, n_cond): fresh weights at the published
    default sizes (tiny ones at smoke scale, where one RK4 step stands for 20), and the shipped fm-1
    and fm-1-fast."""
    from bench_generate import default_cd, default_nexttoken, default_pointwise, default_vit
    from calofm.inference import load_model

    def shipped(name):
        def build():
            model = load_model(name)
            return model.process, model.shape, model.conditions.n_cond
        return build

    tiny = not scale.bench_default_size
    sizes = {"dit": {"patch": [3, 4, 5], "dim": 24, "depth": 1, "heads": 2, "mlp_dim": 48},
             "vit": {"patch": [5, 16, 3], "dim": 24, "depth": 1, "heads": 2, "mlp_dim": 48,
                     "energy": {"dim": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_dim": 32}},
             "nexttoken": {"dim": 32, "depth": 2, "heads": 2, "mlp_dim": 64}, "pointwise": {"widths": [4, 32, 4]}}
    size = {k: v if tiny else {} for k, v in sizes.items()}

    def cd():
        model = default_cd(**size["dit"])
        return model.process, model.shape, model.conditions.n_cond

    steps = 1 if tiny else 20
    return {"CaloDiT-2 CD-1": cd,
            "fm-1-fast (1 step)": shipped("fm-1-fast"),
            f"CaloDREAM++ (RK4 {steps})": lambda: tuple(default_vit(steps, **size["vit"])),
            "fm-1 (RK4 8)": shipped("fm-1"),
            f"CaloClouds II PointWise CM ({scale.points} points)":
                lambda: tuple(default_pointwise(scale.points, **size["pointwise"])),
            f"next-token MoE ({scale.tokens} pairs)":
                lambda: tuple(default_nexttoken(scale.tokens, **size["nexttoken"]))}


def family_cases(family: str, one: str, small: str, largest: str) -> list[tuple[int, str, str, str]]:
    """(tier, size, dtype, mode) of one family's cases. Tier 0: the one-step and CaloDREAM++
    headline cases; 1: batch 1 and the rest of eager, and the next-token decoding with its KV cache
    against its CUDA-graph step; 2: compiled (largest batch first), and the rest."""
    if family.startswith("next-token"):
        return [(1, small, "fp32", "cached"), (1, small, "fp32", "cuda-graph"), (1, one, "fp32", "cached"),
                (1, one, "fp32", "cuda-graph"), (2, largest, "fp32", "cached"), (2, largest, "fp32", "cuda-graph"),
                (2, small, "bf16", "cached"), (2, small, "bf16", "cuda-graph")]
    first = 0 if "CD-1" in family or "1 step" in family or "CaloDREAM++" in family else 1
    return [(first, small, "fp32", "eager"), (first, small, "bf16", "eager"), (first, largest, "bf16", "eager"),
            (1, one, "fp32", "eager"), (1, largest, "fp32", "eager"),
            (2, largest, "bf16", "compiled"), (2, small, "bf16", "compiled"), (2, one, "fp32", "compiled")]


def bench_cases(families: list[str], batch_sizes: tuple[str, ...], cuda: bool) -> list[dict]:
    """Every case of every family, by tier, then by place in the family's list, then by family (the
    most valuable first across families). Cases that need CUDA (bf16, the largest batch, compiled
    and CUDA graphs) come last on a CPU, marked as such."""
    one, small, largest = batch_sizes
    cases = [{"family": family, "size": size, "dtype": dtype, "mode": mode, "tier": tier,
              "needs_cuda": size == largest or mode in ("compiled", "cuda-graph") or dtype == "bf16",
              "order": (tier, place, rank)}
             for rank, family in enumerate(families)
             for place, (tier, size, dtype, mode) in enumerate(family_cases(family, one, small, largest))]
    cases.sort(key=lambda c: c.pop("order"))
    return [c for c in cases if cuda or not c["needs_cuda"]] + [
        {**c, "status": "needs CUDA"} for c in cases if not cuda and c["needs_cuda"]]


def stage_bench(scale: Scale, work: Path, until: float, rec: Record, workers: int) -> None:
    import torch

    from calofm.workflow.bench import Decoding, Largest, largest_cuda_batch, ms_per_shower

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    builders = bench_families(scale)
    built: dict = {}
    largest: dict = {}  # (family, dtype) -> the eager search's Largest, whose batch the compiled case reuses
    rec["device"] = torch.cuda.get_device_name() if cuda else None
    rec["cases"] = []
    for case in bench_cases(list(builders), scale.batch_sizes, cuda):
        if case.get("status"):
            rec.append("cases", case)
            continue
        left = until - time.time()
        if left < scale.case_reserve[case["mode"] in ("compiled", "cuda-graph")]:
            rec.append("cases", {**case, "status": "skipped at the deadline"})
            continue
        begin = time.perf_counter()
        family = case["family"]
        try:
            if family not in built:
                built[family] = builders[family]()
            process, shape, n_cond = built[family]
            extra = {}
            if case["mode"] == "compiled":
                process, extra["compile_mode"] = compiled(process)
            elif case["mode"] in ("cached", "cuda-graph"):
                process = Decoding(process, "graph" if case["mode"] == "cuda-graph" else "cached")
            if case["size"] == "largest" and case["mode"] in ("eager", "cached"):  # search, and time on the way
                found = largest[family, case["dtype"]] = largest_cuda_batch(
                    process, shape, n_cond, case["dtype"], limit=scale.largest_limit, max_seconds=min(5.0, left / 8))
                batch, ms, peak = found
            else:
                batch = int(case["size"]) if case["size"] != "largest" else largest.get(
                    (family, case["dtype"]), Largest(0, 0.0, 0.0)).batch
                if cuda:
                    torch.cuda.reset_peak_memory_stats()
                slow = "RK4" in family or "next-token" in family
                repeats = 1 if batch > 100 else 3 if batch > 1 or slow else 20
                ms = ms_per_shower(process, shape, n_cond, batch, device, case["dtype"], repeats=repeats,
                                   warmup=3 if case["mode"] == "compiled" else 1) if batch else math.nan
                peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
            if not batch:
                raise RuntimeError("no batch of 1000 fit in GPU memory in the eager search")
            result = {**case, **extra, "status": "done", "batch": batch, "ms_per_shower": ms, "peak_gpu_mib": peak}
        except Exception as exc:  # a case that fails (out of memory, a compiler error) is recorded, not fatal
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            result = {**case, "status": f"failed: {exc.__class__.__name__}: {first_line}"}
            if cuda:
                torch.cuda.empty_cache()
        result["seconds"] = time.perf_counter() - begin
        rec.append("cases", result)
        log(f"bench {family} batch {result.get('batch', case['size'])} {case['dtype']} {case['mode']}: "
            + (f"{result['ms_per_shower']:.4f} ms per shower" if "ms_per_shower" in result else result["status"]))


def compiled(process) -> tuple:
    """``process`` with the networks it calls compiled for fixed shapes (in place: the family's eager
    cases ran before), and the mode: samplers that call each network once with CUDA graphs
    (``reduce-overhead``), ODE solvers without (``default``: a step keeps the previous call's output,
    which a graph replay would overwrite; one RK4 step calls the network four times)."""
    import torch

    factorised = getattr(process.net, "FACTORISED", False)  # its stages are the backbone's children
    holder = process.net if factorised else process
    names = [name for name, _ in holder.named_children()] if factorised else ["net"]
    one_call = getattr(process, "steps", 1) == 1 and getattr(process, "solver", "euler") == "euler"
    mode = "reduce-overhead" if one_call else "default"
    for name in names:
        module = getattr(holder, name)
        if not isinstance(module, torch._dynamo.eval_frame.OptimizedModule):
            setattr(holder, name, torch.compile(module, mode=mode, dynamic=False))
    return process, mode


# --- 2. simulate ------------------------------------------------------------------------------

def simulation_plan(scale: Scale) -> list[tuple[str, int, str, int]]:
    """(detector, showers, file stem, least worth simulating), in order of need."""
    plan = [(TARGET, scale.target_test, f"{TARGET}_test", scale.target_test),
            (TARGET, scale.target_train, f"{TARGET}_train", max(scale.adapt_sizes))]
    return plan + [(d, scale.n_pretrain, d, scale.n_pretrain // 4) for d in scale.pretrain_detectors]


def stage_simulate(scale: Scale, work: Path, until: float, rec: Record, workers: int) -> None:
    from calofm.simulate.detectors import get_detector
    from calofm.simulate.gun import Gun, Spectrum
    from calofm.simulate.runner import Run, simulate

    gun = Gun("e-", Spectrum.parse(scale.energy))
    seconds_per_shower = None  # wall seconds per shower on every worker: the slowest file so far (the target's first)
    rec["files"] = []
    for i, (detector, n, stem, least) in enumerate(simulation_plan(scale)):
        if seconds_per_shower:
            n = min(n, int(0.8 * (until - time.time() - 5) / seconds_per_shower))  # 5 s: the workers' start
        if n < least:
            rec.append("files", {"detector": detector, "stem": stem, "status": f"skipped: {n} < {least} showers fit"})
            continue
        path = work / "data" / f"{stem}.h5"
        stats = simulate(Run(get_detector(detector), gun, n, seed=1000 + i), path, workers=workers, progress=False)
        seconds_per_shower = max(seconds_per_shower or 0.0, stats["seconds"] / max(stats["events"], 1))
        rec.append("files", {"detector": detector, "stem": stem, "status": "done", "path": str(path), "n": n,
                             "wall_seconds": stats["seconds"],
                             "core_ms_per_shower": stats["worker_seconds"] / max(stats["events"], 1) * 1e3})
        log(f"simulate {detector}: {n} showers in {stats['seconds']:.0f} s")


# --- 3. pretrain (and Geant4 on one core beside it) ---------------------------------------------

def pretrain_config(scale: Scale, files: dict, name: str, steps: int, out: Path, device: str,
                    probe: int | None = None) -> dict:
    """The run of candidate ``name`` on ``files`` (detector -> path); a probe (timing only) trains on
    ``probe`` showers per detector and skips validation."""
    candidate = scale.candidates[name]
    data = {"val_fraction": 0.0, "n_train": probe} if probe else {"val_fraction": 0.05}
    return {"out": str(out), "data": {"detectors": {d: [p] for d, p in files.items()}, "free_slots": 2, **data},
            "model": {"backbone": "vit", "args": candidate["args"]}, "process": {"name": "cfm", "args": {"steps": 8}},
            "train": {"steps": steps, "batch_size": scale.batch, "lr": candidate["lr"], "device": device,
                      "precision": "bf16" if device == "cuda" else "fp32", "log_every": max(1, scale.probe_steps // 6),
                      "checkpoint_every": 10**9, "validate_showers": 200, "seed": 0}}


def steps_per_second(run: Path) -> float:
    """Training steps per second of a run, from its metrics log, leaving out the first interval (warm-up)."""
    import csv

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    first, last = rows[min(1, len(rows) - 2)], rows[-1]
    return (int(last["step"]) - int(first["step"])) / max(float(last["seconds"]) - float(first["seconds"]), 1e-9)


def stage_pretrain(scale: Scale, work: Path, until: float, rec: Record, workers: int) -> None:
    import torch

    from calofm.train.config import build_config
    from calofm.workflow.fit import fit

    device = "cuda" if torch.cuda.is_available() else "cpu"
    done = [f for f in read_record(work, "simulate").get("files", [])
            if f["status"] == "done" and f["detector"] != TARGET]
    if not done:
        raise RuntimeError("no pre-training detector was simulated")
    files = {f["detector"]: f["path"] for f in done}
    n_probe = min([2 * scale.batch] + [f["n"] for f in done])
    quiet = dict(progress=False, log=lambda m: None)
    rec["detectors"] = sorted(files)
    rates = {}
    for name in scale.candidates:  # small to large
        probe = work / "probe" / name
        shutil.rmtree(probe, ignore_errors=True)
        try:
            fit(build_config(pretrain_config(scale, files, name, scale.probe_steps, probe, device, n_probe)), **quiet)
        except RuntimeError as exc:  # out of memory, say: recorded, and the larger sizes are not tried
            rec.append("probes", {"size": name, "failed": f"{exc.__class__.__name__}: {str(exc)[:200]}"})
            break
        rates[name] = steps_per_second(probe)
        params = sum(p.numel() for p in _load(probe).parameters())
        rec.append("probes", {"size": name, "steps_per_second": rates[name], "parameters": params})
        log(f"pretrain probe {name}: {params / 1e6:.2f} M parameters, {rates[name]:.1f} steps/s")
    if not rates:
        raise RuntimeError("no candidate size could train: " + rec.data["probes"][0]["failed"])
    budget = until - time.time() - 20  # validation at the end and saving
    fitting = [name for name, rate in rates.items() if rate * budget >= scale.min_steps]
    chosen = fitting[-1] if fitting else next(iter(rates))
    steps = max(scale.probe_steps, min(scale.max_steps, int(0.85 * rates[chosen] * budget)))
    out = work / "pretrain"
    rec["plan"] = {"size": chosen, "steps": steps, "steps_per_second": rates[chosen], "batch": scale.batch}
    log(f"pretrain {chosen}: {steps} steps")
    result = fit(build_config(pretrain_config(scale, files, chosen, steps, out, device)), **quiet)
    validation = _last_row(out / "validation.csv")
    rec["result"] = {"run": str(out), "steps": result["step"], "seconds": result["seconds"],
                     "steps_per_second": steps_per_second(out), "validation": validation}


def _load(run: Path):
    from calofm.inference import load_model

    return load_model(run).process


def _last_row(path: Path) -> dict:
    import csv

    rows = list(csv.DictReader(path.open())) if path.exists() else []
    return {k: float(v) for k, v in rows[-1].items()} if rows else {}


def stage_geant4(scale: Scale, work: Path, until: float, rec: Record, workers: int) -> None:
    """Geant4 on one core, the same detector and spectrum as `calofm bench` (par04-siw, 1-1000 GeV)."""
    from calofm.workflow.bench import geant4_ms_per_shower

    ms = geant4_ms_per_shower("par04-siw", "loguniform:1:1000", scale.geant4_showers)
    rec["result"] = {"detector": "par04-siw", "energy_GeV": "loguniform:1:1000", "showers": scale.geant4_showers,
                     "ms_per_shower": ms}
    log(f"Geant4, one core: {ms:.0f} ms per shower")


# --- 4. adapt ---------------------------------------------------------------------------------

def stage_adapt(scale: Scale, work: Path, until: float, rec: Record, workers: int) -> None:
    import torch

    from calofm.workflow.demo import write_study
    from calofm.workflow.study import run_study

    pretrain = read_record(work, "pretrain").get("result")
    files = {f["stem"]: f for f in read_record(work, "simulate").get("files", []) if f["status"] == "done"}
    if not pretrain or {f"{TARGET}_train", f"{TARGET}_test"} - set(files):
        raise RuntimeError("needs the pre-trained run and the held-out detector's files")
    n_train = files[f"{TARGET}_train"]["n"]
    sizes = [n for n in scale.adapt_sizes if n <= n_train]
    cells = 2 * len(sizes)
    per_cell = (until - time.time()) / cells - scale.cell_overhead
    low, high = scale.adapt_steps
    # at the pre-training rate: a smaller batch is not assumed faster (small models are launch-bound on a GPU)
    steps = int(min(high, max(low, 0.8 * pretrain["steps_per_second"] * per_cell)))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train = {"device": device, "steps": steps, "batch_size": scale.adapt_batch, "checkpoint_every": steps,
             "precision": "bf16" if device == "cuda" else "fp32"}
    rec["plan"] = {"sizes": sizes, "strategies": ["scratch", "full"], "steps": steps, "batch": scale.adapt_batch}
    log(f"adapt: scratch and full on {sizes} showers, {steps} steps each")
    (work / "adapt").mkdir(parents=True, exist_ok=True)
    path = write_study(work / "adapt", work / "data", {"scratch": {}, "full": {}}, sizes, [0], train,
                       {"classifier_epochs": scale.classifier_epochs}, base=pretrain["run"])
    summary = run_study(path, progress=False, log=lambda m: None,
                        preamble=f"GPU campaign: pre-trained CaloDREAM++ adapted to {TARGET}.")
    rec["result"] = {"gain_over_scratch": summary.get("gain_over_scratch"), "floor": summary.get("floor")}


STAGE_FUNCTIONS = {"bench": stage_bench, "simulate": stage_simulate, "pretrain": stage_pretrain,
                   "geant4": stage_geant4, "adapt": stage_adapt}


# --- the orchestration ------------------------------------------------------------------------

def start_stage(name: str, args, until: float) -> tuple:
    """Launch stage ``name`` as a child in its own process group (so a kill takes its workers too)."""
    (args.work / "logs").mkdir(parents=True, exist_ok=True)
    logfile = (args.work / "logs" / f"{name}.log").open("w")
    cmd = [sys.executable, str(Path(__file__).resolve()), "stage", name, "--work", str(args.work),
           "--until", repr(until), "--scale", args.scale, "--workers", str(args.workers)]
    threads = SCALES[args.scale].threads
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    return name, proc, until, time.time(), logfile


def finish_stage(handle, args) -> dict:
    """Wait for a stage until its deadline (plus grace), kill its process group after; its record
    with the status: done, failed (the last line of its log) or killed at the deadline."""
    name, proc, until, began, logfile = handle
    try:
        code = proc.wait(timeout=max(1.0, until + GRACE - time.time()))
        status = "done" if code == 0 else "failed"
    except subprocess.TimeoutExpired:
        status = "killed at the deadline"
    kill_group(proc)  # also what a finished stage left behind
    logfile.close()
    record = read_record(args.work, name)
    record.update(status=status, seconds=round(time.time() - began, 1))
    if status == "failed":
        lines = (args.work / "logs" / f"{name}.log").read_text(errors="replace").strip().splitlines()
        record["error"] = lines[-1] if lines else "no output"
    log(f"stage {name}: {status} after {record['seconds']:.0f} s" + (f" ({record['error']})" if "error" in record
                                                                      else ""))
    return record


def kill_group(proc: subprocess.Popen) -> None:
    """Kill a stage's process group (the stage and its workers) and reap the stage."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def finished_cells(study: Path) -> dict:
    """label-n<size>-s<seed> -> the study cell's GM, AUC, FPD (value, error) and seconds."""
    cells = {}
    for path in sorted(study.glob("cells/*/result.json")):
        result = json.loads(path.read_text())
        cells[path.parent.name] = {k: result.get(k) for k in ("gm", "auc", "fpd", "seconds")}
    return cells


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()  # no CUDA context here: the stages hold the GPU, not this process
    packages = {}
    for name in ("geant4-pybind", "numpy", "h5py", "matplotlib", "mplhep", "zuko", "scikit-learn", "onnxruntime"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "missing"
    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "gpu_available": cuda, "cpu_count": os.cpu_count(), "host": platform.node(), "packages": packages}


def run_campaign(args) -> dict:
    """Every stage in turn; results.json, report.md and the plots are rewritten after each, so a
    campaign stopped from outside still returns what it measured."""
    budget = args.minutes * 60 - RESERVE
    scale = SCALES[args.scale]
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"schema": SCHEMA, "scale": args.scale, "minutes": args.minutes, "workers": args.workers,
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(STARTED)),
               "environment": environment(), "scale_settings": asdict(scale), "stages": {}}
    log(f"GPU campaign, scale {args.scale}, {args.minutes} min, {args.workers} workers, "
        f"{'a' if results['environment']['gpu_available'] else 'no'} GPU")
    running = []

    def stop(signum, frame):
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    share = 0.0
    try:
        for name in STAGES:
            share += scale.shares[name]
            until = STARTED + budget * share
            if name == "pretrain":  # Geant4 on one core while the GPU trains
                running.append(start_stage("geant4", args, until))
            running.append(start_stage(name, args, until))
            for handle in running:
                results["stages"][handle[0]] = finish_stage(handle, args)
            running = []
            if name == "bench":
                results["environment"]["gpu"] = results["stages"]["bench"].get("device")
            if name == "adapt":  # the cells it finished, also when it was killed or failed at the end
                results["stages"][name]["cells"] = finished_cells(args.work / "adapt")
            write_outputs(results, args)
    finally:
        for handle in running:
            kill_group(handle[1])
    log(f"campaign done in {results['seconds'] / 60:.1f} min: {args.out / 'report.md'}")
    return results


def best(cases: list[dict], family_part: str, size: str) -> dict | None:
    """The fastest finished case of a family (by a part of its label) at a batch size label."""
    found = [c for c in cases if c.get("status") == "done" and family_part in c["family"] and c["size"] == size]
    return min(found, key=lambda c: c["ms_per_shower"]) if found else None


def headline(results: dict) -> dict:
    """The numbers the README quotes, beside the targets and the published ones."""
    cases = results["stages"]["bench"].get("cases", [])
    g4 = results["stages"].get("geant4", {}).get("result", {}).get("ms_per_shower")
    out = {}
    for key, part in (("cd1", "CD-1"), ("fm1_fast", "fm-1-fast"), ("calodream", "CaloDREAM++"), ("fm1", "fm-1 (")):
        for size in ("1", "100", "largest"):
            case = best(cases, part, size)
            if case:
                out[f"{key}_batch_{size}"] = {k: case[k] for k in ("family", "batch", "dtype", "mode", "ms_per_shower")}
                if g4:
                    out[f"{key}_batch_{size}"]["speedup_vs_geant4"] = g4 / case["ms_per_shower"]
    out["gain_over_scratch"] = results["stages"].get("adapt", {}).get("result", {}).get("gain_over_scratch") or {}
    out["geant4_ms_per_shower"] = g4
    out["campaign_minutes"] = results["seconds"] / 60
    return out


def _fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def write_outputs(results: dict, args) -> None:
    """results.json, report.md, bench.png, adapt.png and logs.txt (every stage's log) in
    ``args.out``, each written to a temporary name first; the time and headline so far."""
    results["seconds"] = round(time.time() - STARTED, 1)
    results["headline"] = headline(results)

    def write(name: str, text: str) -> None:
        tmp = args.out / f".{name}.partial"
        tmp.write_text(text)
        tmp.replace(args.out / name)

    write("results.json", json.dumps(results, indent=1, default=float))
    write("logs.txt", "".join(f"==> {path.name}\n{path.read_text(errors='replace')}\n"
                              for path in sorted((args.work / "logs").glob("*.log"))))
    plot_bench(results, args.out / "bench.png")
    study_plot = args.work / "adapt" / "study_gm.png"
    if study_plot.exists():
        shutil.copyfile(study_plot, args.out / "adapt.png")
    write("report.md", report(results, adapt_plot=study_plot.exists()))


def report(results: dict, adapt_plot: bool) -> str:
    env, stages, head = results["environment"], results["stages"], results["headline"]
    lines = [f"# calofm GPU campaign ({results['started']})", "",
             f"{env.get('gpu') or 'CPU only'}, {env['cpu_count']} cores, torch {env['torch']} (CUDA {env['cuda']}); "
             f"scale `{results['scale']}`, budget {results['minutes']} min, took {results['seconds'] / 60:.1f} min "
             f"(target: at most {TARGETS['minutes']:g}). Reproduce: `make gpu-campaign` (`python "
             f"benchmarks/gpu_campaign.py --out DIR --minutes {results['minutes']:g} --scale {results['scale']}`).",
             "", "## Stages", "", "| stage | status | seconds |", "| --- | --- | --- |"]
    lines += [f"| {name} | {s['status']}{': ' + s['error'] if 'error' in s else ''} | {s['seconds']:.0f} |"
              for name, s in stages.items()]
    g4 = head.get("geant4_ms_per_shower")
    lines += ["", "## Headline", "", "| model | batch | ms per shower | setting | x Geant4 | beside |",
              "| --- | --- | --- | --- | --- | --- |"]
    beside = {"cd1_batch_1": "CaloDiT-2: 2.9 ms (batch 1, RTX 6000 Ada)",
              "cd1_batch_largest": f"target: at most {TARGETS['cd1_large_batch_ms']} ms (H100)",
              "calodream_batch_100": f"CaloDREAM++: {TARGETS['fm_batch100_ms']:g} ms (batch 100, A100)"}
    for key, value in head.items():
        if isinstance(value, dict) and "ms_per_shower" in value:
            lines.append(f"| {value['family']} | {value['batch']} | {value['ms_per_shower']:.4g} | "
                         f"{value['dtype']} {value['mode']} | {_fmt(value.get('speedup_vs_geant4'), 4)} | "
                         f"{beside.get(key, '')} |")
    lines += ["", f"x Geant4: Geant4's {_fmt(g4, 4)} ms per shower on one core of this machine (par04-siw, "
              "1-1000 GeV electrons, as `calofm bench`) over the model's time per shower."]
    gain = head.get("gain_over_scratch") or {}
    if gain:
        lines += ["", "Gain of full fine-tuning over scratch (GM), in %: "
                  + ", ".join(f"{n} showers {v:+.0f}" if isinstance(v, (int, float)) else f"{n}: {v}"
                              for n, v in _gains(gain).items())
                  + " (the CaloClouds II transfer study: 44 % at 100 showers)."]
    lines += ["", "## Generation, every case", "",
              "| family | batch | dtype | mode | ms per shower | peak GPU MiB | status |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    cases = stages["bench"].get("cases", [])
    for c in cases:
        if c.get("status") == "needs CUDA":
            continue
        mode = c["mode"] + (f" ({c['compile_mode']})" if "compile_mode" in c else "")
        lines.append(f"| {c['family']} | {c.get('batch', c['size'])} | {c['dtype']} | {mode} | "
                     f"{_fmt(c.get('ms_per_shower'), 4)} | {_fmt(c.get('peak_gpu_mib'), 4)} | {c.get('status', '-')} |")
    cuda_only = sum(c.get("status") == "needs CUDA" for c in cases)
    if cuda_only:
        lines += ["", f"{cuda_only} more cases (bf16, the largest batch, compiled and CUDA graphs) need CUDA."]
    lines += ["", "![generation time per shower](bench.png)"]
    pre = stages.get("pretrain", {})
    if pre.get("plan"):
        lines += ["", "## Pre-training", "", f"Probes (steps/s at batch {pre['plan']['batch']}): "
                  + ", ".join(f"{p['size']} failed ({p['failed']})" if "failed" in p else
                              f"{p['size']} {p['parameters'] / 1e6:.2f} M parameters {p['steps_per_second']:.1f}"
                              for p in pre.get("probes", []))
                  + f". Trained: {pre['plan']['size']}, {pre.get('result', {}).get('steps', '-')} steps on "
                  + ", ".join(pre.get("detectors", [])) + "."]
        if pre.get("result", {}).get("validation"):
            lines.append("Validation at the end: " + ", ".join(f"{k} {v:.3g}" for k, v in
                                                               pre["result"]["validation"].items() if k != "step"))
    adapt = stages.get("adapt", {})
    if adapt.get("cells"):
        lines += ["", f"## Adaptation to {TARGET} ({adapt.get('plan', {}).get('steps', '-')} steps per cell)", "",
                  "Each cell against half of the held-out Geant4 file; the floor is its other half.", "",
                  "| cell (strategy-showers-seed) | GM x 10^-2 | AUC | FPD x 10^3 | seconds |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {cell} | {_metric(m['gm'], 100)} | {_metric(m['auc'], 1)} | {_metric(m['fpd'], 1000)} | "
                  f"{_fmt(m['seconds'])} |" for cell, m in adapt["cells"].items()]
        floor = (adapt.get("result") or {}).get("floor")
        if floor:
            lines.append(f"| Geant4 vs Geant4 (floor) | {_metric(floor.get('gm'), 100)} | "
                         f"{_metric(floor.get('auc'), 1)} | {_metric(floor.get('fpd'), 1000)} | |")
        lines += ["", "![GM against training size](adapt.png)"] if adapt_plot else []
    return "\n".join(lines) + "\n"


def _gains(gain: dict) -> dict:
    """{size: % gain of full fine-tuning} from the study's gain table (label -> size -> value)."""
    full = gain.get("full", gain)
    return {n: (v.get("value") if isinstance(v, dict) else v) for n, v in full.items()}


def _metric(pair, factor: float) -> str:
    """A cell's (value, error) scaled for the table."""
    if not pair or pair[0] is None:
        return "-"
    value, error = pair
    return f"{value * factor:.3g}" + (f" +- {error * factor:.2g}" if error is not None else "")


def plot_bench(results: dict, path: Path) -> None:
    """ms per shower against batch size (log-log): colour by family, solid eager (or the KV cache)
    and dashed compiled (or the CUDA graph), circles fp32 and squares bf16."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    lines: dict = {}
    for c in results["stages"]["bench"].get("cases", []):
        if c.get("status") == "done":
            lines.setdefault((c["family"], c["dtype"], c["mode"]), []).append((c["batch"], c["ms_per_shower"]))
    families = sorted({family for family, _, _ in lines})
    colour = {family: f"C{i}" for i, family in enumerate(families)}
    fig, ax = plt.subplots(figsize=(8, 5))
    for (family, dtype, mode), points in lines.items():
        points.sort()
        ax.plot(*zip(*points), color=colour[family], marker="o" if dtype == "fp32" else "s",
                linestyle="-" if mode in ("eager", "cached") else "--")
    handles = [Line2D([], [], color=colour[f], label=f) for f in families] + [
        Line2D([], [], color="k", linestyle="-", label="eager / KV cache"),
        Line2D([], [], color="k", linestyle="--", label="compiled / CUDA graph"),
        Line2D([], [], color="k", marker="o", linestyle="", label="fp32"),
        Line2D([], [], color="k", marker="s", linestyle="", label="bf16")]
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="ms per shower",
           title=results["environment"].get("gpu") or "CPU")
    ax.legend(handles=handles, fontsize=7, ncol=2)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.partial.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="the whole campaign (the default)")
    stage = sub.add_parser("stage", help="one stage (the campaign runs each this way)")
    for p in (parser, run, stage):
        p.add_argument("--scale", choices=sorted(SCALES), default="h100",
                       help="h100: the sizes for one H100 in 9 minutes; smoke: tiny, on a CPU in about a minute")
        p.add_argument("--workers", type=int, default=os.cpu_count(),
                       help="Geant4 worker processes (default: every core)")
    for p in (parser, run):
        p.add_argument("--out", type=Path, default=Path("studies/gpu-campaign"),
                       help="results.json, report.md and the plots (default studies/gpu-campaign)")
        p.add_argument("--work", type=Path, help="everything else: showers, runs, logs (default OUT/work)")
        p.add_argument("--minutes", type=float, default=9.0, help="wall-time budget of the whole campaign (default 9)")
    stage.add_argument("name", choices=sorted(STAGE_FUNCTIONS))
    stage.add_argument("--work", type=Path, required=True)
    stage.add_argument("--until", type=float, required=True, help="the stage's deadline (Unix time)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_generate's model builders
    if args.command == "stage":
        STAGE_FUNCTIONS[args.name](SCALES[args.scale], args.work, args.until, Record(args.work, args.name),
                                   args.workers)
        return 0
    if not (args.minutes > 0 and math.isfinite(args.minutes)):
        parser.error(f"--minutes must be a positive number, got {args.minutes}")
    import torch

    if args.scale != "smoke" and not torch.cuda.is_available():
        parser.error(f"--scale {args.scale} needs a GPU and torch sees none; --scale smoke checks the wiring on a CPU")
    args.work = args.work or args.out / "work"
    run_campaign(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
