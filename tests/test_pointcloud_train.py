"""The point-cloud family end to end on Geant4 showers: ShowerFlow and PointWise trained by
`calofm train`, the generator (counts, calibration, points, projection), adaptation to a new detector
and a study cell, at a size that runs in the default test suite."""

import json

import numpy as np
import pytest
import torch
import yaml

from calofm.cli.main import main
from calofm.core.errors import InputError
from calofm.data import open_showers
from calofm.data.datasets import read_detector
from calofm.evaluate.samples import sample_from_arrays
from calofm.evaluate.suite import quick_metrics
from calofm.export.generator import ExportGraph
from calofm.inference import PointCloudModel, load_model, trained_model
from calofm.train import assemble, load_config
from calofm.train.loop import MODEL
from calofm.workflow.study import run_study

TINY_FLOW = {"hidden": [32, 32]}
TINY_POINTS = {"widths": [4, 32, 64, 32, 4], "ctx_dim": 32}
TRAIN = {"device": "cpu", "log_every": 25, "validate_showers": 60}


def write(folder, name, config) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"out": str(folder / name), **config}))
    return str(path)


@pytest.fixture(scope="module")
def runs(geant4_presets, tmp_path_factory):
    """A ShowerFlow and a PointWise run on 360 par04-siw electrons (40 held out for validation)."""
    folder = tmp_path_factory.mktemp("pointcloud")
    data = {"detectors": {"par04-siw": str(geant4_presets / "par04-siw.h5")}, "val_fraction": 0.1}
    flow = write(folder, "flow", {"data": data, "model": {"backbone": "showerflow", "args": TINY_FLOW},
                                  "process": {"name": "likelihood"},
                                  "train": {"steps": 600, "batch_size": 64, "lr": 1e-3, "ema": None, **TRAIN}})
    points = write(folder, "points", {"data": data, "model": {"backbone": "pointwise", "args": TINY_POINTS,
                                                              "counts": str(folder / "flow")},
                                      "process": {"name": "edm", "args": {"steps": 12}},
                                      "train": {"steps": 400, "batch_size": 2048, "lr": 3e-3, **TRAIN}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for config in (flow, points):
        assert main(["train", "--config", config, "--no-progress"]) == 0
    torch.set_num_threads(threads)
    return folder


def test_showerflow_and_pointwise_train_and_generate_better_showers_than_untrained(runs, geant4_presets, one_thread):
    reference = read_detector("par04-siw", [geant4_presets / "par04-siw.h5"])
    s = reference.showers.take(np.arange(200))
    model = load_model(runs / "points")
    assert isinstance(model, PointCloudModel) and model.calibrations["par04-siw"].n_max > 0
    built = assemble(load_config(runs / "points.yaml"))
    untrained = trained_model(built.describe, built.process.sampler(), runs / "points" / MODEL)
    g4 = sample_from_arrays("geant4", s.showers, s.energy, reference.mesh)
    gm = {}
    for name, m in (("trained", model), ("untrained", untrained)):
        rows = np.concatenate(list(m.generate(s.energy, s.theta, s.phi, "par04-siw", seed=1)))
        assert rows.shape == s.showers.shape and np.all(rows >= 0)
        gm[name] = quick_metrics(g4, sample_from_arrays(name, rows, s.energy, reference.mesh), reference.mesh)["gm_w1"]
    assert gm["trained"] < 0.5 * gm["untrained"], gm
    validation = (runs / "flow" / "validation.csv").read_text().splitlines()
    assert validation[0].split(",")[1:] == ["par04-siw/w1_points", "par04-siw/w1_layer_points"]


def test_point_cloud_runs_keep_their_showerflow_and_refuse_to_mix(runs, geant4_presets, tmp_path, capsys):
    counts = load_model(runs / "flow")
    layers = np.concatenate(list(counts.generate(np.full(5, 5e3), np.full(5, np.pi / 2), np.zeros(5), "par04-siw")))
    assert layers.shape == (5, 45) and layers.dtype == np.int64 and layers.min() >= 0
    with pytest.raises(Exception, match="gives points per layer, not showers"):
        counts.write(tmp_path / "x.h5", np.full(5, 5e3), np.full(5, np.pi / 2), np.zeros(5), "par04-siw")
    config = yaml.safe_load((runs / "points.yaml").read_text())
    config["model"]["counts"] = str(runs / "points")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "out": str(tmp_path / "bad")}))
    assert main(["train", "--config", str(tmp_path / "bad.yaml"), "--no-progress"]) == 2
    assert "not a ShowerFlow run" in capsys.readouterr().err
    adapt = ["adapt", "--from", str(runs / "points"), "--data", str(geant4_presets / "par04-scipb.h5"), "--steps", "1",
             "--no-progress", "--out", str(tmp_path / "adapted")]
    assert main(adapt) == 2  # its ShowerFlow was never adapted to the new detector
    assert "knows no detector 'par04-scipb'" in capsys.readouterr().err


def test_adapting_both_networks_to_a_new_detector_and_a_study_cell(runs, geant4_presets, tmp_path, one_thread):
    target = str(geant4_presets / "par04-scipb.h5")
    study = {"out": str(tmp_path / "study"), "base": str(runs / "points"),
             "target": {"name": "par04-scipb", "train": target, "test": target},
             "strategies": {"full": {}, "bitfit": {}}, "sizes": [60], "seeds": [0],
             "train": {"steps": 20, "batch_size": 1024, **TRAIN}, "counts_train": {"batch_size": 32, "ema": None},
             "evaluate": {"n": 100, "classifier_epochs": 2, "steps": 6}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    summary = run_study(tmp_path / "study.yaml", progress=False, log=lambda _: None)
    cells = tmp_path / "study" / "cells"
    assert sorted(p.name for p in cells.iterdir()) == ["bitfit-n60-s0", "counts-full-n60-s0", "full-n60-s0"]
    flow = load_model(cells / "counts-full-n60-s0" / "run")
    assert flow.describe["adapted"]["strategy"] == "full" and flow.conditions.detectors == ["par04-siw", "par04-scipb"]
    bitfit = load_model(cells / "bitfit-n60-s0" / "run")
    assert bitfit.counts_model.describe == flow.describe  # the cell's points per layer come from the adapted flow
    assert set(json.loads((cells / "bitfit-n60-s0" / "run" / "calibration.json").read_text())) == {"par04-scipb"}
    assert summary["rows"]["bitfit"]["percent"] < summary["rows"]["full"]["percent"] == 100
    with open_showers(cells / "full-n60-s0" / "generated.h5") as f:
        assert f.readout.describe() == read_detector("t", [target]).mesh.describe() and len(f.read()) == 100
    assert all(c["kl"][0] is not None and c["gm"][0] is not None for c in summary["cells"])


def test_consistency_distillation_of_a_pointwise_run_generates_in_one_step(runs, tmp_path, one_thread):
    cd = write(tmp_path, "cd", {"process": {"name": "cd", "teacher": str(runs / "points")},
                                "train": {"steps": 10, "batch_size": 1024, "lr": 1e-4, **TRAIN}})
    assert main(["train", "--config", cd, "--no-progress"]) == 0
    student = load_model(tmp_path / "cd")
    assert isinstance(student, PointCloudModel) and student.describe["process"] == "consistency"
    assert student.counts_model.describe == load_model(runs / "flow").describe and student.default_steps == 1
    rows = np.concatenate(list(student.generate(np.full(4, 5e3), np.full(4, np.pi / 2), np.zeros(4), "par04-siw")))
    assert rows.shape == (4, 6480) and np.all(rows.sum(1) > 0)
    with pytest.raises(InputError, match="decodes voxel"):
        ExportGraph(student)


@torch.no_grad()
def test_padded_point_sets_give_every_point_what_one_row_at_a_time_gives(runs, monkeypatch, one_thread):
    model = load_model(runs / "points")
    totals = np.array([3, 50, 0, 7, 120, 1])
    cond = torch.rand(6, model.conditions.n_cond + 1, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(int(totals.sum()), 4, generator=torch.Generator().manual_seed(1))
    rows = model.process.sample(noise, cond[torch.from_numpy(np.repeat(np.arange(6), totals))], steps=4)
    # several groups, one shower alone above the chunk
    monkeypatch.setattr("calofm.inference.generators.POINT_CHUNK", 128)
    torch.testing.assert_close(model.denoise(noise, cond, totals, 4), rows, rtol=1e-5, atol=1e-5)
    assert model.denoise(noise[:0], cond[:1], np.array([0]), 4).shape == (0, 4)


class Doubling:
    """An occupancy calibration that asks for twice the points in every layer."""

    def apply(self, counts):
        return 2 * counts


def test_the_calibrations_extra_points_share_the_energy_instead_of_adding_to_it(runs, one_thread):
    model = load_model(runs / "points")
    n = 100
    e, theta, phi = np.full(n, 5e3), np.full(n, np.pi / 2), np.zeros(n)
    totals = {}
    for name, calibration in (("none", None), ("doubled", Doubling())):
        model.calibrations = {"par04-siw": calibration} if calibration else {}
        rows = np.concatenate(list(model.generate(e, theta, phi, "par04-siw", seed=2)))
        totals[name] = (rows.sum(1).mean(), (rows > 0).sum(1).mean())
    assert totals["doubled"][1] > 1.2 * totals["none"][1]  # more cells hit
    assert abs(totals["doubled"][0] / totals["none"][0] - 1) < 0.1, totals  # about the same energy
