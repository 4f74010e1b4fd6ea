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


def par04_post_processing(fractions: np.ndarray, energy_mev: np.ndarray) -> np.ndarray:
    """Par04InferenceSetup::GetEnergies after RunInference: aEnergies[i] * aInitialEnergy (MeV)."""
    return fractions * energy_mev[:, None]


def test_the_par04_contract_gives_the_calofm_shower_after_par04s_post_processing(cd, tmp_path):
    """The same condition and noise through both contracts' ONNX files: the same shower in MeV once
    the par04 output is multiplied by the incident energy, as Par04 does; the file says how to feed it."""
    calofm = ort.InferenceSession(str(export(cd, "onnx", tmp_path / "calofm.onnx", noise_input=True)),
                                  providers=["CPUExecutionProvider"])
    path = export(cd, "onnx", tmp_path / "par04.onnx", contract="par04")
    par04 = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = par04.get_modelmeta().custom_metadata_map
    n_latent, n_slots = math.prod(cd.shape), cd.conditions.n_slots
    assert meta["contract"] == "par04" and int(meta["size_latent_vector"]) == n_latent
    assert int(meta["size_condition_vector"]) == 2 + n_slots and float(meta["max_energy_MeV"]) == 1_024_000.0
    assert float(meta["max_angle_deg"]) == 90.0 and json.loads(meta["one_hot_slots"])[:2] == cd.conditions.detectors
    assert [i.shape[1] for i in par04.get_inputs()] == [n_latent + 2 + n_slots]

    rng = np.random.default_rng(3)
    energy_gev, theta = np.array([2.0, 9.0, 30.0]), np.array([math.pi / 2, 1.2, 2.0])
    noise = rng.standard_normal((3, *cd.shape)).astype(np.float32)
    mev = calofm.run(["energies"], {"input": inputs_for(cd, energy_gev, np.zeros(3), theta, "b"), "noise": noise})[0]
    onehot = inputs_for(cd, energy_gev, np.zeros(3), theta, "b")[:, 3:]
    latent_and_condition = np.column_stack([noise.reshape(3, -1), energy_gev * 1000 / 1_024_000,
                                            np.degrees(theta) / 90, onehot]).astype(np.float32)
    fractions = par04.run(["energies"], {"input": latent_and_condition})[0]
    assert mev.max() > 0 and 0 < fractions.sum(1).max() < 10  # fractions of the incident energy
    np.testing.assert_allclose(par04_post_processing(fractions, energy_gev * 1000), mev, rtol=2e-5, atol=1e-5)


def test_export_par04_prints_the_par04_macro_settings(cd, toys, tmp_path, capsys):
    out = tmp_path / "g.onnx"
    assert main(["export", "--model", str(toys / "base_cd"), "--contract", "par04", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"/Par04/inference/setSizeLatentVector {math.prod(cd.shape)}" in printed
    assert f"/Par04/inference/setSizeConditionVector {2 + cd.conditions.n_slots}" in printed
    assert "/Par04/inference/setNbOfRhoCells 9" in printed and "fraction of the incident energy" in printed
    assert main(["export", "--model", str(toys / "base_cd"), "--contract", "par04", "--noise-input", "--out",
                 str(tmp_path / "x.onnx")]) == 2


def test_the_calofm_contract_is_recorded_in_both_formats(cd, tmp_path):
    onnx_meta = ort.InferenceSession(str(export(cd, "onnx", tmp_path / "c.onnx")),
                                     providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    files = {"contract.json": ""}
    torch.jit.load(str(export(cd, "torchscript", tmp_path / "c.pt")), _extra_files=files)
    for meta in (onnx_meta, json.loads(files["contract.json"])):
        assert meta["contract"] == "calofm" and meta["unit"] == "MeV"
    with pytest.raises(ValueError, match="takes the noise in its input"):
        ExportGraph(cd, noise_input=True, contract="par04")


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
