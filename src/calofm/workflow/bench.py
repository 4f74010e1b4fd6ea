"""`calofm bench`: generation time per shower beside Geant4's on the same machine, in one run.

Cases: CPU with 1 thread at batch 1 (the Geant4 fast-simulation use; for one-step models also
the exported ONNX graph in ONNX Runtime, as Geant4 runs it), CPU with every thread at batch 100, and
where a GPU is present batch 100 and the largest batch that fits (doubling from
1000 until memory runs out), in fp32 and bf16 autocast. The first call of each case is a warm-up
and is not timed; GPU timings synchronise once per repeat, not per shower. Geant4 is timed by
simulating showers of the same detector and energy spectrum in one worker process, so the
speed-up is a ratio of two numbers from this machine.
"""

from __future__ import annotations

import json
import math
import resource
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

from calofm.core.files import atomic_path
from calofm.export import export_problem
from calofm.inference import TrainedModel
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, simulate


class Decoding(torch.nn.Module):
    """A next-token process whose ``sample`` decodes one way (``cached``, ``uncached``, ``static``,
    ``graph``: see :meth:`calofm.generative.AutoRegressive.sample`), for timing each."""

    def __init__(self, process: torch.nn.Module, decode: str):
        super().__init__()
        self.process, self.decode = process, decode

    def sample(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.process.sample(noise, cond, decode=self.decode)


@torch.no_grad()
def ms_per_shower(process, shape, n_cond: int, batch: int, device: str, dtype: str = "fp32",
                  repeats: int = 3, warmup: int = 1) -> float:
    """Wall time per shower of ``process.sample`` on random conditions (the cost does not depend on
    them), after ``warmup`` untimed calls (compiled models record their CUDA graphs in the first few)."""
    process = process.to(device).eval()
    cond = torch.rand((batch, n_cond), device=device)
    noise = torch.randn((batch, *shape), device=device)
    cuda = device.startswith("cuda")
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
        for _ in range(warmup):
            process.sample(noise, cond)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            process.sample(noise, cond)
        if cuda:
            torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats / batch * 1e3


class Largest(NamedTuple):
    batch: int                # 0: not even the first batch fits
    ms_per_shower: float
    peak_gpu_mib: float


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the GPU running out of memory (also as cuBLAS or graph-capture errors)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and any(m in str(exc) for m in ("out of memory", "ALLOC_FAILED")))


def largest_cuda_batch(process, shape, n_cond: int, dtype: str, start: int = 1000, limit: int = 2**17,
                       max_seconds: float = float("inf")) -> Largest:
    """The largest batch (start x 2^k, at most ``limit``) whose generation fits in GPU memory, with
    the time per shower and peak memory of that batch's run (a warm-up and one timed call); the
    doubling also stops once one batch takes ``max_seconds`` (a slow sampler needs no larger one)."""
    best, batch = Largest(0, math.nan, math.nan), start
    while batch <= limit:
        begin = time.perf_counter()
        torch.cuda.reset_peak_memory_stats()
        try:
            ms = ms_per_shower(process, shape, n_cond, batch, "cuda", dtype, repeats=1)
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
            if not out_of_memory(exc):
                raise
            break
        finally:
            torch.cuda.empty_cache()
        best, batch = Largest(batch, ms, torch.cuda.max_memory_allocated() / 2**20), batch * 2
        if time.perf_counter() - begin > max_seconds:
            break
    return best


def onnx_ms_per_shower(model: TrainedModel, repeats: int = 20) -> float:
    """The exported graph in ONNX Runtime, 1 thread, batch 1: how Geant4 would run it."""
    import onnxruntime as ort

    from calofm.export import ExportGraph, export

    with tempfile.TemporaryDirectory() as tmp:
        path = export(model, "onnx", Path(tmp) / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {"input": ExportGraph(model).example(1)[0].numpy()}
    session.run(None, feed)  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        session.run(None, feed)
    return (time.perf_counter() - start) / repeats * 1e3


def geant4_ms_per_shower(detector: str, energy: str, n: int, seed: int = 0) -> float:
    """Geant4 time per shower on one core (one worker process) for ``n`` electrons of ``energy`` GeV."""
    with tempfile.TemporaryDirectory() as tmp:
        stats = simulate(Run(get_detector(detector), Gun("e-", Spectrum.parse(energy)), n, seed),
                         Path(tmp) / "g4.h5", workers=1, progress=False)
    return stats["worker_seconds"] / stats["events"] * 1e3


def run_bench(model: TrainedModel, detector: str, energy: str = "loguniform:1:1000", n_geant4: int = 20,
              out: str | Path | None = None, log=print, load_seconds: float | None = None) -> dict:
    """Time ``model`` and Geant4; print a table and write ``out`` (JSON) when given. ``load_seconds``,
    the time the caller took to load the model, is reported with the rest."""
    process, shape, n_cond = model.process, model.shape, model.conditions.n_cond
    rows = []

    def record(case: str, batch: int, ms: float, **extra) -> None:
        rows.append({"case": case, "batch": batch, "ms_per_shower": ms, **extra})
        log(f"  {case:<32} batch {batch:>7}: {ms:10.4f} ms per shower")

    log(f"timing {model.describe['process']} ({model.default_steps} step(s)) of {model.path}"
        + ("" if load_seconds is None else f", loaded in {load_seconds:.2f} s"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    record("CPU, 1 thread", 1, ms_per_shower(process, shape, n_cond, 1, "cpu", repeats=20))
    torch.set_num_threads(threads)
    if export_problem(model) is None:
        record("CPU, 1 thread, ONNX Runtime", 1, onnx_ms_per_shower(model))
    record(f"CPU, {threads} threads", 100, ms_per_shower(process, shape, n_cond, 100, "cpu"))
    peak_cpu_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = None
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name()
        for dtype in ("fp32", "bf16"):
            torch.cuda.reset_peak_memory_stats()
            record(f"{gpu} {dtype}", 100, ms_per_shower(process, shape, n_cond, 100, "cuda", dtype, repeats=10))
            big = largest_cuda_batch(process, shape, n_cond, dtype)
            record(f"{gpu} {dtype}", big.batch, big.ms_per_shower, peak_gpu_mib=big.peak_gpu_mib)
        process.cpu()
    log(f"timing Geant4: {n_geant4} electrons ({energy} GeV) in {detector}, one core")
    g4 = geant4_ms_per_shower(detector, energy, n_geant4)
    for row in rows:
        row["speedup_vs_geant4"] = g4 / row["ms_per_shower"]
        log(f"  {row['case']:<32} batch {row['batch']:>7}: {row['speedup_vs_geant4']:10.1f} x faster than Geant4")
    single = rows[0]["ms_per_shower"]
    result = {"model": str(model.path), "process": model.describe["process"], "steps": model.default_steps,
              "detector": detector, "energy_GeV": energy, "geant4_ms_per_shower": g4, "geant4_showers": n_geant4,
              "speedup_cpu_1_thread": g4 / single, "peak_cpu_rss_mb": peak_cpu_mb, "gpu": gpu, "cases": rows,
              "cpu_threads": threads, "load_seconds": load_seconds}
    log(f"Geant4: {g4:.1f} ms per shower on one core; model at CPU 1 thread batch 1: {single:.2f} ms "
        f"-> {g4 / single:.0f}x faster; peak CPU memory {peak_cpu_mb:.0f} MB")
    if out:
        with atomic_path(Path(out)) as tmp:
            tmp.write_text(json.dumps(result, indent=1))
    return result

