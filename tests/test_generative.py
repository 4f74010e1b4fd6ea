"""Generative processes (EDM, consistency models, consistency distillation) on tiny stand-in
backbones: preconditioning identities, the noise schedule, reproducibility, sampling on Gaussian
toys whose exact denoiser is known, and short trainings."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from calofm.generative import (
    EDM,
    PROCESSES,
    AutoRegressive,
    Consistency,
    ConsistencyDistillation,
    FactorisedFlowMatching,
    FlowMatching,
    Likelihood,
    Process,
)
from calofm.generative.process import per_sample
from conftest import MLP


class Recorder(nn.Module):
    """Returns ``value`` everywhere and remembers its inputs and how often it was called."""

    def __init__(self, value=0.0):
        super().__init__()
        self.value, self.calls, self.seen = value, 0, None
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, noise_label, cond):
        self.calls += 1
        self.seen = (x.clone(), noise_label.clone(), cond.clone())
        return torch.full_like(x, self.value) + 0 * self.dummy


class GaussianDenoiserNet(nn.Module):
    """A backbone that makes the EDM denoiser exact for data ~ N(cond, std^2) per dimension:
    D(x, s) = cond + std^2 / (std^2 + s^2) (x - cond). ``residual`` adds a trainable term
    a(label, cond) * x_in + b(label, cond), zero at initialisation, so a copy can be distilled."""

    def __init__(self, std, sigma_data=0.5, dim=2, residual=False):
        super().__init__()
        self.std, self.sigma_data, self.dim = std, sigma_data, dim
        self.residual = None
        if residual:
            self.residual = nn.Sequential(nn.Linear(1 + dim, 32), nn.SiLU(), nn.Linear(32, 2 * dim))
            nn.init.zeros_(self.residual[-1].weight)
            nn.init.zeros_(self.residual[-1].bias)

    def forward(self, x_in, noise_label, cond):
        sd, var = self.sigma_data, self.std ** 2
        sigma = torch.exp(4 * noise_label)[:, None]
        norm = torch.sqrt(sigma ** 2 + sd ** 2)
        x = x_in * norm
        exact = cond + var / (var + sigma ** 2) * (x - cond)
        c_skip, c_out = sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / norm
        out = (exact - c_skip * x) / c_out
        if self.residual is not None:
            a, b = self.residual(torch.cat([noise_label[:, None], cond], dim=1)).chunk(2, dim=1)
            out = out + a * x_in + b
        return out


def mixture(n, generator):
    """2-component 2D Gaussian mixture: centres (+-0.8, 0), std 0.25; mean (0, 0), std (0.84, 0.25)."""
    side = torch.randint(0, 2, (n, 1), generator=generator).float() * 2 - 1
    centre = torch.cat([0.8 * side, torch.zeros_like(side)], dim=1)
    return centre + 0.25 * torch.randn(n, 2, generator=generator)


MIXTURE_MEAN, MIXTURE_STD = np.array([0.0, 0.0]), np.array([math.hypot(0.8, 0.25), 0.25])


def gaussian_conditions(n, generator):
    """Per-sample data means drawn from four centres, used as the conditions."""
    centres = torch.tensor([[1.0, -0.5], [-1.0, 2.0], [0.0, 0.0], [3.0, 1.0]])
    return centres[torch.randint(0, 4, (n,), generator=generator)]


def fixed_loss(process, data, cond, seed=123, repeats=4):
    """The loss averaged over ``repeats`` evaluations with a seeded generator (comparable across training)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return float(sum(process(data, cond, g) for _ in range(repeats))) / repeats


@pytest.fixture(autouse=True)
def _seeded(one_thread):
    """Seeded, and on one thread: these tiny models run far slower when threads contend for cores."""
    torch.manual_seed(0)


def test_per_sample_broadcasts_over_any_trailing_shape():
    x = torch.zeros(3, 2, 4, 5)
    assert per_sample(0.5, x).shape == (3, 1, 1, 1)
    assert torch.equal(per_sample(torch.tensor([1.0, 2.0, 3.0]), x).flatten(), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError):
        per_sample(torch.ones(2), x)


def test_edm_preconditioning_identities():
    x, cond = torch.randn(4, 3, 5), torch.zeros(4, 1)
    edm = EDM(Recorder(0.0))
    assert edm.denoise(x, 1e4, cond).abs().max() < 1e-6
    assert torch.allclose(edm.denoise(x, 1e-4, cond), x, atol=1e-6)
    per = edm.denoise(x, torch.tensor([1e4, 1e-4, 1e4, 1e-4]), cond)
    assert per[0::2].abs().max() < 1e-6 and torch.allclose(per[1::2], x[1::2], atol=1e-6)

    net = Recorder(1.0)
    sigma, sd = torch.tensor([0.3, 1.0, 2.0, 7.0]), 0.5
    out = EDM(net, sigma_data=sd).denoise(x, sigma, cond)
    s = sigma[:, None, None]
    c_skip, c_out, c_in = (sd ** 2 / (s ** 2 + sd ** 2), s * sd / torch.sqrt(s ** 2 + sd ** 2),
                           1 / torch.sqrt(s ** 2 + sd ** 2))
    assert torch.allclose(out, c_skip * x + c_out, atol=1e-6)
    assert torch.allclose(net.seen[0], c_in * x, atol=1e-6)
    assert torch.allclose(net.seen[1], torch.log(sigma) / 4)


def test_karras_schedule():
    edm = EDM(Recorder())
    sig = edm.sigmas()
    assert sig.dtype == torch.float32 and len(sig) == 33
    assert sig[0] == 80.0 and sig[31] == torch.tensor(0.002) and sig[32] == 0
    assert bool((sig[1:] < sig[:-1]).all())
    i = np.arange(32) / 31
    ref = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert np.allclose(sig[:-1].numpy(), ref, rtol=1e-6)
    assert len(edm.sigmas(5)) == 6 and torch.equal(edm.sigmas(1), torch.tensor([80.0, 0.0]))


def test_edm_loss_is_reproducible_given_a_generator():
    edm = EDM(MLP(6, 2))
    x0, cond = torch.randn(16, 2, 3), torch.randn(16, 2)
    a = edm(x0, cond, torch.Generator().manual_seed(7))
    b = edm(x0, cond, torch.Generator().manual_seed(7))
    c = edm(x0, cond, torch.Generator().manual_seed(8))
    assert a.ndim == 0 and torch.equal(a, b) and not torch.equal(a, c)
    a.backward()
    assert all(p.grad is not None for p in edm.net.parameters())


def test_heun_sampling_is_deterministic_given_the_noise():
    edm = EDM(MLP(6, 2), steps=8)
    noise, cond = torch.randn(5, 2, 3), torch.randn(5, 2)
    a, b = edm.sample(noise, cond), edm.sample(noise, cond)
    assert a.shape == noise.shape and torch.equal(a, b) and not a.requires_grad
    assert not torch.equal(a, edm.sample(torch.randn(5, 2, 3), cond))
    counter = EDM(Recorder(), steps=8)
    counter.sample(noise, cond)
    assert counter.net.calls == 2 * 8 - 1
    assert edm.sampler() is edm


def test_heun_step_takes_per_sample_noise_levels():
    edm = EDM(MLP(2, 1))
    x, cond = torch.randn(4, 2), torch.randn(4, 1)
    s_from, s_to = torch.tensor([3.0, 1.0, 0.5, 0.1]), torch.tensor([2.0, 0.0, 0.2, 0.0])
    batch = edm.heun_step(x, s_from, s_to, cond)
    for i in range(4):
        one = edm.heun_step(x[i:i + 1], float(s_from[i]), float(s_to[i]), cond[i:i + 1])
        assert torch.allclose(batch[i:i + 1], one, atol=1e-6)


def test_edm_sampling_with_the_exact_denoiser_recovers_the_data():
    std = 0.7
    edm = EDM(GaussianDenoiserNet(std))
    g = torch.Generator().manual_seed(1)
    cond = gaussian_conditions(4000, g)
    out = edm.sample(torch.randn(4000, 2, generator=g), cond)
    resid = out - cond
    assert resid.mean(0).abs().max() < 0.05
    assert torch.allclose(resid.std(0), torch.full((2,), std), rtol=0.05)
    for centre in cond.unique(dim=0):
        rows = (cond == centre).all(1)
        assert torch.allclose(out[rows].mean(0), centre, atol=0.1)


def test_edm_learns_a_gaussian_mixture():
    g = torch.Generator().manual_seed(2)
    edm = EDM(MLP(2, 1, hidden=64))
    cond = torch.zeros(512, 1)
    held_out = mixture(2048, g)
    before = fixed_loss(edm, held_out, torch.zeros(2048, 1))
    opt = torch.optim.Adam(edm.parameters(), lr=3e-3)
    for _ in range(400):
        loss = edm(mixture(512, g), cond, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        edm.after_step()
    after = fixed_loss(edm, held_out, torch.zeros(2048, 1))
    assert after < 0.8 * before
    out = edm.sample(torch.randn(3000, 2, generator=g), torch.zeros(3000, 1), steps=16).numpy()
    assert np.abs(out.mean(0) - MIXTURE_MEAN).max() < 0.15
    assert np.allclose(out.std(0), MIXTURE_STD, rtol=0.25)


def test_consistency_boundary_is_exact():
    for sd in (0.5, 0.3):
        model = Consistency(MLP(6, 2), sigma_data=sd)
        x, cond = torch.randn(8, 2, 3), torch.randn(8, 2)
        assert torch.equal(model.denoise(x, model.sigma_min, cond), x)
        assert torch.equal(model.denoise(x, torch.full((8,), model.sigma_min), cond), x)
        assert not torch.allclose(model.denoise(x, 1.0, cond), x)
    with pytest.raises(NotImplementedError):
        model(x, cond)


def test_consistency_sampling():
    model = Consistency(Recorder(0.0))
    noise, cond = torch.randn(6, 3), torch.zeros(6, 1)
    out = model.sample(noise, cond)
    assert model.net.calls == 1  # a zero net leaves c_skip(sigma_max) x
    assert torch.allclose(out, noise * 80 * 0.25 / ((80 - 0.002) ** 2 + 0.25))
    assert model.sample_sigmas(1).tolist() == [80.0]
    levels = model.sample_sigmas(3)
    assert len(levels) == 3 and levels[0] == 80 and levels[-1] > model.sigma_min
    mlp = Consistency(MLP(3, 1))
    a = mlp.sample(noise, cond, steps=3, generator=torch.Generator().manual_seed(0))
    b = mlp.sample(noise, cond, steps=3, generator=torch.Generator().manual_seed(0))
    c = mlp.sample(noise, cond, steps=3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_distillation_starts_from_the_teacher_and_only_trains_the_student():
    teacher = EDM(MLP(4, 1), sigma_data=0.4, sigma_max=50.0)
    cd = ConsistencyDistillation(teacher)
    assert cd.sampler() is cd.target and isinstance(cd.target, Consistency)
    assert cd.target.sigma_data == 0.4 and cd.target.sigma_max == 50.0 and cd.target.sigma_min == 0.002
    for t, s, g in zip(teacher.net.parameters(), cd.student.net.parameters(), cd.target.net.parameters()):
        assert torch.equal(t, s) and torch.equal(t, g) and t is not s and s is not g
        assert not t.requires_grad and s.requires_grad and not g.requires_grad
    assert len(cd.discretisation) == 32 and cd.discretisation[0] == torch.tensor(0.002)
    assert cd.discretisation[-1] == 50.0 and bool((cd.discretisation[1:] > cd.discretisation[:-1]).all())
    cd.train()
    assert not teacher.training and cd.student.training
    x0, cond = torch.randn(32, 2, 2), torch.randn(32, 1)
    a = cd(x0, cond, torch.Generator().manual_seed(3))
    assert torch.equal(a, cd(x0, cond, torch.Generator().manual_seed(3)))
    a.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in cd.target.parameters())
    assert all(p.grad is not None for p in cd.student.parameters())
    assert [n for n, p in cd.named_parameters() if p.requires_grad] == [
        n for n in dict(cd.named_parameters()) if n.startswith("student.")]


def test_distillation_target_is_an_ema_of_the_student():
    cd = ConsistencyDistillation(EDM(MLP(2, 1)), target_decay=0.95)
    opt = torch.optim.SGD([p for p in cd.parameters() if p.requires_grad], lr=0.5)
    old = copy.deepcopy(cd.target.state_dict())
    loss = cd(torch.randn(64, 2), torch.randn(64, 1), torch.Generator().manual_seed(0))
    opt.zero_grad()
    loss.backward()
    opt.step()
    student = cd.student.state_dict()
    assert any(not torch.equal(student[k], old[k]) for k in old)
    cd.after_step()
    for k, v in cd.target.state_dict().items():
        assert torch.allclose(v, 0.95 * old[k] + 0.05 * student[k], atol=1e-7)


def test_distillation_of_the_exact_gaussian_teacher():
    """The exact consistency function of N(cond, std^2) data is cond + std (x - cond) / sqrt(std^2 +
    s^2), so one-step samples should have the data's spread; the teacher-initialised student starts
    near the posterior mean instead (spread ~ 0)."""
    std = 0.7
    cd = ConsistencyDistillation(EDM(GaussianDenoiserNet(std, residual=True)), n_steps=32)
    g = torch.Generator().manual_seed(4)
    held_cond = gaussian_conditions(2048, g)
    held = held_cond + std * torch.randn(2048, 2, generator=g)
    noise, cond = torch.randn(4000, 2, generator=g), gaussian_conditions(4000, g)
    before = fixed_loss(cd, held, held_cond)
    assert (cd.sample(noise, cond) - cond).std(0).max() < 0.05
    opt = torch.optim.Adam([p for p in cd.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(800):
        c = gaussian_conditions(256, g)
        loss = cd(c + std * torch.randn(256, 2, generator=g), c, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cd.after_step()
    assert fixed_loss(cd, held, held_cond) < 0.8 * before
    resid = cd.sample(noise, cond) - cond
    assert resid.mean(0).abs().max() < 0.1
    assert bool(((resid.std(0) > 0.5) & (resid.std(0) < 0.85)).all())


def test_registry_rebuilds_the_sampler_from_a_backbone():
    assert PROCESSES == {"edm": EDM, "consistency": Consistency, "cfm": FlowMatching,
                         "cfm_factorised": FactorisedFlowMatching, "likelihood": Likelihood,
                         "autoregressive": AutoRegressive}
    flow = FlowMatching(MLP(3, 2), solver="midpoint", steps=3)
    again = PROCESSES[flow.name](MLP(3, 2), **flow.hparams)
    again.load_state_dict(flow.state_dict())
    assert again.hparams == flow.hparams == {"solver": "midpoint", "steps": 3, "rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(again.sample(torch.ones(2, 3), torch.zeros(2, 2)),
                               flow.sample(torch.ones(2, 3), torch.zeros(2, 2)))
    cd = ConsistencyDistillation(EDM(MLP(3, 2), sigma_data=0.3))
    with torch.no_grad():
        for p in cd.target.parameters():
            p.add_(0.1)
    saved = cd.sampler()
    rebuilt = PROCESSES[saved.name](MLP(3, 2), **saved.hparams)
    rebuilt.load_state_dict(saved.state_dict())
    noise, cond = torch.randn(4, 3), torch.randn(4, 2)
    assert torch.equal(rebuilt.sample(noise, cond), saved.sample(noise, cond))
    assert isinstance(rebuilt, Process) and set(saved.state_dict()) == {
        k for k in saved.state_dict() if k.startswith("net.")}


def test_processes_follow_the_data_dtype():
    edm = EDM(MLP(2, 1).double(), steps=4)
    x0, cond = torch.randn(8, 2, dtype=torch.float64), torch.zeros(8, 1, dtype=torch.float64)
    assert edm(x0, cond, torch.Generator().manual_seed(0)).dtype == torch.float64
    assert edm.sample(x0, cond).dtype == torch.float64
    cd = ConsistencyDistillation(edm).double()
    assert cd(x0, cond).dtype == torch.float64 and cd.sample(x0, cond).dtype == torch.float64
    assert "discretisation" not in cd.state_dict()
