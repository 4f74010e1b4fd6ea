"""Every model family trains on Geant4 pion showers and generates the pion class, which its files and
`calofm evaluate` name as pions (the quality of the electromagnetic -> hadronic transfer:
studies/hadronic)."""

import importlib.util
import json

import numpy as np
import pytest
import yaml

from calofm.cli.main import main
from calofm.data import open_showers
from calofm.evaluate.samples import load_sample
from calofm.evaluate.suite import quick_metrics
from calofm.simulate.detectors import Detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, simulate

pytestmark = pytest.mark.skipif(importlib.util.find_spec("geant4_pybind") is None,
                                reason="geant4_pybind is not installed")

# A small steel / scintillator HCAL (3 lambda_I) on a 480-voxel mesh: two layers per z bin, 40 mm rings
HCAL = Detector.sandwich("small-hcal", "G4_Fe", 20.0, "G4_POLYSTYRENE", 5.0, 24,
                         {"n_r": 5, "n_alpha": 8, "n_z": 12, "dr": 40.0}, sampling_fraction=0.0346)
TRAIN = {"steps": 30, "batch_size": 32, "lr": 2e-3, "device": "cpu", "log_every": 10, "checkpoint_every": 30}
FAMILIES = {
    "dit": [("model", {"model": {"backbone": "dit", "args": {"patch": [5, 4, 4], "dim": 36, "depth": 1, "heads": 2,
                                                              "mlp_dim": 64}}, "process": {"name": "edm"}})],
    "vit": [("model", {"model": {"backbone": "vit", "args": {"patch": [3, 8, 5], "dim": 36, "depth": 1, "heads": 2,
                                                              "mlp_dim": 64, "energy": {"dim": 32, "heads": 2,
                                                              "encoder_layers": 1, "decoder_layers": 1, "ff_dim": 32}}},
                       "process": {"name": "cfm", "args": {"steps": 4}}})],
    "pointcloud": [("flow", {"model": {"backbone": "showerflow", "args": {"hidden": [16, 16]}},
                             "process": {"name": "likelihood"}, "train": {**TRAIN, "ema": None}}),
                   # 32 sampler steps: with 4, the barely trained net leaves log-energies off-scale (e^40 MeV points)
                   ("model", {"model": {"backbone": "pointwise", "args": {"widths": [4, 16, 32, 16, 4], "ctx_dim": 16},
                                        "counts": "{folder}/flow"}, "process": {"name": "edm", "args": {"steps": 32}},
                              "train": {**TRAIN, "batch_size": 1024}})],
    "nexttoken": [("model", {"model": {"backbone": "nexttoken", "args": {"dim": 32, "depth": 1, "heads": 2,
                                                                          "mlp_dim": 64}},
                             "process": {"name": "autoregressive"}})],
}


@pytest.fixture(scope="module")
def pions(tmp_path_factory):
    """80 pi+ of 5-10 GeV in the small HCAL."""
    folder = tmp_path_factory.mktemp("pions")
    simulate(Run(HCAL, Gun("pi+", Spectrum.parse("uniform:5:10")), 80, seed=4), folder / "pi.h5", workers=2,
             progress=False)
    return folder


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_trains_on_pions_and_evaluate_reports_them(family, pions, tmp_path, one_thread):
    data = {"detectors": {"pions": str(pions / "pi.h5")}, "val_fraction": 0.0}
    for name, config in FAMILIES[family]:
        config = json.loads(json.dumps(config).replace("{folder}", str(tmp_path)))
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"out": str(tmp_path / name), "data": data, "train": TRAIN, **config}))
        assert main(["train", "--config", str(path), "--no-progress"]) == 0
        rows = (tmp_path / name / "metrics.csv").read_text().splitlines()[1:]
        assert rows and all(np.isfinite(float(r.split(",")[1])) for r in rows)
    generated = tmp_path / "generated.h5"
    assert main(["generate", "--model", str(tmp_path / "model"), "--n", "6", "--energy", "uniform:5:10",
                 "--detector", "pions", "--out", str(generated)]) == 0
    with open_showers(generated) as f:
        assert f.metadata["particle"] == "pi+"
    model, binning = load_sample(generated)
    reference, _ = load_sample(pions / "pi.h5")
    assert model.particles == {"pi+": 6} and reference.particles == {"pi+": 80}  # what evaluate reports
    assert np.isfinite(quick_metrics(reference, model, binning)["gm_w1"])
