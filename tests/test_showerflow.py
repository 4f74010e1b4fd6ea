"""ShowerFlow (seed 000 section 4.2) trained by maximum likelihood, and the occupancy calibration."""

import numpy as np
import pytest
import torch

from calofm.data.calibration import OccupancyCalibration
from calofm.generative import Likelihood
from calofm.models.showerflow import NORM_POINTS, ShowerFlow

SHAPE = np.array([40.0, 80.0, 60.0, 20.0, 2.0])  # mean points per layer and GeV


def toy_counts(energy, rng):
    """Poisson counts per layer growing with the energy (GeV); the last layer is mostly empty."""
    return rng.poisson(energy[:, None] * SHAPE[None])


def test_counts_survive_normalisation_and_dequantisation():
    counts = torch.tensor([[0, 1, 799, 800, 12345]])
    values = ShowerFlow.normalise(counts, torch.Generator().manual_seed(0))
    assert torch.all((values * NORM_POINTS >= counts) & (values * NORM_POINTS < counts + 1))
    assert torch.equal(ShowerFlow.counts(values), counts)
    assert torch.equal(ShowerFlow.counts(torch.tensor([[-0.3]])), torch.tensor([[0]]))


def test_likelihood_sampling_inverts_the_flow():
    torch.manual_seed(0)
    process = Likelihood(ShowerFlow(n_cond=2, n_layers=4, hidden=(16, 16)))
    noise, cond = torch.randn(6, 4), torch.rand(6, 2)
    x = process.sample(noise, cond)
    torch.testing.assert_close(process.net(cond).transform(x), noise, rtol=1e-4, atol=1e-4)
    assert process(x, cond).ndim == 0


def test_showerflow_samples_the_per_layer_counts_of_its_training_data(one_thread):
    rng = np.random.default_rng(0)
    energy = rng.uniform(1, 10, 4000)
    counts = torch.tensor(toy_counts(energy, rng))
    x = ShowerFlow.normalise(counts, torch.Generator().manual_seed(1))
    cond = torch.tensor(energy[:, None] / 10, dtype=torch.float32)
    torch.manual_seed(0)
    process = Likelihood(ShowerFlow(n_cond=1, n_layers=5, hidden=(64, 64)))
    opt = torch.optim.Adam(process.parameters(), lr=4e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 800)
    for _ in range(800):
        index = torch.from_numpy(rng.integers(0, len(x), 256))
        loss = process(x[index], cond[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    width = lambda a: (np.quantile(a, 0.84, axis=0) - np.quantile(a, 0.16, axis=0)) / 2  # noqa: E731
    for e in (3.0, 8.0):
        noise = torch.randn(3000, 5, generator=torch.Generator().manual_seed(2))
        sampled = ShowerFlow.counts(process.sample(noise, torch.full((3000, 1), e / 10))).numpy()
        truth = toy_counts(np.full(3000, e), rng)
        np.testing.assert_allclose(sampled.mean(0), truth.mean(0), rtol=0.05, atol=1.0, err_msg=f"E={e}")
        np.testing.assert_allclose(width(sampled), width(truth), rtol=0.25, atol=1.0, err_msg=f"E={e}")
        # after this short training a few samples land in the splines' linear tails: rare, not gone
        assert np.mean(sampled > 2 * truth.max(0)) < 0.01 and sampled.min() >= 0


def test_occupancy_calibration_inverts_the_generated_polynomial():
    n = np.linspace(10, 2000, 200)
    data_occupancy = 0.8 * n - 1.5e-4 * n**2           # Geant4: cells filled by a shower of n points
    gen_occupancy = 0.6 * n - 0.5e-4 * n**2            # generated points share cells more often
    calibration = OccupancyCalibration.fit(n, data_occupancy, n, gen_occupancy)
    calibrated = calibration(n)
    # the calibrated count fills, once generated, as many cells as Geant4 does at n points
    np.testing.assert_allclose(0.6 * calibrated - 0.5e-4 * calibrated**2, data_occupancy, rtol=2e-3, atol=0.5)
    assert np.all(calibrated[:-1] > n[:-1]) and np.all(np.diff(calibrated) >= 0)  # equal at n = 2000
    same = OccupancyCalibration.fit(n, data_occupancy, n, data_occupancy)
    np.testing.assert_array_equal(same(n), np.rint(n))
    with pytest.raises(ValueError, match="more than 3 showers"):
        OccupancyCalibration.fit(n[:3], data_occupancy[:3], n, gen_occupancy)
