"""Consistency models (Song et al. 2023, "Consistency Models") and consistency distillation of an
EDM teacher, as CaloDiT-2 uses them: N = 32 Karras discretisation points, one teacher Heun step,
squared-error distance with lambda = 1, student initialised from the teacher, target updated as an
EMA of the student with decay 0.95, one-step sampling.

For generation only the target is needed; it is a plain :class:`Consistency` whose only weights are
its backbone's, so ``Consistency(net, **hparams)`` (``hparams`` saved from ``sampler().hparams``),
or ``PROCESSES["consistency"](net, **hparams)``, rebuilds it before ``load_state_dict``.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from calofm.generative.edm import EDM
from calofm.generative.process import (
    Distillation,
    Process,
    check_noise_range,
    karras_sigmas,
    noise_label,
    per_sample,
    randn_like,
)


class Consistency(Process):
    """A consistency function around a backbone ``net(x, noise_label, cond)``.

    f(x, s) = c_skip(s) x + c_out(s) net(c_in(s) x, ln(s) / 4, cond) with the boundary-respecting
    c_skip = sd^2 / ((s - s_min)^2 + sd^2), c_out = (s - s_min) sd / sqrt(s^2 + sd^2) and the EDM
    c_in = 1 / sqrt(s^2 + sd^2), so f(x, s_min) = x exactly. ``denoise`` evaluates f.

    This class only generates; it is trained by :class:`ConsistencyDistillation`, whose ``forward``
    is the loss (calling this class's ``forward`` raises ``NotImplementedError``).
    """

    name = "consistency"

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.002,
                 sigma_max: float = 80.0, rho: float = 7.0, steps: int = 1) -> None:
        super().__init__()
        check_noise_range(sigma_min, sigma_max, sigma_data, rho)
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.net = net
        self.sigma_data = float(sigma_data)
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.steps = int(steps)
        self.hparams = {"sigma_data": self.sigma_data, "sigma_min": self.sigma_min,
                            "sigma_max": self.sigma_max, "rho": self.rho, "steps": self.steps}

    @classmethod
    def from_edm(cls, edm: EDM, net: nn.Module | None = None, steps: int = 1) -> Consistency:
        """A consistency model with ``edm``'s noise range and sigma_data around ``net`` (default: a
        deep copy of ``edm.net``)."""
        net = copy.deepcopy(edm.net) if net is None else net
        return cls(net, sigma_data=edm.sigma_data, sigma_min=edm.sigma_min, sigma_max=edm.sigma_max,
                   rho=edm.rho, steps=steps)

    def denoise(self, x: torch.Tensor, sigma, cond: torch.Tensor) -> torch.Tensor:
        """f(x, sigma), ``sigma`` a number or a ``(B,)`` tensor in [sigma_min, sigma_max]."""
        s = per_sample(sigma, x)
        sd = self.sigma_data
        shifted = s - self.sigma_min
        norm = torch.sqrt(s * s + sd * sd)
        c_skip = sd * sd / (shifted * shifted + sd * sd)
        c_out = shifted * sd / norm
        c_in = 1 / norm
        return c_skip * x + c_out * self.net(c_in * x, noise_label(s), cond)

    def sample_sigmas(self, steps: int | None = None) -> torch.Tensor:
        """The noise levels multistep sampling evaluates f at: the first ``steps`` of the
        ``steps + 1``-point Karras schedule from sigma_max to sigma_min (so [sigma_max] for 1 step)."""
        steps = self.steps if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        return karras_sigmas(steps + 1, self.sigma_min, self.sigma_max, self.rho)[:steps]

    def one_step(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """f(noise * sigma_max, sigma_max): one-step generation, free of data-dependent control flow
        (exported graphs call it directly)."""
        return self.denoise(noise * self.sigma_max, self.sigma_max, cond)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """x = f(noise * sigma_max, sigma_max); with ``steps`` > 1 (Song et al. 2023, algorithm 1)
        each further level s re-noises x + sqrt(s^2 - sigma_min^2) z with fresh z from ``generator``
        and applies f(., s) again. One step (the default) is deterministic given ``noise``."""
        x = self.one_step(noise, cond)  # the schedule starts at sigma_max
        for s in self.sample_sigmas(steps)[1:].tolist():
            x = x + math.sqrt(s * s - self.sigma_min ** 2) * randn_like(x, generator)
            x = self.denoise(x, s, cond)
        return x


class ConsistencyDistillation(Distillation):
    """Consistency distillation of a trained :class:`EDM` teacher (Song et al. 2023, algorithm 2).

    The student and the target are :class:`Consistency` models around deep copies of the teacher's
    backbone (the student starts from the teacher). The teacher and the target are frozen
    (``requires_grad`` False); the teacher stays in eval mode. ``forward`` draws per sample
    n ~ U{0, ..., N-2} on the N-point Karras discretisation sigma_min = s_0 < ... < s_{N-1} =
    sigma_max, x_{n+1} = x0 + s_{n+1} z, takes one teacher Heun step to x_hat_n at s_n without
    gradients and returns the mean over elements of (f_student(x_{n+1}, s_{n+1}) -
    f_target(x_hat_n, s_n))^2 (lambda = 1). ``after_step`` moves the target to
    decay * target + (1 - decay) * student. ``sampler()`` is the target.
    """

    name = "consistency_distillation"

    def __init__(self, teacher: EDM, n_steps: int = 32, target_decay: float = 0.95) -> None:
        super().__init__()
        if not isinstance(teacher, EDM):
            raise TypeError(f"the teacher must be an EDM process, got {type(teacher).__name__}")
        if n_steps < 2:
            raise ValueError(f"n_steps must be at least 2, got {n_steps}")
        if not 0 <= target_decay <= 1:
            raise ValueError(f"target_decay must be in [0, 1], got {target_decay}")
        self.student = Consistency.from_edm(teacher)
        self.target = Consistency.from_edm(teacher)
        self.teacher = teacher
        self.student.net.requires_grad_(True)
        self.teacher.requires_grad_(False)
        self.target.requires_grad_(False)
        self.teacher.eval()
        self.n_steps, self.target_decay = int(n_steps), float(target_decay)
        self.hparams = {"n_steps": self.n_steps, "target_decay": self.target_decay}
        self.register_buffer("discretisation", karras_sigmas(
            self.n_steps, teacher.sigma_min, teacher.sigma_max, teacher.rho).flip(0), persistent=False)

    def students(self) -> list[Consistency]:
        """Student and target both start from a pre-trained consistency model."""
        return [self.student, self.target]

    def forward(self, x0: torch.Tensor, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        disc = self.discretisation.to(dtype=x0.dtype)
        n = torch.randint(0, self.n_steps - 1, (x0.shape[0],), generator=generator, device=x0.device)
        s_next, s_cur = disc[n + 1], disc[n]
        x_next = x0 + per_sample(s_next, x0) * randn_like(x0, generator)
        with torch.no_grad():
            x_hat = self.teacher.heun_step(x_next, s_next, s_cur, cond)
            aim = self.target.denoise(x_hat, s_cur, cond)
        err = self.student.denoise(x_next, s_next, cond) - aim
        return (err * err).mean()

    @torch.no_grad()
    def after_step(self) -> None:
        """target <- decay * target + (1 - decay) * student for parameters; buffers are copied."""
        for tgt, src in zip(self.target.parameters(), self.student.parameters()):
            tgt.lerp_(src, 1 - self.target_decay)
        for tgt, src in zip(self.target.buffers(), self.student.buffers()):
            tgt.copy_(src)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Sampling with the target (see :meth:`Consistency.sample`)."""
        return self.target.sample(noise, cond, steps, generator)

    def sampler(self) -> Consistency:
        return self.target
