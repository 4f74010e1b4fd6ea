"""calofm-fm-1 as shipped: loaded by name, generating, adapted (and re-distilled), exported, and
reproducing the check its card states."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from calofm.cli.main import main
from calofm.data import open_showers
from calofm.data.datasets import read_detector
from calofm.evaluate.distances import six_observable_geometric_mean
from calofm.export import ExportGraph, export
from calofm.geometry.orders import reorder
from calofm.inference import load_model
from calofm.train.saved import SHIPPED, shipped_names
from conftest import GEANT4_ENERGY, GEANT4_PRESETS, GEANT4_SHOWERS, GEANT4_WORKERS

PRESETS = ("par04-siw", "ild-w", "ild-pb", "pbwo4", "lar-pb")
CLASSES = [f"{preset}-{particle}" for preset in PRESETS for particle in ("e-", "gamma")]


def test_fm1_and_its_fast_student_ship_inside_the_package():
    assert {"fm-1", "fm-1-fast"} <= set(shipped_names())
    teacher, fast = load_model("fm-1"), load_model("fm-1-fast")
    assert teacher.path == SHIPPED / "fm-1" / "model.safetensors"
    for model in (teacher, fast):
        assert model.conditions.detectors == CLASSES and model.conditions.n_slots == len(CLASSES) + 2
        assert model.describe["backbone"] == "vit" and model.representation_kind == "layer_ratios"
    assert (teacher.process.solver, teacher.default_steps) == ("rk4", 8)
    assert (fast.process.solver, fast.default_steps) == ("euler", 1)
    size = sum(f.stat().st_size for name in ("fm-1", "fm-1-fast") for f in (SHIPPED / name).iterdir())
    assert size < 20e6


@pytest.mark.parametrize("name", ["fm-1", "fm-1-fast"])
def test_shipped_weights_reproduce_the_cards_check(name, geant4_presets, held_out_distances, one_thread):
    """The card's GM on the test suite's own Geant4 sample (400 electrons of 2-8 GeV in par04-siw),
    regenerated with the card's seed, agrees within the card's error."""
    card = json.loads((SHIPPED / name / "card.json").read_text())["check"]
    assert (card["preset"], card["energy"], card["n"], card["seed"], card["workers"]) == (
        GEANT4_PRESETS[0], GEANT4_ENERGY, GEANT4_SHOWERS, 0, GEANT4_WORKERS)
    reference = read_detector(card["class"], [geant4_presets / f"{card['preset']}.h5"])
    gm, error = six_observable_geometric_mean(held_out_distances(load_model(name), reference,
                                                                 seed=card["generate_seed"]))
    assert abs(gm - card["gm"]) <= card["error"], (gm, error, card)


def test_generate_with_fm1_by_name_on_a_pretraining_detector(tmp_path, one_thread):
    out = tmp_path / "gamma.h5"
    assert main(["generate", "--model", "fm-1", "--detector", "ild-w-gamma", "--n", "3", "--energy", "20",
                 "--steps", "1", "--out", str(out)]) == 0
    with open_showers(out) as f:
        showers = f.read()
        assert f.readout.describe() == load_model("fm-1").readout("ild-w-gamma").describe()
    deposited = showers.showers.sum(1) / showers.energy
    assert len(showers) == 3 and np.all((deposited > 0) & (deposited < 1.5))


def test_adapt_fm1_redistil_fm1_fast_and_export_for_geant4(geant4_presets, tmp_path, one_thread):
    """The user's path with tiny budgets: adapt fm-1 with LoRA to a new detector, re-distil the
    one-step student from fm-1-fast, export it; the ONNX graph equals PyTorch on the same noise."""
    out = tmp_path / "scipb"
    assert main(["adapt", "--from", "fm-1", "--data", str(geant4_presets / "par04-scipb.h5"), "--detector",
                 "par04-scipb", "--strategy", "lora", "--steps", "2", "--batch-size", "8", "--n-train", "16",
                 "--distil", "fm-1-fast", "--distil-steps", "1", "--device", "cpu", "--out", str(out),
                 "--no-progress"]) == 0
    fast = load_model(out / "fast")
    assert fast.conditions.detectors == [*CLASSES, "par04-scipb"] and fast.default_steps == 1
    adapted = json.loads((out / "model.json").read_text())["adapted"]
    assert adapted["from"] == str(SHIPPED / "fm-1" / "model.safetensors")
    path = export(fast, "onnx", tmp_path / "scipb.onnx", noise_input=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph = ExportGraph(fast, noise_input=True)
    inputs, noise = (t.numpy() for t in graph.example(3))
    inputs[:, 3:] = 0
    inputs[:, 3 + fast.conditions.slot("par04-scipb")] = 1
    ours = session.run(["energies"], {"input": inputs, "noise": noise})[0]
    with torch.no_grad():
        reference = graph(torch.from_numpy(inputs), torch.from_numpy(noise)).numpy()
    assert ours.shape == (3, 6480) and reference.sum() > 0
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=0.02)  # a voxel may cross the 15 keV threshold
    # the graph is the model's own sampler and decoding, reordered from CaloChallenge to Par04 order
    energy = torch.from_numpy(inputs[:, :1]) * 1000
    cond = fast.conditions.vector(energy, torch.from_numpy(inputs[:, 2:3]), torch.from_numpy(inputs[:, 1:2]),
                                  torch.from_numpy(inputs[:, 3:]))
    rows = fast.voxels.decode(fast.process.sample(torch.from_numpy(noise), cond), energy[:, 0].numpy())
    np.testing.assert_allclose(reorder(reference, "par04", "calochallenge", (45, 16, 9)), rows, rtol=1e-3, atol=0.02)


def test_fm1_fast_exports_by_name_and_draws_its_own_noise(tmp_path, capsys, one_thread):
    assert main(["export", "--model", "fm-1", "--out", str(tmp_path / "fm-1.onnx")]) == 2
    assert "samples in 8 steps of rk4; export its one-step student (shipped: fm-1-fast" in capsys.readouterr().err
    assert main(["export", "--model", "fm-1-fast", "--out", str(tmp_path / "fast.onnx")]) == 0
    assert "output (B, 6480) MeV" in capsys.readouterr().out
    # The graph draws its own noise; seeded, so that its rare near-empty 10 GeV shower (5 of 4096
    # below 0.3 of the incident energy, measured) cannot land in this draw by chance.
    ort.set_seed(0)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(tmp_path / "fast.onnx"), options, providers=["CPUExecutionProvider"])
    inputs = np.zeros((64, 15), np.float32)
    inputs[:, 0], inputs[:, 2], inputs[:, 3] = np.repeat([10.0, 50.0], 32), np.pi / 2, 1.0
    energies = session.run(None, {"input": inputs})[0]
    assert energies.shape == (64, 6480) and np.all(energies >= 0)
    assert not np.allclose(session.run(None, {"input": inputs})[0], energies)  # a new draw per call
    ratio = energies.sum(1) / 1000 / inputs[:, 0]  # calibrated deposit / incident energy, about 1 in Geant4
    assert 0.85 < np.median(ratio) < 1.25 and np.all((ratio > 0.3) & (ratio < 2.0)), np.percentile(ratio, [0, 50, 100])


def test_bench_fm1_fast_times_onnx_beside_geant4_in_its_preset(tmp_path, one_thread):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", "fm-1-fast", "--energy", "2", "--geant4-showers", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["detector"] == "par04-siw" and result["load_seconds"] > 0  # the preset of class par04-siw-e-
    cases = {(c["case"], c["batch"]): c["ms_per_shower"] for c in result["cases"]}
    assert cases[("CPU, 1 thread, ONNX Runtime", 1)] > 0 and result["geant4_ms_per_shower"] > 0


def test_demo_adapts_fm1_and_draws_geant4_against_the_best_model_and_scratch(tmp_path, capsys, one_thread):
    assert main(["demo", "--scale", "smoke", "--out", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert list(summary["rows"]) == ["scratch", "full", "bitfit", "lora"]
    assert summary["config"]["base"] == "fm-1" and set(summary["gain_over_scratch"]) == {"full", "bitfit", "lora"}
    report = (tmp_path / "report.md").read_text()
    assert "## Geant4 against the best adapted model and scratch" in report
    for name in ("energy_ratio", "longitudinal", "radial", "cell_energy"):
        assert f"(physics_{name}.png)" in report and (tmp_path / f"physics_{name}.png").stat().st_size > 0
    assert "adapting fm-1 to par04-scipb" in capsys.readouterr().out
    assert main(["demo", "--pretrain", "--model", "fm-1", "--out", str(tmp_path / "x")]) == 2
    assert "--model: the --pretrain job pre-trains its own models" in capsys.readouterr().err
