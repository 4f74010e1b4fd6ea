"""The next-token family end to end (the next-token foundation model): `calofm train` pre-trains the mixture of
experts on two materials, a new particle (LoRA + heads) and then a new material for it (an expert) are added
with `calofm train` adaptations, and every earlier class generates bit-identically throughout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from calofm.cli.main import main
from calofm.data import write_showers
from calofm.data.datasets import read_detector
from calofm.data.toy import toy_showers
from calofm.evaluate.samples import sample_from_arrays
from calofm.evaluate.suite import quick_metrics
from calofm.geometry.cylindrical import CylindricalBinning
from calofm.inference import load_model, trained_model
from calofm.train import assemble, load_config
from calofm.train.loop import MODEL

TINY = {"dim": 32, "depth": 2, "heads": 4, "mlp_dim": 64}
TRAIN = {"device": "cpu", "batch_size": 32, "lr": 3.0e-3, "log_every": 25, "validate_showers": 20}
# (name, Moliere radius, radiation length): photons in W, Ta and electrons in W, Ta (a shorter x0)
CLASSES = [("w", 9.3, 4.25), ("ta", 14.0, 4.25), ("e-w", 9.3, 2.5), ("e-ta", 14.0, 2.5)]
# 480 voxels: small vocabularies
MESH = CylindricalBinning.regular(n_r=5, n_alpha=8, n_z=12, dr=8.0, dz=8.0, name="small")


def write(folder, name, config) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"out": str(folder / name), **config}))
    return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Toy showers of 1-4 GeV on a 480-voxel mesh of four classes; the pre-trained model (w, ta), its
    particle adaptation (e-w) and that one's material adaptation (e-ta)."""
    folder = tmp_path_factory.mktemp("nexttoken")
    for seed, (name, moliere, x0) in enumerate(CLASSES):
        showers = toy_showers(MESH, 240, seed=seed, e_min=1e3, e_max=4e3, moliere_mm=moliere, x0_mm=x0)
        write_showers(folder / f"{name}.h5", showers, "calochallenge", MESH, {"detector": name})

    def data(*names):
        return {"detectors": {n: str(folder / f"{n}.h5") for n in names}, "val_fraction": 0.1,
                "free_slots": 2}

    configs = [
        write(folder, "pre", {"data": data("w", "ta"), "model": {"backbone": "nexttoken", "args": TINY},
                              "process": {"name": "autoregressive"}, "train": {"steps": 150, **TRAIN}}),
        write(folder, "particle", {"data": data("e-w"), "adapt": {"base": str(folder / "pre"), "strategy": "particle",
                                                                  "args": {"init": "w", "r": 4, "alpha": 4}},
                                   "process": {"name": "autoregressive"}, "train": {"steps": 40, **TRAIN}}),
        write(folder, "material", {"data": data("e-ta"), "adapt": {"base": str(folder / "particle"),
                                                                   "strategy": "expert", "args": {"init": "e-w"}},
                                   "process": {"name": "autoregressive"}, "train": {"steps": 40, **TRAIN}}),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for config in configs:
        assert main(["train", "--config", config, "--no-progress"]) == 0
    torch.set_num_threads(threads)
    return folder


def generate(model, name, n=20):
    e = np.linspace(1e3, 4e3, n)
    return np.concatenate(list(model.generate(e, np.full(n, np.pi / 2), np.zeros(n), name, seed=4)))


def test_the_pretrained_mixture_generates_better_showers_than_an_untrained_one(runs, one_thread):
    model = load_model(runs / "pre")
    built = assemble(load_config(runs / "pre.yaml"))
    untrained = trained_model(built.describe, built.process.sampler(), runs / "pre" / MODEL)
    for name in ("w", "ta"):
        s = read_detector(name, [runs / f"{name}.h5"]).showers.take(np.arange(100))
        g4 = sample_from_arrays("geant4", s.showers, s.energy, MESH)
        gm = {}
        for label, m in (("trained", model), ("untrained", untrained)):
            rows = np.concatenate(list(m.generate(s.energy, s.theta, s.phi, name, seed=1)))
            assert rows.shape == s.showers.shape and np.all(rows >= 0)
            gm[label] = quick_metrics(g4, sample_from_arrays(label, rows, s.energy, MESH), MESH)["gm_w1"]
        assert gm["trained"] < 0.5 * gm["untrained"], (name, gm)


def test_new_particles_and_materials_join_without_changing_earlier_classes(runs, one_thread):
    pre, particle, material = (load_model(runs / name) for name in ("pre", "particle", "material"))
    for name in ("w", "ta"):
        np.testing.assert_array_equal(generate(particle, name), generate(pre, name))
        np.testing.assert_array_equal(generate(material, name), generate(pre, name))
    np.testing.assert_array_equal(generate(material, "e-w"), generate(particle, "e-w"))
    assert not np.array_equal(generate(material, "e-ta"), generate(material, "e-w"))
    args = material.describe["backbone_args"]
    assert (args["n_experts"], args["head_of_class"]) == (4, [0, 0, 1, 1])
    assert material.describe["adapters"] == particle.describe["adapters"] == [
        {"name": "particle1", "head": 1, "r": 4, "alpha": 4.0}]
    adapted = material.describe["adapted"]
    assert adapted["strategy"] == "expert" and adapted["percent"] < 20
    net = material.process.net
    lora = sum(p.numel() for n, p in net.named_parameters() if "lora_" in n)
    assert net.active_parameters() == pre.process.net.active_parameters() + lora  # experts add no inference cost


def test_a_sequence_study_grows_the_model_step_by_step_and_checks_earlier_classes(runs, tmp_path, one_thread, capsys):
    for name, moliere, x0 in CLASSES[2:]:  # held-out test files (400: halves of 200 for the Geant4 floor)
        write_showers(tmp_path / f"{name}-test.h5", toy_showers(MESH, 400, seed=9, e_min=1e3, e_max=4e3,
                                                                moliere_mm=moliere, x0_mm=x0), "calochallenge", MESH)
    write_showers(tmp_path / "w-test.h5", toy_showers(MESH, 400, seed=8, e_min=1e3, e_max=4e3), "calochallenge", MESH)

    def target(name, train=True):
        return {"name": name, "test": str(tmp_path / f"{name}-test.h5"),
                **({"train": str(runs / f"{name}.h5")} if train else {})}

    config = {"out": str(tmp_path / "sequence"), "base": str(runs / "pre"),
              "steps": {"photons-w": {"target": target("w", train=False)},
                        "electrons-w": {"strategy": "particle", "args": {"init": "w", "r": 4, "alpha": 4}, "size": 100,
                                        "target": target("e-w")},
                        "electrons-ta": {"strategy": "expert", "args": {"init": "e-w"}, "size": 100,
                                         "target": target("e-ta")}},
              "train": {**TRAIN, "steps": 10}, "evaluate": {"n": 60, "classifier_epochs": 2}}
    (tmp_path / "sequence.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # steps in order
    assert main(["study", "--config", str(tmp_path / "sequence.yaml"), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "sequence" / "metrics.json").read_text())
    steps = {s["label"]: s for s in summary["steps"]}
    assert list(steps) == ["photons-w", "electrons-w", "electrons-ta"] and summary["schema"] == "calofm-sequence/1"
    assert all(s["identical_in_final"] for s in steps.values())  # the last model regenerates every step's showers
    assert steps["photons-w"]["strategy"] is None and steps["electrons-ta"]["model"] == summary["final"]
    assert Path(load_model(summary["final"]).describe["adapted"]["from"]).parent == Path(steps["electrons-w"]["model"])
    assert all(s["observables"]["z_centre"]["wasserstein"] > 0 for s in steps.values())
    assert all(0 < s["floor"]["gm"][0] < s["gm"][0] for s in steps.values())  # Geant4 against itself: the floor
    report = (tmp_path / "sequence" / "report.md").read_text()
    assert "| electrons-ta | e-ta | expert | 100 |" in report and "CHANGED" not in report
    assert (tmp_path / "sequence" / "sequence_w1.png").stat().st_size > 1000
    bad = {**config, "out": str(tmp_path / "bad"),
           "steps": {"electrons-ta": {**config["steps"]["electrons-ta"], "args": {"init": "lead"}}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["study", "--config", str(tmp_path / "bad.yaml"), "--no-progress"]) == 2  # init names no class
    bad["steps"] = {**config["steps"], "electrons-ta": {**config["steps"]["electrons-ta"], "train": {"stepz": 5}}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    assert main(["study", "--config", str(tmp_path / "bad.yaml"), "--no-progress"]) == 2
    assert "steps.electrons-ta: train.stepz: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "bad" / "photons-w").exists()  # refused before the first step ran


def test_generate_takes_sampling_options_and_the_optional_depth_calibration(runs, tmp_path, one_thread, capsys):
    from calofm.data import open_showers

    common = ["generate", "--model", str(runs / "pre"), "--n", "60", "--energy", "uniform:1:4", "--detector", "w",
              "--top-k", "50", "--temperature", "0.9"]
    assert main([*common, "--out", str(tmp_path / "plain.h5")]) == 0
    assert main([*common, "--deeper", "3:2", "--out", str(tmp_path / "c.h5")]) == 0
    with open_showers(tmp_path / "plain.h5") as f:
        plain = f.read().showers
    with open_showers(tmp_path / "c.h5") as f:
        calibrated, metadata = f.read().showers, f.metadata
    assert metadata["calibration"] == "top-3 deposits 2 layer(s) deeper" and metadata["top_k"] == 50
    per_layer = MESH.n_voxels // MESH.n_layers

    def depth(s):
        return (s.reshape(len(s), MESH.n_layers, per_layer).sum(2) @ np.arange(MESH.n_layers)) / s.sum(1)

    np.testing.assert_allclose(calibrated.sum(1), plain.sum(1), rtol=1e-5)  # the same showers, moved
    assert depth(calibrated).mean() > depth(plain).mean() + 0.3  # the top deposits two layers deeper
    assert main([*common, "--deeper", "3", "--out", str(tmp_path / "x.h5")]) == 2
    assert "expected K:LAYERS" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # out of range: the parser refuses it
        main([*common, "--top-p", "0", "--out", str(tmp_path / "x.h5")])
    assert refused.value.code == 2 and "argument --top-p: '0' is not a probability" in capsys.readouterr().err
    assert not (tmp_path / "x.h5").exists()
