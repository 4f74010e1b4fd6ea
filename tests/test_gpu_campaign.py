"""The GPU campaign (benchmarks/gpu_campaign.py) at smoke scale on a CPU, so it never rots before a
device is lent: arguments, stage deadlines and kills, the results schema, the report and plots."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_campaign.py"


@pytest.fixture(scope="module")
def campaign():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("gpu_campaign", SCRIPT)
    module = sys.modules["gpu_campaign"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["gpu_campaign"]
    sys.path.remove(str(SCRIPT.parent))


def run_script(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out, work = tmp_path_factory.mktemp("campaign"), tmp_path_factory.mktemp("work")
    # a generous budget: the deadlines are tested on their own below, and CI machines are busy
    done = run_script("--scale", "smoke", "--workers", "2", "--minutes", "30", "--out", str(out), "--work", str(work),
                      timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out, work, json.loads((out / "results.json").read_text())


def test_smoke_campaign_runs_every_stage_and_writes_the_files_the_device_returns(smoke, campaign):
    out, work, results = smoke
    assert sorted(p.name for p in out.iterdir()) == ["adapt.png", "bench.png", "logs.txt", "report.md", "results.json"]
    assert "==> simulate.log" in (out / "logs.txt").read_text()
    assert results["schema"] == "calofm-gpu-campaign/1" and results["scale"] == "smoke"
    assert {name: s["status"] for name, s in results["stages"].items()} == dict.fromkeys(
        ["bench", "simulate", "geant4", "pretrain", "adapt"], "done")
    files = results["stages"]["simulate"]["files"]
    scale = campaign.SCALES["smoke"]
    assert [(f["stem"], f["n"]) for f in files] == [(stem, n) for _, n, stem, _ in campaign.simulation_plan(scale)]
    pretrain = results["stages"]["pretrain"]
    assert pretrain["plan"]["size"] == "S" and pretrain["result"]["steps"] == pretrain["plan"]["steps"] >= 10
    assert (work / "pretrain" / "model.safetensors").exists()
    cells = results["stages"]["adapt"]["cells"]
    assert sorted(cells) == ["full-n30-s0", "scratch-n30-s0"]
    assert all(math.isfinite(c["gm"][0]) and c["gm"][0] > 0 for c in cells.values())
    assert set(results["stages"]["adapt"]["result"]["gain_over_scratch"]["full"]) == {"30"}


def test_smoke_bench_times_every_family_on_the_cpu_and_lists_what_needs_cuda(smoke):
    _, _, results = smoke
    cases = results["stages"]["bench"]["cases"]
    done = [c for c in cases if c["status"] == "done"]
    assert len({c["family"] for c in done}) == 6 and {c["batch"] for c in done} == {1, 4}
    assert all(c["ms_per_shower"] > 0 and c["dtype"] == "fp32" and c["mode"] in ("eager", "cached") for c in done)
    assert all(c["status"] == "needs CUDA" for c in cases if c not in done)
    assert len(cases) == 6 * 8
    g4 = results["stages"]["geant4"]["result"]["ms_per_shower"]
    head = results["headline"]
    assert head["geant4_ms_per_shower"] == g4 > 0
    cd1 = min((c for c in done if "CD-1" in c["family"] and c["batch"] == 1), key=lambda c: c["ms_per_shower"])
    assert head["cd1_batch_1"]["ms_per_shower"] == cd1["ms_per_shower"]
    assert head["cd1_batch_1"]["speedup_vs_geant4"] == pytest.approx(g4 / cd1["ms_per_shower"])


def test_smoke_report_holds_the_headline_every_case_and_the_adaptation(smoke):
    out, _, results = smoke
    report = (out / "report.md").read_text()
    for part in ("## Stages", "## Headline", "## Generation, every case", "## Pre-training",
                 "## Adaptation to par04-scipb", "| CaloDiT-2 CD-1 | 1 |", "| scratch-n30-s0 |", "need CUDA",
                 "![generation time per shower](bench.png)", "x Geant4: Geant4's"):
        assert part in report, part
    assert report.count("| done |") >= 12


def test_bench_cases_put_the_headline_first_and_mark_what_needs_cuda(campaign):
    families = ["CaloDiT-2 CD-1", "fm-1 (RK4 8)", "next-token MoE (300 pairs)"]
    cpu = campaign.bench_cases(families, ("1", "100", "largest"), cuda=False)
    gpu = campaign.bench_cases(families, ("1", "100", "largest"), cuda=True)
    assert len(cpu) == len(gpu) == 3 * 8 and not any("status" in c for c in gpu)
    assert [(c["family"], c["size"], c["dtype"], c["mode"]) for c in gpu[:3]] == [
        ("CaloDiT-2 CD-1", "100", "fp32", "eager"), ("CaloDiT-2 CD-1", "100", "bf16", "eager"),
        ("CaloDiT-2 CD-1", "largest", "bf16", "eager")]  # fm-1 is no headline family: tier 1
    assert [c["tier"] for c in gpu] == sorted(c["tier"] for c in gpu)
    compiled = [c for c in gpu if c["mode"] == "compiled"]
    assert [(c["family"], c["size"]) for c in compiled[:2]] == [("CaloDiT-2 CD-1", "largest"),
                                                                 ("fm-1 (RK4 8)", "largest")]
    token = [(c["size"], c["mode"]) for c in gpu if c["family"].startswith("next-token") and c["tier"] == 1]
    assert token == [("100", "cached"), ("100", "cuda-graph"), ("1", "cached"), ("1", "cuda-graph")]
    runnable = [c for c in cpu if "status" not in c]
    assert {(c["size"], c["dtype"]) for c in runnable} == {("1", "fp32"), ("100", "fp32")}
    assert all(c["status"] == "needs CUDA" for c in cpu[len(runnable):])


def test_compiled_wraps_the_networks_each_sampler_calls(campaign):
    builders = campaign.bench_families(campaign.SCALES["smoke"])
    optimized = torch._dynamo.eval_frame.OptimizedModule
    cd, _, _ = builders["CaloDiT-2 CD-1"]()
    before = sum(p.numel() for p in cd.parameters())
    assert campaign.compiled(cd)[1] == "reduce-overhead" and isinstance(cd.net, optimized)
    net = cd.net
    assert campaign.compiled(cd)[0].net is net  # a second call does not wrap again
    assert sum(p.numel() for p in cd.parameters()) == before
    fast, _, _ = builders["fm-1-fast (1 step)"]()
    assert campaign.compiled(fast)[1] == "reduce-overhead"
    assert isinstance(fast.net.first, optimized) and isinstance(fast.net.second, optimized)
    rk4, _, _ = builders["fm-1 (RK4 8)"]()
    assert campaign.compiled(rk4)[1] == "default"  # no CUDA graphs: an ODE step keeps the last output
    one_rk4, _, _ = builders["CaloDREAM++ (RK4 1)"]()  # one RK4 step is still four calls
    assert one_rk4.steps == 1 and campaign.compiled(one_rk4)[1] == "default"


def test_a_stage_past_its_deadline_is_killed_with_its_workers(campaign, tmp_path, monkeypatch):
    monkeypatch.setattr(campaign, "GRACE", 0.5)
    args = Namespace(work=tmp_path, scale="smoke", workers=1)
    begin = time.time()
    handle = campaign.start_stage("geant4", args, time.time())
    record = campaign.finish_stage(handle, args)
    assert record["status"] == "killed at the deadline" and time.time() - begin < 5
    with pytest.raises(ProcessLookupError):
        os.killpg(handle[1].pid, 0)  # nothing of its process group is left


def test_a_stage_stops_its_own_work_at_the_deadline_and_records_the_rest(campaign, tmp_path):
    args = Namespace(work=tmp_path, scale="smoke", workers=1)
    record = campaign.finish_stage(campaign.start_stage("bench", args, time.time() + 1), args)
    assert record["status"] == "done"
    statuses = {c["status"] for c in record["cases"]}
    assert "skipped at the deadline" in statuses and statuses <= {"done", "skipped at the deadline", "needs CUDA"}
    assert len(record["cases"]) == 6 * 8


@pytest.mark.parametrize("args, message", [
    (["--minutes", "0"], "--minutes must be a positive number"),
    (["--workers", "0"], "--workers must be at least 1"),
    (["--scale", "h200"], "invalid choice: 'h200'"),
    pytest.param([], "--scale h100 needs a GPU", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU")),
])
def test_bad_arguments_end_in_one_line(args, message, tmp_path):
    done = run_script(*args, "--out", str(tmp_path), timeout=120)
    assert done.returncode == 2 and message in done.stderr.strip().splitlines()[-1]
    assert not any(tmp_path.iterdir())


def test_out_of_memory_is_recognised_however_the_gpu_reports_it():
    from calofm.workflow.bench import out_of_memory

    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert out_of_memory(RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)"))
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not out_of_memory(ValueError("out of memory"))


@pytest.mark.slow
@pytest.mark.parametrize("family", ["CaloDiT-2 CD-1", "fm-1-fast (1 step)"])
def test_compiled_samplers_give_the_eager_showers(campaign, family):
    process, shape, n_cond = campaign.bench_families(campaign.SCALES["smoke"])[family]()
    noise, cond = torch.randn(3, *shape, generator=torch.Generator().manual_seed(0)), torch.rand(3, n_cond)
    eager = process.sample(noise, cond)
    torch.testing.assert_close(campaign.compiled(process)[0].sample(noise, cond), eager, rtol=1e-4, atol=1e-4)
