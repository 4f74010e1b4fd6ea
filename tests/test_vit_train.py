"""CaloDREAM++ end to end: a tiny energy + ViT model trained with factorised flow matching on Geant4
showers of two presets, generation with every solver, adaptation and a study beside CaloDiT-2."""

import json

import numpy as np
import pytest
import torch
import yaml

from calofm.adapt import Adaptation
from calofm.cli.main import main
from calofm.core.errors import CalofmError
from calofm.data import open_showers, write_showers
from calofm.data.toy import toy_showers
from calofm.evaluate.distances import six_observable_geometric_mean
from calofm.generative import FactorisedFlowMatching
from calofm.geometry import CylindricalBinning, calochallenge_binning
from calofm.inference import TrainedModel, load_model
from calofm.train import assemble, load_config
from calofm.train.checkpoint import load as load_checkpoint

PRESETS = ("par04-siw", "par04-scipb")
STEPS = 250
TINY_VIT = {"patch": [5, 16, 3], "dim": 48, "depth": 2, "heads": 4, "mlp_dim": 96,
            "energy": {"dim": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1, "ff_dim": 64}}


def vit_config(folder, name, detectors, steps, **train):
    config = {"out": str(folder / name), "data": {"detectors": detectors, "val_fraction": 0.25},
              "model": {"backbone": "vit", "args": TINY_VIT}, "process": {"name": "cfm", "args": {"steps": 8}},
              "train": {"steps": steps, "batch_size": 64, "lr": 2e-3, "checkpoint_every": 200, "log_every": 50,
                        "device": "cpu", "validate_showers": 100, **train}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def vit_run(geant4_presets, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    path = vit_config(folder, "cfm", {n: str(geant4_presets / f"{n}.h5") for n in PRESETS}, STEPS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    torch.set_num_threads(threads)
    return folder


def test_trained_vit_beats_an_untrained_one_on_held_out_geant4_showers(vit_run, held_out_distances,
                                                                     one_thread):
    config = load_config(vit_run / "cfm.yaml")
    built = assemble(config)
    assert isinstance(built.process, FactorisedFlowMatching)
    trained, untrained = load_model(vit_run / "cfm"), TrainedModel(built.describe, built.process.sampler())
    assert trained.describe["voxels"]["kind"] == "layer_ratios" and trained.shape == (45 + 6480,)
    for reference in built.validation:
        good, bad = held_out_distances(trained, reference), held_out_distances(untrained, reference)
        gm_good, gm_bad = six_observable_geometric_mean(good)[0], six_observable_geometric_mean(bad)[0]
        assert gm_good < 0.5 * gm_bad, (reference.name, gm_good, gm_bad)
        # the energy network sets the visible energy and the longitudinal profile
        for key in ("energy_ratio", "longitudinal_profile"):
            assert good[key]["wasserstein"][0] < 0.5 * bad[key]["wasserstein"][0], (key, good, bad)
    rows = (vit_run / "cfm" / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in rows]
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])


@pytest.mark.parametrize("solver", ["euler", "midpoint", "adaptive"])
def test_generate_with_each_solver_writes_calochallenge_files(vit_run, solver, one_thread):
    out = vit_run / f"gen_{solver}.h5"
    assert main(["generate", "--model", str(vit_run / "cfm"), "--n", "6", "--energy", "loguniform:2:8",
                 "--detector", "par04-siw", "--steps", "4", "--solver", solver, "--out", str(out)]) == 0
    with open_showers(out) as f:
        showers = f.read()
        assert f.readout.shape == (45, 16, 9) and f.metadata["solver"] == solver
    assert len(showers) == 6 and np.all(showers.showers >= 0)
    visible = showers.showers.sum(1) / showers.energy
    assert np.all((visible > 0.2) & (visible < 2.0)), visible


def test_vit_backbone_needs_flow_matching(geant4_presets, tmp_path, capsys):
    path = vit_config(tmp_path, "bad", {"par04-siw": str(geant4_presets / "par04-siw.h5")}, 1)
    raw = yaml.safe_load(path.read_text())
    raw["process"] = {"name": "edm"}
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(path), "--no-progress"]) == 2
    assert "the vit backbone is trained with cfm, not edm" in capsys.readouterr().err


@pytest.fixture(scope="module")
def toy_vit(toys, tmp_path_factory):
    """A tiny ViT pre-trained briefly on the toy detectors a + b of conftest."""
    folder = tmp_path_factory.mktemp("toy_vit")
    base = vit_config(folder, "vit", {"a": str(toys / "a.h5"), "b": str(toys / "b.h5")}, 30,
                      batch_size=16, checkpoint_every=30)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["train", "--config", str(base), "--no-progress"]) == 0
    torch.set_num_threads(threads)
    return folder / "vit"


def adapt_to(toy_vit, data, out, *extra):
    return main(["adapt", "--from", str(toy_vit), "--data", str(data), "--steps", "3", "--batch-size", "8",
                 "--device", "cpu", "--out", str(out), "--no-progress", *extra])


def test_adapting_to_another_geometry_keeps_the_universal_blocks(toy_vit, tmp_path, one_thread):
    base = load_model(toy_vit)
    old = base.process.net.state_dict()
    # dataset 3 (45 x 50 x 18): the same patch, four times the patches -> new positional frequencies
    ds3 = calochallenge_binning("dataset_3")
    write_showers(tmp_path / "d3.h5", toy_showers(ds3, 24, seed=2, e_min=2e3, e_max=2e4), "calochallenge", ds3,
                  {"detector": "d3"})
    assert adapt_to(toy_vit, tmp_path / "d3.h5", tmp_path / "d3", "--strategy", "bitfit") == 0
    adapted = load_model(tmp_path / "d3")
    assert adapted.describe["adapted"]["new_geometry"] == ["shape.pos_embed.freqs"]
    assert adapted.shape == (45 + ds3.n_voxels,)
    _, info = load_checkpoint(tmp_path / "d3" / "checkpoint.safetensors")
    assert sorted({g["lr_scale"] for g in info["optimizer"]["param_groups"]}) == [1.0, 5.0]
    # the same voxel count per layer, transposed (9 alpha x 16 r): still another geometry; reinit's lr_mult
    swapped = CylindricalBinning.regular(n_r=16, n_alpha=9, n_z=45, dr=2.6, dz=3.4, name="swapped")
    write_showers(tmp_path / "sw.h5", toy_showers(swapped, 24, seed=4, e_min=2e3, e_max=2e4), "calochallenge",
                  swapped, {"detector": "sw"})
    assert adapt_to(toy_vit, tmp_path / "sw.h5", tmp_path / "sw", "--strategy", "reinit", "--arg", "lr_mult=3") == 0
    assert "shape.pos_embed.freqs" in load_model(tmp_path / "sw").describe["adapted"]["new_geometry"]
    _, info = load_checkpoint(tmp_path / "sw" / "checkpoint.safetensors")
    assert sorted({g["lr_scale"] for g in info["optimizer"]["param_groups"]}) == [1.0, 3.0]
    # dataset-1 photons (5 irregular layers) with 5-voxel patches: embedding and head interpolated
    ds1 = calochallenge_binning("dataset_1_photons")
    write_showers(tmp_path / "d1.h5", toy_showers(ds1, 24, seed=3, e_min=2e3, e_max=2e4), "calochallenge", ds1,
                  {"detector": "d1"})
    torch.manual_seed(0)
    assert adapt_to(toy_vit, tmp_path / "d1.h5", tmp_path / "d1", "--strategy", "lora", "--patch", "[1, 5, 1]") == 0
    described = json.loads((tmp_path / "d1" / "model.json").read_text())
    assert set(described["adapted"]["new_geometry"]) == {
        "shape.patch_embed.weight", "shape.patch_embed.bias", "shape.final.linear.weight", "shape.final.linear.bias",
        "shape.pos_embed.freqs", "shape.cond_embed.0.weight"}
    assert described["voxels"]["layer_sizes"] == [8, 160, 190, 5, 5]
    built = assemble(load_config(tmp_path / "d1" / "config.yaml"))  # the adapted run before training
    new = Adaptation.fold(built.process.net).state_dict()  # untrained adapters and deltas: zero
    for key in ("shape.blocks.1.attn.qkv.weight", "energy.transformer.decoder.layers.0.linear1.weight",
                "shape.time_embed.0.w"):
        assert torch.equal(new[key], old[key]), key
    n_c = base.conditions.n_cond
    assert torch.equal(new["shape.cond_embed.0.weight"][:, :n_c], old["shape.cond_embed.0.weight"][:, :n_c])
    assert new["shape.patch_embed.weight"].shape == (TINY_VIT["dim"], 5)
    generated = load_model(tmp_path / "d1")
    generated.write(tmp_path / "g.h5", np.full(4, 5e3), np.full(4, np.pi / 2), np.zeros(4), "d1", steps=2)
    with open_showers(tmp_path / "g.h5") as f:
        assert f.readout == ds1 and f.read().showers.shape == (4, ds1.n_voxels)
    with pytest.raises(CalofmError, match="generates d1 only"):
        generated.readout("a")


def test_study_places_the_vit_family_beside_calodit(toys, toy_vit, tmp_path_factory, one_thread):
    """The toy detectors of conftest: a tiny ViT pre-trained on a + b, adapted to c from scratch and
    with reinit beside the DiT base's rows; gains are against each family's own scratch."""
    folder = tmp_path_factory.mktemp("vit_study")
    vit = str(toy_vit)
    config = {"out": str(folder / "study"), "base": str(toys / "base"),
              "target": {"name": "c", "train": str(toys / "c.h5"), "test": str(toys / "c_test.h5")},
              "strategies": {"CaloDiT-2 scratch": {"strategy": "scratch"}, "CaloDiT-2 full": {"strategy": "full"},
                             "ViT scratch": {"strategy": "scratch", "base": vit},
                             "ViT reinit": {"strategy": "reinit", "base": vit}},
              "sizes": [40], "seeds": [0],
              "train": {"steps": 6, "batch_size": 16, "device": "cpu", "log_every": 3},
              "evaluate": {"n": 100, "steps": 4, "classifier_epochs": 2}}
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["study", "--config", str(path), "--no-progress"]) == 0
    summary = json.loads((folder / "study" / "metrics.json").read_text())
    assert (summary["rows"]["ViT reinit"]["base"] == vit
            and summary["rows"]["CaloDiT-2 full"]["base"] == str(toys / "base"))
    assert set(summary["gain_over_scratch"]) == {"CaloDiT-2 full", "ViT reinit"}
    vit_gain = summary["gain_over_scratch"]["ViT reinit"]["40"]
    rows = summary["rows"]
    expected = 100 * (1 - rows["ViT reinit"]["sizes"]["40"]["gm"]["value"]
                      / rows["ViT scratch"]["sizes"]["40"]["gm"]["value"])
    assert vit_gain == pytest.approx(expected)
    report = (folder / "study" / "report.md").read_text()
    assert "| ViT reinit |" in report and "| CaloDiT-2 full |" in report
    adapted = load_model(folder / "study" / "cells" / "ViT reinit-n40-s0" / "run")
    assert adapted.conditions.detectors == ["a", "b", "c"] and adapted.describe["adapted"]["strategy"] == "reinit"


def test_vit_trains_and_generates_on_an_irregular_geometry(tmp_path, one_thread):
    """CaloChallenge dataset-1 photons (five layers of three binnings): no regular mesh needed."""
    ds1 = calochallenge_binning("dataset_1_photons")
    write_showers(tmp_path / "g.h5", toy_showers(ds1, 60, seed=5, e_min=2e3, e_max=2e4), "calochallenge", ds1,
                  {"detector": "ds1-photons"})
    path = vit_config(tmp_path, "ds1", {"ds1-photons": str(tmp_path / "g.h5")}, 4, batch_size=16)
    raw = yaml.safe_load(path.read_text())
    raw["model"]["args"]["patch"] = [1, 5, 1]
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", "--config", str(path), "--no-progress"]) == 0
    model = load_model(tmp_path / "ds1")
    grids = model.describe["backbone_args"]["grids"]
    assert [g[0] for g in grids] == [[1, 1, 8], [1, 10, 16], [1, 10, 19], [2, 1, 5]]
    assert model.shape == (5 + 368,)
    assert main(["generate", "--model", str(tmp_path / "ds1"), "--n", "5", "--energy", "5", "--detector",
                 "ds1-photons", "--steps", "2", "--out", str(tmp_path / "gen.h5")]) == 0
    with open_showers(tmp_path / "gen.h5") as f:
        assert f.readout == ds1 and f.read().showers.shape == (5, 368)
