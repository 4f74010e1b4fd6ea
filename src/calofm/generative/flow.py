"""Conditional flow matching (Lipman et al. 2023) on straight paths, as CaloDREAM uses it (CaloDREAM++,
section 2.1): x(t) = (1 - t) eps + t x0 with eps ~ N(0, 1), the backbone ``net(x(t), t, cond)``
regresses the velocity x0 - eps (eq. 5), and generation integrates dx/dt = v from t = 0 (noise) to
t = 1 (data) (eq. 6) with a fixed-step Euler, midpoint or RK4 solver or torchdiffeq's adaptive
dopri5. The backbone receives t in [0, 1] itself as its "noise label" and embeds it (CaloDREAM's
networks by a Gaussian Fourier projection).

* :class:`FlowMatching`: one backbone over the whole data vector.
* :class:`FactorisedFlowMatching`: p(x1, x2 | c) = p(x1 | c) p(x2 | c, x1) with two backbones
  (CaloDREAM's energy network for the layer energies, then its shape network for the voxels given
  them, eq. 7), trained together on the sum of the two losses and sampled one after the other.
* :class:`FlowDistillation`: a one-step student of a trained flow (either kind), for generation
  fast enough for Geant4.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from calofm.generative.process import Distillation, Process, per_sample, randn_like

SOLVERS = ("euler", "midpoint", "rk4", "adaptive")
Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, t of shape (B,)) -> dx/dt


def cfm_loss(net: nn.Module, x0: torch.Tensor, cond: torch.Tensor,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean over elements of (net(x(t), t, cond) - (x0 - eps))^2 with t ~ U(0, 1) per sample."""
    t = torch.rand((x0.shape[0],), generator=generator, device=x0.device, dtype=x0.dtype)
    eps = randn_like(x0, generator)
    tt = per_sample(t, x0)
    err = net((1 - tt) * eps + tt * x0, t, cond) - (x0 - eps)
    return (err * err).mean()


def check_sampler(solver: str, steps: int) -> None:
    """Raise ``ValueError`` for an unknown solver or fewer than one step."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown ODE solver {solver!r}; known: {', '.join(SOLVERS)}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")


def integrate(velocity: Velocity, x: torch.Tensor, steps: int, solver: str = "rk4",
              rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    """x(1) from x(0) = ``x`` under dx/dt = velocity(x, t): ``steps`` equal steps of a fixed-step
    solver (Euler: 1 call per step, midpoint: 2, RK4: 4), or ``adaptive`` (torchdiffeq's dopri5 with
    ``rtol`` / ``atol``; ``steps`` is then ignored)."""
    check_sampler(solver, steps)
    if solver == "adaptive":
        from torchdiffeq import odeint

        span = torch.tensor([0.0, 1.0], device=x.device, dtype=x.dtype)
        return odeint(lambda t, y: velocity(y, t.expand(y.shape[0])), x, span, method="dopri5",
                      rtol=rtol, atol=atol)[-1]
    h = 1.0 / steps
    for i in range(steps):
        t = torch.full((x.shape[0],), i * h, device=x.device, dtype=x.dtype)
        if solver == "euler":
            x = x + h * velocity(x, t)
        elif solver == "midpoint":
            x = x + h * velocity(x + h / 2 * velocity(x, t), t + h / 2)
        else:
            k1 = velocity(x, t)
            k2 = velocity(x + h / 2 * k1, t + h / 2)
            k3 = velocity(x + h / 2 * k2, t + h / 2)
            k4 = velocity(x + h * k3, t + h)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


class FlowMatching(Process):
    """Straight-path CFM around a backbone ``net(x, t, cond)``; sampling with ``solver`` over
    ``steps`` steps (CaloDREAM++: RK4, 20 steps)."""

    name = "cfm"

    def __init__(self, net: nn.Module, solver: str = "rk4", steps: int = 20, rtol: float = 1e-5,
                 atol: float = 1e-5) -> None:
        super().__init__()
        self.net = net
        self.steps, self.rtol, self.atol = int(steps), float(rtol), float(atol)
        self.hparams = {"steps": self.steps, "rtol": self.rtol, "atol": self.atol}
        self.set_solver(solver)

    def set_solver(self, solver: str) -> None:
        """Generate with ``solver`` from now on (one of ``SOLVERS``)."""
        check_sampler(solver, self.steps)
        self.solver = self.hparams["solver"] = solver

    def forward(self, x0: torch.Tensor, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return cfm_loss(self.net, x0, cond, generator)

    def _solve(self, net: nn.Module, noise: torch.Tensor, cond: torch.Tensor, steps: int | None) -> torch.Tensor:
        return integrate(lambda x, t: net(x, t, cond), noise, self.steps if steps is None else int(steps),
                         self.solver, self.rtol, self.atol)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """x(1) from x(0) = ``noise`` (standard normal, the data's shape)."""
        return self._solve(self.net, noise, cond, steps)

    def one_step(self, noise: torch.Tensor, cond: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
        """One Euler step from t = 0 to 1, noise + net(noise, 0, cond): the whole sampler of a
        distilled student, with gradients and free of data-dependent control flow (the distillation
        loss and exported graphs call it). ``given`` is for :class:`FactorisedFlowMatching` and
        ignored here."""
        return _euler(self.net, noise, cond)


class FactorisedFlowMatching(FlowMatching):
    """Two chained CFMs: ``net.first`` generates the first ``net.split`` entries of the flat data
    vector given ``cond``, ``net.second`` the rest given ``cond`` and those entries (the clean ones
    in training, the generated ones in sampling). The loss is the sum of the two CFM losses, so the
    two networks train independently in one run."""

    name = "cfm_factorised"

    def _parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 2:
            raise ValueError(f"factorised flow matching takes flat (B, D) data, got shape {tuple(x.shape)}")
        return x[:, :self.net.split], x[:, self.net.split:]

    def forward(self, x0: torch.Tensor, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        first, second = self._parts(x0)
        return (cfm_loss(self.net.first, first, cond, generator)
                + cfm_loss(self.net.second, second, torch.cat([cond, first], dim=1), generator))

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        n1, n2 = self._parts(noise)
        first = self._solve(self.net.first, n1, cond, steps)
        return torch.cat([first, self._solve(self.net.second, n2, torch.cat([cond, first], dim=1), steps)], dim=1)

    def one_step(self, noise: torch.Tensor, cond: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
        """One Euler step for each stage; the second is conditioned on the first stage's entries of
        ``given`` (a full data vector, as in distillation) or, without it, on the generated ones."""
        n1, n2 = self._parts(noise)
        first = _euler(self.net.first, n1, cond)
        condition = first if given is None else self._parts(given)[0]
        return torch.cat([first, _euler(self.net.second, n2, torch.cat([cond, condition], dim=1))], dim=1)


def _euler(net: nn.Module, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
    return noise + net(noise, torch.zeros(noise.shape[0], device=noise.device, dtype=noise.dtype), cond)


class FlowDistillation(Distillation):
    """One-step distillation of a trained flow-matching teacher: the student, a copy of the teacher's
    backbone, learns to map noise to the teacher's ODE solution in one Euler step (the distillation
    of Liu, Gong and Liu 2023, "Flow Straight and Fast"; Luhman and Luhman 2021).

    ``forward`` draws noise z, solves the teacher's ODE from it with the teacher's own solver and
    steps without gradients, and returns the mean over elements of (student.one_step(z) - x_teacher)^2,
    for a factorised flow the sum of the two stages' means (as its CFM loss weighs them). A factorised
    student's second stage is conditioned on the teacher's first-stage output, so each stage learns
    the teacher's map for its own input. ``sampler()`` is the student, a plain flow of
    one Euler step that loads and exports like any other.
    """

    name = "flow_distillation"

    def __init__(self, teacher: FlowMatching) -> None:
        super().__init__()
        if not isinstance(teacher, FlowMatching):
            raise TypeError(f"the teacher must be a flow-matching process, got {type(teacher).__name__}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = type(teacher)(copy.deepcopy(teacher.net).requires_grad_(True).train(), solver="euler",
                                     steps=1, rtol=teacher.rtol, atol=teacher.atol)

    def forward(self, x0: torch.Tensor, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        noise = randn_like(x0, generator)
        with torch.no_grad():
            aim = self.teacher.sample(noise, cond)
        err = (self.student.one_step(noise, cond, given=aim) - aim).square()
        if isinstance(self.student, FactorisedFlowMatching):
            first, second = self.student._parts(err)
            return first.mean() + second.mean()
        return err.mean()

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """One-step sampling with the student."""
        return self.student.sample(noise, cond)

    def sampler(self) -> FlowMatching:
        return self.student


def flow_matching(net: nn.Module, **args) -> FlowMatching:
    """The flow-matching process a backbone asks for: factorised when it declares two stages."""
    return (FactorisedFlowMatching if getattr(net, "FACTORISED", False) else FlowMatching)(net, **args)
