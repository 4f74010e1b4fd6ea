import numpy as np
import pytest
import torch

from calofm.data import write_showers
from calofm.data.toy import toy_showers
from calofm.geometry import calochallenge_binning


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
