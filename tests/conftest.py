import os

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from calofm.cli.main import main
from calofm.data import write_showers
from calofm.data.toy import toy_showers
from calofm.geometry import calochallenge_binning


class MLP(nn.Module):
    """Stand-in backbone for process tests: an MLP on flattened x, the noise label (or time) and the
    conditions."""

    def __init__(self, dim, n_cond, hidden=64):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim + 1 + n_cond, hidden), nn.SiLU(),
                                    nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x, noise_label, cond):
        h = torch.cat([x.flatten(1), noise_label[:, None], cond], dim=1)
        return self.layers(h).reshape(x.shape)


# The toy file pairs the CaloChallenge reference evaluation ran on for tests/data/calochallenge/expected.json
# (tests/data/calochallenge/make_expected.py): dataset -> (binning, generated showers, reference showers).
CALOCHALLENGE_PAIRS = {"1-photons": ("dataset_1_photons", 1000, 1500), "1-pions": ("dataset_1_pions", 1000, 1500),
                       "2": ("dataset_2", 1000, 1500), "3": ("dataset_3", 800, 1200)}
# The classifier pair: dataset 1-photons, 102 000 showers each (the reference's splits need more than
# 100 000 per class), 1-10 GeV, the generated voxels scaled by 1.3, trained with the reference's
# flags --cls_n_hidden 64 --cls_n_epochs 5 (AUC about 0.65, where training still shapes the result).
CALOCHALLENGE_CLASSIFIER_PAIR = {"showers": 102_000, "scale": 1.3, "hidden": 64, "epochs": 5}


def calochallenge_classifier_pair(folder) -> tuple:
    """(generated, reference) dataset-1-photons files for the classifier parity test."""
    binning, n = calochallenge_binning("dataset_1_photons"), CALOCHALLENGE_CLASSIFIER_PAIR["showers"]
    reference = toy_showers(binning, n, seed=31, e_min=1e3, e_max=1e4, points_per_gev=10)
    generated = toy_showers(binning, n, seed=32, e_min=1e3, e_max=1e4, points_per_gev=10)
    return write_challenge_pair(folder, binning, generated, reference, CALOCHALLENGE_CLASSIFIER_PAIR["scale"])


def write_challenge_pair(folder, binning, generated, reference, scale: float) -> tuple:
    """``folder``/generated.h5 (voxels of ``generated`` x ``scale``) and ``folder``/reference.h5."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    generated = generated.with_fields(showers=(generated.showers * scale).astype(np.float32))
    paths = folder / "generated.h5", folder / "reference.h5"
    for path, showers in zip(paths, (generated, reference)):
        write_showers(path, showers, "calochallenge", binning)
    return paths


def calochallenge_pair(dataset: str, folder) -> tuple:
    """(generated, reference) CaloChallenge files in ``folder``: toy showers (1-100 GeV) as the
    reference, and another toy sample with every voxel energy scaled by 1.05 as the model."""
    name, n_gen, n_ref = CALOCHALLENGE_PAIRS[dataset]
    binning = calochallenge_binning(name)
    reference = toy_showers(binning, n_ref, seed=21, e_min=1e3, e_max=1e5)
    generated = toy_showers(binning, n_gen, seed=22, e_min=1e3, e_max=1e5)
    return write_challenge_pair(folder, binning, generated, reference, 1.05)


def read_physics_vector(path):
    """(edge_min, edge_max, energies, values) of a G4PhysicsVector ascii file, as Retrieve reads it."""
    tokens = path.read_text().split()
    edge_min, edge_max, n, size = float(tokens[0]), float(tokens[1]), int(tokens[2]), int(tokens[3])
    assert n == size
    pairs = np.array(tokens[4:], dtype=float).reshape(size, 2)
    return edge_min, edge_max, pairs[:, 0], pairs[:, 1]


@torch.no_grad()
def pretrained_like(make, seed: int = 0):
    """``make()`` seeded, every weight moved off its initial value: a stand-in for a pre-trained net in
    which nothing sits at zero, so every part matters."""
    torch.manual_seed(seed)
    net = make()
    for p in net.parameters():
        p.add_(0.05 * torch.randn_like(p))
    return net


@pytest.fixture(scope="session")
def ds2():
    return calochallenge_binning("dataset_2")


@pytest.fixture(scope="session")
def ds1_photons():
    return calochallenge_binning("dataset_1_photons")


@pytest.fixture(scope="session")
def toy(ds2):
    """40 toy showers on the dataset-2 mesh, with theta, phi and particle filled in."""
    showers = toy_showers(ds2, 40, seed=3, e_min=1e3, e_max=1e5)
    rng = np.random.default_rng(4)
    return showers.with_fields(theta=rng.uniform(0.5, 2.5, 40), phi=rng.uniform(-np.pi, np.pi, 40))


@pytest.fixture
def ds2_file(tmp_path, toy, ds2):
    path = tmp_path / "ds2.h5"
    write_showers(path, toy, "calochallenge", ds2)
    return path


@pytest.fixture
def one_thread():
    """Tiny models run fastest (and least disturbed by other jobs) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


TINY_DIT = {"patch": [3, 4, 5], "dim": 72, "depth": 2, "heads": 4, "mlp_dim": 144}


def _tiny_run_config(folder, name, detectors, steps, free_slots=1, process=None, **train):
    """Write the YAML of a tiny-DiT run (CPU, batch 16) and return its path."""
    config = {"out": str(folder / name),
              "data": {"detectors": detectors, "val_fraction": 0.0, "free_slots": free_slots},
              "model": {"backbone": "dit", "args": TINY_DIT}, "process": process or {"name": "edm"},
              "train": {"steps": steps, "batch_size": 16, "lr": 2e-3, "device": "cpu", "log_every": 10, **train}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def tiny_run_config():
    return _tiny_run_config


@pytest.fixture(scope="session")
def toys(tmp_path_factory, ds2):
    """Toy showers of detectors a, b (pre-training) and c (target, with a test file); a base EDM on
    a + b (``base``) and its consistency distillation (``base_cd``)."""
    folder = tmp_path_factory.mktemp("toys")
    for seed, (name, n, moliere) in enumerate([("a", 120, 9.3), ("b", 120, 14.0), ("c", 100, 20.0),
                                               ("c_test", 400, 20.0)]):
        showers = toy_showers(ds2, n, seed=seed, e_min=2e3, e_max=2e4, moliere_mm=moliere)
        write_showers(folder / f"{name}.h5", showers, "calochallenge", ds2, {"detector": name.split("_")[0]})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = _tiny_run_config(folder, "base", {"a": str(folder / "a.h5"), "b": str(folder / "b.h5")}, 60)
    cd = _tiny_run_config(folder, "base_cd", {}, 5, process={"name": "cd", "teacher": str(folder / "base")})
    for config in (base, cd):
        assert main(["train", "--config", str(config), "--no-progress"]) == 0
    torch.set_num_threads(threads)
    return folder


GEANT4_PRESETS = ("par04-siw", "par04-scipb")  # simulated with seeds 0 and 1
GEANT4_ENERGY, GEANT4_SHOWERS, GEANT4_WORKERS = "loguniform:2:8", 400, 2  # fm-1's card check uses the same sample


@pytest.fixture(scope="session")
def geant4_presets(tmp_path_factory):
    """400 Geant4 electrons (2-8 GeV) in each of two presets, ``<preset>.h5`` in the returned folder:
    the real-shower training data of the model-family tests."""
    from filelock import FileLock

    from calofm.simulate.detectors import get_detector
    from calofm.simulate.gun import Gun, Spectrum
    from calofm.simulate.runner import Run, simulate

    # one folder for all xdist workers of this session: the first simulates, the others wait and find it done
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "geant4-presets"
    folder.mkdir(exist_ok=True)
    gun = Gun("e-", Spectrum.parse(GEANT4_ENERGY))
    with FileLock(folder / ".lock"):
        for seed, name in enumerate(GEANT4_PRESETS):
            simulate(Run(get_detector(name), gun, GEANT4_SHOWERS, seed=seed), folder / f"{name}.h5",
                     workers=GEANT4_WORKERS, progress=False)
    return folder


@pytest.fixture(scope="session")
def held_out_distances():
    from calofm.workflow.study import held_out_distances

    return held_out_distances
