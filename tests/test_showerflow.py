"""ShowerFlow (CaloClouds II transfer study, section 4.2) trained by maximum likelihood, and the occupancy
calibration."""

import numpy as np
import pytest
import torch

from calofm.data.calibration import OccupancyCalibration
from calofm.data.points import NORM_POINTS, LayerCountTransform
from calofm.generative import Likelihood
from calofm.models.showerflow import ShowerFlow

COUNTS = LayerCountTransform(z_edges=[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])

SHAPE = np.array([40.0, 80.0, 60.0, 20.0, 2.0])  # mean points per layer and GeV


def toy_counts(energy, rng):
    """Poisson counts per layer growing with the energy (GeV); the last layer is mostly empty."""
    return rng.poisson(energy[:, None] * SHAPE[None])


def test_counts_survive_normalisation_and_dequantisation():
    counts = torch.tensor([[0, 1, 799, 800, 12345]])
    values = COUNTS.normalise(counts, torch.Generator().manual_seed(0))
    assert torch.all((values * NORM_POINTS >= counts) & (values * NORM_POINTS < counts + 1))
    np.testing.assert_array_equal(COUNTS.decode(values), counts.numpy())
    np.testing.assert_array_equal(COUNTS.decode(torch.tensor([[-0.3]])), [[0]])


def test_likelihood_sampling_inverts_the_flow():
    torch.manual_seed(0)
    process = Likelihood(ShowerFlow(n_cond=2, n_layers=4, hidden=(16, 16)))
    noise, cond = torch.randn(6, 4), torch.rand(6, 2)
    x = process.sample(noise, cond)
    torch.testing.assert_close(process.net.flow(cond).transform(x), noise, rtol=1e-4, atol=1e-4)
    assert process(x, cond).ndim == 0


def test_showerflow_samples_the_per_layer_counts_of_its_training_data(one_thread):
    rng = np.random.default_rng(0)
    energy = rng.uniform(1, 10, 4000)
    counts = torch.tensor(toy_counts(energy, rng))
    x = COUNTS.normalise(counts, torch.Generator().manual_seed(1))
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
        sampled = COUNTS.decode(process.sample(noise, torch.full((3000, 1), e / 10)))
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
    far = calibration(np.array([5.0, 2000.0, 4000.0, 40000.0]))  # beyond the fits: the ratio at their ends
    np.testing.assert_allclose(far[1:] / [2000.0, 4000.0, 40000.0], far[1] / 2000.0, rtol=1e-3)
    np.testing.assert_allclose(far[0] / 5.0, calibration(np.array([10.0]))[0] / 10.0, rtol=0.1)
    same = OccupancyCalibration.fit(n, data_occupancy, n, data_occupancy)
    np.testing.assert_array_equal(same(n), np.rint(n))
    with pytest.raises(ValueError, match="more than 3 showers"):
        OccupancyCalibration.fit(n[:3], data_occupancy[:3], n, gen_occupancy)


def test_calibrated_counts_keep_the_layer_shares_and_hit_the_calibrated_total():
    n = np.linspace(10, 2000, 200)
    calibration = OccupancyCalibration.fit(n, 0.8 * n - 1.5e-4 * n**2, n, 0.6 * n - 0.5e-4 * n**2)
    counts = np.array([[3, 5, 0, 2], [0, 0, 0, 0], [100, 50, 25, 1], [1, 1, 1, 1]])
    scaled = calibration.apply(counts)
    np.testing.assert_array_equal(scaled.sum(1), np.where(counts.sum(1) > 0, calibration(counts.sum(1)), 0))
    share = counts * (scaled.sum(1) / np.maximum(counts.sum(1), 1))[:, None]
    assert np.all(np.abs(scaled - share) < 1) and np.all(scaled[counts == 0] == 0)


def test_layer_extension_keeps_the_pretrained_layers_and_starts_the_new_ones_at_their_log_normal_fit():
    torch.manual_seed(0)
    base = ShowerFlow(n_cond=2, n_layers=3, hidden=(16, 16))
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.1 * torch.randn_like(p))
    readout = LayerCountTransform(z_edges=[float(z) for z in range(6)])  # 5 layers: 2 more than the base's
    args = ShowerFlow.geometry_args(readout,
                                    ShowerFlow.transfer_args({"n_cond": 2, "n_layers": 3, "hidden": [16, 16]}, {}))
    assert args == {"n_layers": 3, "extra": 2, "hidden": [16, 16]}
    flow = ShowerFlow(n_cond=2, **args)
    rng = np.random.default_rng(0)
    target = torch.tensor(np.exp(rng.normal([-3.0, -2.0, -1.0, -4.0, -5.0], [0.3, 0.3, 0.3, 0.5, 0.2], (5000, 5))),
                          dtype=torch.float32)
    fresh = flow.load_transferable(base, target)
    assert fresh == ["extension.loc", "extension.log_scale", "extension.shift.weight"]
    cond = torch.rand(5000, 2)
    with torch.no_grad():
        extra = flow.log_prob(target, cond) - base.log_prob(target[:, :3], cond)  # the first 3 layers: the base's
        normal = torch.distributions.Normal(torch.tensor([-4.0, -5.0]), torch.tensor([0.5, 0.2]))
        truth = (normal.log_prob(target[:, 3:].log()) - target[:, 3:].log()).sum(1)
        assert float((extra - truth).abs().mean()) < 0.05  # the fit is the truth, up to sampling
        sample = flow.from_noise(torch.randn(5000, 5, generator=torch.Generator().manual_seed(1)), cond)
    np.testing.assert_allclose(sample[:, 3:].log().mean(0).numpy(), [-4.0, -5.0], atol=0.03)
    np.testing.assert_allclose(sample[:, 3:].log().std(0).numpy(), [0.5, 0.2], rtol=0.05)
    flow.extension.loc.data.zero_()
    flow.init_weights(flow)  # scratch: the new layers return to their fit, not to zero
    np.testing.assert_allclose(flow.extension.loc.detach().numpy(), [-4.0, -5.0], atol=0.03)
    with pytest.raises(ValueError, match="not drop them"):
        ShowerFlow.geometry_args(LayerCountTransform(z_edges=[0.0, 1.0]), {"n_layers": 3})
    with pytest.raises(ValueError, match="already extended"):
        ShowerFlow.transfer_args(args, {})
