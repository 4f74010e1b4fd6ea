"""ONNX / TorchScript export of the one-step generator: contract, order, units, parity."""

import json
import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from calofm.cli.main import main
from calofm.export import ExportGraph, export
from calofm.geometry.orders import reorder
from calofm.inference import load_model


def inputs_for(model, energy_gev, phi, theta, detector):
    onehot = np.zeros((len(energy_gev), model.conditions.n_slots), np.float32)
    onehot[:, model.conditions.slot(detector)] = 1
    return np.column_stack([energy_gev, phi, theta, onehot]).astype(np.float32)


@pytest.fixture(scope="module")
def cd(toys):
    """The toy CD model with its output layer pushed up to about 1 MeV per voxel (one step from
    sigma_max outputs sigma_data x the net), so that its showers are not empty."""
    model = load_model(toys / "base_cd")
    one_mev = (0.0 - model.voxels.mean) / model.voxels.std
    with torch.no_grad():
        model.process.net.final.linear.bias.add_(one_mev / model.process.sigma_data)
    return model


def test_graph_matches_generate_in_par04_order_and_mev(cd):
    """Same noise: the graph's (r, phi, z inner) MeV output is calofm generate's showers reordered."""
    n, energy = 3, np.array([2.5, 7.0, 15.0])
    phi, theta = np.array([0.3, -1.0, 2.0]), np.full(n, math.pi / 2)
    rows = np.concatenate(list(cd.generate(energy * 1000, theta, phi, "b", seed=5)))
    assert rows.max() > 0
    noise = torch.randn((n, *cd.shape), generator=torch.Generator().manual_seed(5))
    graph = ExportGraph(cd, noise_input=True)
    with torch.no_grad():
        out = graph(torch.from_numpy(inputs_for(cd, energy, phi, theta, "b")), noise).numpy()
    assert out.shape == (n, 6480)
    np.testing.assert_allclose(reorder(out, "par04", "calochallenge", (45, 16, 9)), rows, rtol=1e-5, atol=1e-6)


def test_onnx_parity_with_pytorch_and_dynamic_batch(cd, tmp_path):
    path = export(cd, "onnx", tmp_path / "cd.onnx", noise_input=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input", "noise"]
    graph = ExportGraph(cd, noise_input=True)
    outputs = []
    for batch in (1, 8):  # the batch axis is dynamic
        rng = np.random.default_rng(batch)
        x = inputs_for(cd, rng.uniform(1, 20, batch), rng.uniform(-3, 3, batch), np.full(batch, 1.4), "a")
        noise = rng.standard_normal((batch, *cd.shape)).astype(np.float32)
        ours = session.run(["energies"], {"input": x, "noise": noise})[0]
        with torch.no_grad():
            reference = graph(torch.from_numpy(x), torch.from_numpy(noise)).numpy()
        assert ours.shape == (batch, 6480)
        rel = np.abs(ours - reference) / np.maximum(np.abs(reference), 1e-3)
        assert rel.max() < 1e-4
        outputs.append(reference)
    assert np.concatenate(outputs).max() > 0  # not a comparison of empty showers


def test_onnx_draws_its_own_noise_with_the_par04_input(cd, toys, tmp_path):
    assert main(["export", "--model", str(toys / "base_cd"), "--out", str(tmp_path / "toy.onnx")]) == 0
    (only,) = ort.InferenceSession(str(tmp_path / "toy.onnx"), providers=["CPUExecutionProvider"]).get_inputs()
    assert only.name == "input" and only.shape[1] == 3 + 3  # E, phi, theta + one-hot of 2 detectors + 1 free
    session = ort.InferenceSession(str(export(cd, "onnx", tmp_path / "cd.onnx")), providers=["CPUExecutionProvider"])
    x = inputs_for(cd, [10.0], [0.0], [math.pi / 2], "a")
    first, second = (session.run(None, {"input": x})[0] for _ in range(2))
    assert first.shape == (1, 6480) and np.all(first >= 0) and np.isfinite(first).all() and first.max() > 0
    assert not np.array_equal(first, second)  # fresh noise on every call


def test_torchscript_matches_pytorch(cd, toys, tmp_path):
    assert main(["export", "--model", str(toys / "base_cd"), "--format", "torchscript", "--noise-input",
                 "--out", str(tmp_path / "toy.pt")]) == 0
    assert (torch.jit.load(str(tmp_path / "toy.pt"))(*ExportGraph(cd, noise_input=True).example()).shape
            == (2, 6480))
    loaded = torch.jit.load(str(export(cd, "torchscript", tmp_path / "cd.pt", noise_input=True)))
    x = torch.from_numpy(inputs_for(cd, [3.0, 30.0], [0.1, 0.2], [1.5, 1.6], "b"))
    noise = torch.randn((2, *cd.shape), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = ExportGraph(cd, noise_input=True)(x, noise)
        torch.testing.assert_close(loaded(x, noise), reference)
    assert reference.max() > 0


def test_edm_models_do_not_export(toys, tmp_path, capsys):
    assert main(["export", "--model", str(toys / "base"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "its edm model samples in 32 steps; export its one-step student" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_bench_times_the_model_beside_geant4(toys, tmp_path, capsys, one_thread):
    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(toys / "base_cd"), "--detector", "par04-siw", "--energy", "2",
                 "--geant4-showers", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    cases = {(c["case"], c["batch"]): c["ms_per_shower"] for c in result["cases"]}
    assert cases[("CPU, 1 thread", 1)] > 0 and cases[("CPU, 1 thread, ONNX Runtime", 1)] > 0
    assert any(batch == 100 for _, batch in cases)
    assert result["geant4_ms_per_shower"] > 0 and result["peak_cpu_rss_mb"] > 0
    assert result["speedup_cpu_1_thread"] == pytest.approx(result["geant4_ms_per_shower"] / cases[("CPU, 1 thread", 1)])
    assert "faster" in capsys.readouterr().out
