"""CaloDiT-2 end to end on real Geant4 showers of two presets: train (EDM), distil (CD), generate, evaluate."""

import json

import numpy as np
import pytest
import torch
import yaml

from calofm.cli.main import main
from calofm.data import open_showers
from calofm.evaluate.distances import six_observable_geometric_mean
from calofm.inference import TrainedModel, load_model
from calofm.train import assemble, load_config

PRESETS = ("par04-siw", "par04-scipb")  # conftest.GEANT4_PRESETS: 400 showers each; a quarter is held out
STEPS = 300
TINY = {"patch": [3, 4, 5], "dim": 72, "depth": 2, "heads": 4, "mlp_dim": 144}


@pytest.fixture(scope="module")
def workspace(geant4_presets, tmp_path_factory):
    """Geant4 showers of two presets and a tiny EDM trained on them through `calofm train`."""
    folder = tmp_path_factory.mktemp("calodit")
    config = {"out": str(folder / "edm"),
              "data": {"detectors": {name: str(geant4_presets / f"{name}.h5") for name in PRESETS},
                       "val_fraction": 0.25},
              "model": {"backbone": "dit", "args": TINY},
              "train": {"steps": STEPS, "batch_size": 64, "lr": 2e-3, "checkpoint_every": 200, "log_every": 50,
                        "device": "cpu", "validate_showers": 100}}
    (folder / "edm.yaml").write_text(yaml.safe_dump(config))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert main(["train", "--config", str(folder / "edm.yaml"), "--no-progress"]) == 0
    torch.set_num_threads(threads)
    return folder


def held_out(folder, name):
    config = load_config(folder / "edm.yaml")
    return next(d for d in assemble(config).validation if d.name == name)


def w1(d, key):
    return d[key]["wasserstein"][0]


def test_trained_model_scores_clearly_better_than_untrained(workspace, held_out_distances):
    trained = load_model(workspace / "edm")
    built = assemble(load_config(workspace / "edm.yaml"))
    untrained = TrainedModel(built.describe, built.process.sampler())
    for name in PRESETS:
        reference = held_out(workspace, name)
        good, bad = held_out_distances(trained, reference), held_out_distances(untrained, reference)
        # untrained (zero output), the sampler returns its noise scaled to sigma_data: voxels at the data's
        # scale but no shower; 300 steps of a tiny model at least halve the profiles' distances
        assert six_observable_geometric_mean(good)[0] < 0.65 * six_observable_geometric_mean(bad)[0]
        for profile in ("longitudinal_profile", "radial_profile", "z_centre"):
            assert w1(good, profile) < 0.5 * w1(bad, profile), (profile, good, bad)
        assert w1(good, "occupancy") < 0.7 * w1(bad, "occupancy"), (good, bad)
        assert good["voxel_energy"]["separation_power"][0] < 0.9


def test_run_folder_logs_and_validation(workspace):
    run = workspace / "edm"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,loss,lr,seconds" and len(rows) == 1 + STEPS // 50
    losses = [float(r.split(",")[1]) for r in rows[1:]]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    validation = (run / "validation.csv").read_text().splitlines()
    assert sorted(validation[0].split(",")[1:]) == sorted(f"{n}/{k}" for n in PRESETS
                                                          for k in ("w1_energy_ratio", "gm_w1", "gm_w1_err"))
    assert len(validation) == 2 and validation[1].startswith(f"{STEPS},")
    described = json.loads((run / "model.json").read_text())
    assert described["step"] == STEPS and described["conditions"]["n_slots"] == len(PRESETS) + 1
    assert sorted(described["conditions"]["detectors"]) == sorted(PRESETS)


def test_generate_writes_calochallenge_files_per_detector(workspace):
    out = workspace / "gen_scipb.h5"
    assert main(["generate", "--model", str(workspace / "edm"), "--n", "30", "--energy", "loguniform:2:8",
                 "--detector", "par04-scipb", "--steps", "8", "--batch-size", "16", "--out", str(out)]) == 0
    with open_showers(out) as f:
        showers = f.read()
        assert f.format.name == "calochallenge" and f.metadata["detector"] == "par04-scipb"
        assert f.readout.shape == (45, 16, 9) and f.metadata["steps"] == 8
    assert len(showers) == 30 and showers.theta is not None and np.all(showers.showers >= 0)
    assert np.all((showers.energy >= 2e3) & (showers.energy <= 8e3))
    assert np.all((showers.showers == 0) | (showers.showers >= 0.01515))


def test_unknown_detector_is_a_one_line_error(workspace, capsys):
    assert main(["generate", "--model", str(workspace / "edm"), "--n", "3", "--energy", "5",
                 "--detector", "ild-w", "--out", str(workspace / "x.h5")]) == 2
    assert "unknown detector 'ild-w'; this model knows: par04-scipb, par04-siw" in capsys.readouterr().err
    assert not (workspace / "x.h5").exists()


def test_consistency_distillation_gives_a_one_step_generator(workspace, held_out_distances):
    config = {"out": str(workspace / "cd"), "process": {"name": "cd", "teacher": str(workspace / "edm")},
              "train": {"steps": 40, "batch_size": 32, "lr": 1e-4, "ema": None, "log_every": 10,
                        "checkpoint_every": 40, "device": "cpu", "validate_showers": 50}}
    (workspace / "cd.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(workspace / "cd.yaml"), "--no-progress"]) == 0
    student = load_model(workspace / "cd")
    assert student.describe["process"] == "consistency" and student.default_steps == 1
    teacher = load_model(workspace / "edm")
    assert student.describe["voxels"] == teacher.describe["voxels"]  # the teacher's preprocessing
    reference = held_out(workspace, "par04-siw")
    one_step, heun = held_out_distances(student, reference), held_out_distances(teacher, reference)
    assert w1(one_step, "longitudinal_profile") < 2 * w1(heun, "longitudinal_profile") + 0.1


def validation_row(run) -> dict[str, float]:
    header, *rows = (run / "validation.csv").read_text().splitlines()
    return dict(zip(header.split(","), map(float, rows[-1].split(","))))


def test_sigma_data_follows_the_data(workspace):
    """EDM's sigma_data, when the config does not give it, is the standard deviation of the training
    rows (1 for standardised voxels), recorded in the model."""
    recorded = json.loads((workspace / "edm" / "model.json").read_text())["process_args"]["sigma_data"]
    assert recorded == pytest.approx(float(assemble(load_config(workspace / "edm.yaml")).x.std()), abs=1e-4)
    assert recorded == pytest.approx(1.0, abs=0.01)


@pytest.mark.slow
def test_sigma_data_of_the_data_beats_calodits_half(workspace, one_thread):
    """The same tiny model trained with CaloDiT-2's sigma_data = 0.5 for the same steps misses the
    energy response by far more (a second 300-step training: 70 s)."""
    config = yaml.safe_load((workspace / "edm.yaml").read_text())
    config.update(out=str(workspace / "edm-half"), process={"name": "edm", "args": {"sigma_data": 0.5}})
    (workspace / "edm-half.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(workspace / "edm-half.yaml"), "--no-progress"]) == 0
    measured, half = validation_row(workspace / "edm"), validation_row(workspace / "edm-half")
    for name in PRESETS:
        assert measured[f"{name}/w1_energy_ratio"] < 0.5 * half[f"{name}/w1_energy_ratio"], (measured, half)
