"""Conditional flow matching (calofm.generative.flow): solvers, a 2D toy mixture, the factorised chain,
one-step distillation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from calofm.generative import (
    PROCESSES,
    SOLVERS,
    FactorisedFlowMatching,
    FlowDistillation,
    FlowMatching,
    flow_matching,
)
from calofm.generative.flow import cfm_loss, integrate
from conftest import MLP

MEANS = np.array([[-2.0, 0.0], [2.0, 1.0]])
WIDTHS = np.array([0.3, 0.5])
SHIFT = 3.0  # the condition c in {0, 1} moves the whole mixture by c * SHIFT in y


def test_fixed_step_solvers_converge_at_their_order_and_adaptive_is_exact():
    x0 = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    exact = x0 * math.e  # dx/dt = x from t = 0 to 1
    errors = {s: float((integrate(lambda x, t: x, x0, 10, s) - exact).abs().max()) for s in SOLVERS}
    assert errors["euler"] > 10 * errors["midpoint"] > 100 * errors["rk4"]
    assert errors["rk4"] < 1e-5 and errors["adaptive"] < 1e-4
    halved = float((integrate(lambda x, t: x, x0, 20, "rk4") - exact).abs().max())
    assert errors["rk4"] / halved == pytest.approx(16, rel=0.2)  # fourth order
    # the velocity sees the time running forward: dx/dt = x + t gives e x0 + e - 2 (with t -> 1 - t: e x0 + 1)
    for solver in ("rk4", "adaptive"):
        torch.testing.assert_close(integrate(lambda x, t: x + t[:, None], x0, 20, solver), math.e * x0 + math.e - 2,
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown ODE solver 'rk45'"):
        integrate(lambda x, t: x, x0, 10, "rk45")


def mixture(n, cond, rng):
    k = rng.integers(0, 2, n)
    x = MEANS[k] + WIDTHS[k, None] * rng.standard_normal((n, 2))
    x[:, 1] += SHIFT * cond
    return torch.tensor(x, dtype=torch.float32)


def test_cfm_recovers_the_means_and_widths_of_a_conditional_2d_mixture(one_thread):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    process = FlowMatching(MLP(2, 1, hidden=128), steps=16)
    opt = torch.optim.Adam(process.parameters(), lr=3e-3)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2000)  # CaloDREAM++'s schedule
    for step in range(2000):
        cond = rng.integers(0, 2, 512).astype(float)
        loss = process(mixture(512, cond, rng), torch.tensor(cond[:, None], dtype=torch.float32))
        opt.zero_grad()
        loss.backward()
        opt.step()
        decay.step()
    for solver in ("rk4", "midpoint", "adaptive"):
        process.set_solver(solver)
        for c in (0.0, 1.0):
            noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(1))
            x = process.sample(noise, torch.full((4000, 1), c)).numpy()
            x[:, 1] -= SHIFT * c
            k = (x[:, 0] > 0).astype(int)
            assert abs(k.mean() - 0.5) < 0.05, (solver, c)
            for j in range(2):
                part = x[k == j]
                np.testing.assert_allclose(part.mean(0), MEANS[j], atol=0.1, err_msg=f"{solver} c={c}")
                np.testing.assert_allclose(part.std(0), WIDTHS[j], rtol=0.2, err_msg=f"{solver} c={c}")


class Identity(nn.Module):
    def forward(self, x, t, cond):
        return x


def test_cfm_loss_regresses_the_straight_path_velocity_from_noise_to_data():
    x0 = torch.randn(16, 3)
    g = torch.Generator().manual_seed(5)
    t, eps = torch.rand((16,), generator=g), torch.randn((16, 3), generator=g)
    xt = (1 - t[:, None]) * eps + t[:, None] * x0  # eq. 4: noise at t = 0, data at t = 1
    expected = ((xt - (x0 - eps)) ** 2).mean()      # eq. 5 for a backbone that returns its input
    torch.testing.assert_close(cfm_loss(Identity(), x0, None, torch.Generator().manual_seed(5)), expected)


class Constant(nn.Module):
    """Velocity = the last ``n`` condition entries (or 1 without them) + w (0 unless a test moves it):
    straight, solver-exact paths."""

    def __init__(self, n=0):
        super().__init__()
        self.n, self.w = n, nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond):
        return (cond[:, -self.n:] if self.n else torch.ones_like(x)) + self.w


class Pair(nn.Module):
    FACTORISED = True

    def __init__(self):
        super().__init__()
        self.first, self.second, self.split = Constant(), Constant(2), 2


def test_factorised_flow_generates_the_second_part_given_the_generated_first():
    process = flow_matching(Pair(), solver="euler", steps=3)
    assert isinstance(process, FactorisedFlowMatching) and PROCESSES[process.name] is FactorisedFlowMatching
    noise = torch.randn(5, 4)
    out = process.sample(noise, torch.zeros(5, 1))
    first = noise[:, :2] + 1
    torch.testing.assert_close(out, torch.cat([first, noise[:, 2:] + first], dim=1))
    # the loss is the sum of both stages' CFM losses; the second stage sees the clean first part
    x0, cond = torch.randn(8, 4), torch.zeros(8, 1)
    g = torch.Generator().manual_seed(3)
    draws = [(torch.rand((8,), generator=g), torch.randn((8, 2), generator=g)) for _ in range(2)]
    x1, x2 = x0[:, :2], x0[:, 2:]
    expected = ((1 - (x1 - draws[0][1])) ** 2).mean() + ((x1 - (x2 - draws[1][1])) ** 2).mean()
    torch.testing.assert_close(process(x0, cond, torch.Generator().manual_seed(3)), expected)
    assert type(flow_matching(MLP(2, 1))) is FlowMatching


class LinearField(nn.Module):
    """Velocity W x: the ODE's solution at t = 1 is exp(W) x, one Euler step gives (1 + W) x."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=torch.float32))

    def forward(self, x, t, cond):
        return x @ self.w.T


def test_flow_distillation_learns_the_teachers_ode_map_in_one_step(one_thread):
    """The teacher rotates by 1.5 rad (8 RK4 steps); distilled, one Euler step of the student is the
    matrix exponential's map (W_student = exp(W) - 1), 100x closer to the teacher's solution than one
    Euler step of the teacher. The teacher is untouched; the saved sampler is a plain one-step flow."""
    w = [[0.0, -1.5, 0.0], [1.5, 0.0, 0.0], [0.0, 0.0, -0.5]]
    teacher = FlowMatching(LinearField(w), solver="rk4", steps=8)
    process = FlowDistillation(teacher).train()
    assert not any(p.requires_grad for p in process.teacher.parameters())
    assert process.student.training and not process.teacher.training  # the teacher is a fixed ODE solver
    optimiser = torch.optim.Adam([p for p in process.parameters() if p.requires_grad], lr=2e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        loss = process(torch.zeros(256, 3), torch.zeros(256, 1), g)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    student = process.sampler()
    assert isinstance(student, FlowMatching) and (student.solver, student.steps) == ("euler", 1)
    expected = torch.linalg.matrix_exp(torch.tensor(w)) - torch.eye(3)
    torch.testing.assert_close(student.net.w.detach(), expected, atol=2e-3, rtol=0)
    noise, cond = torch.randn((2000, 3), generator=g), torch.zeros(2000, 1)
    exact = teacher.sample(noise, cond)
    err_student = (student.sample(noise, cond) - exact).square().mean()
    err_euler = (teacher.sample(noise, cond, steps=1) - exact).square().mean()
    assert err_student < 0.01 * err_euler, (err_student, err_euler)
    torch.testing.assert_close(teacher.net.w.detach(), torch.tensor(w))
    torch.testing.assert_close(student.one_step(noise, cond), student.sample(noise, cond))


def test_factorised_distillation_conditions_the_second_stage_on_the_teachers_first():
    """For the chain the loss compares each stage with the teacher: the student's second stage gets
    the teacher's first-stage output as its condition, not its own (which may still be wrong)."""
    teacher = flow_matching(Pair(), solver="euler", steps=3)
    process = FlowDistillation(teacher)
    with torch.no_grad():
        process.student.net.first.w.fill_(1.0)  # the student's first stage is off by one
    noise, cond = torch.randn(6, 4), torch.zeros(6, 1)
    aim = teacher.sample(noise, cond)  # first = noise + 1, second = noise + first
    out = process.student.one_step(noise, cond, given=aim)
    torch.testing.assert_close(out[:, :2], noise[:, :2] + 2)
    torch.testing.assert_close(out[:, 2:], noise[:, 2:] + aim[:, :2])
    # the loss sums the two stages' means (as CFM does): the first stage is off by 1 everywhere, the second exact
    torch.testing.assert_close(process(torch.zeros(6, 4), cond, torch.Generator().manual_seed(2)), torch.tensor(1.0))
    with pytest.raises(TypeError, match="flow-matching"):
        FlowDistillation(torch.nn.Linear(2, 2))
