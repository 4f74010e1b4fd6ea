"""EDM diffusion (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models"), as used by CaloDiT-2: sigma(t) = t, preconditioned denoiser, log-normal training noise
levels, the rho = 7 noise schedule and the deterministic 2nd-order Heun sampler. Default
hyper-parameters are the paper's.
"""

from __future__ import annotations

import torch
from torch import nn

from calofm.generative.process import (
    Process,
    check_noise_range,
    karras_sigmas,
    noise_label,
    per_sample,
    randn_like,
)


class EDM(Process):
    """EDM around a backbone ``net(x, noise_label, cond)``.

    The denoiser is D(x, s) = c_skip(s) x + c_out(s) net(c_in(s) x, ln(s) / 4, cond) with
    c_skip = sd^2 / (s^2 + sd^2), c_out = s sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2)
    (sd = ``sigma_data``). Training draws ln s ~ N(p_mean, p_std^2) per sample and minimises the
    mean over all elements of lambda(s) (D(x0 + s n, s) - x0)^2 with lambda = (s^2 + sd^2) / (s sd)^2.
    """

    name = "edm"

    def __init__(self, net: nn.Module, sigma_data: float = 0.5, p_mean: float = -1.2,
                 p_std: float = 1.2, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float = 7.0, steps: int = 32) -> None:
        super().__init__()
        check_noise_range(sigma_min, sigma_max, sigma_data, rho)
        if p_std <= 0:
            raise ValueError(f"p_std must be positive, got {p_std}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.net = net
        self.sigma_data, self.p_mean, self.p_std = float(sigma_data), float(p_mean), float(p_std)
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.steps = int(steps)
        self.hparams = {"sigma_data": self.sigma_data, "p_mean": self.p_mean, "p_std": self.p_std,
                            "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "rho": self.rho,
                            "steps": self.steps}

    def denoise(self, x: torch.Tensor, sigma, cond: torch.Tensor) -> torch.Tensor:
        """D(x, sigma): the estimate of the clean data; ``sigma`` a number or a ``(B,)`` tensor (> 0)."""
        s = per_sample(sigma, x)
        sd = self.sigma_data
        norm = torch.sqrt(s * s + sd * sd)
        c_skip = sd * sd / (s * s + sd * sd)
        c_out = s * sd / norm
        c_in = 1 / norm
        return c_skip * x + c_out * self.net(c_in * x, noise_label(s), cond)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2, which makes the effective target unit-variance."""
        sd = self.sigma_data
        return (sigma * sigma + sd * sd) / (sigma * sd) ** 2

    def forward(self, x0: torch.Tensor, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        ln_sigma = torch.randn((x0.shape[0],), generator=generator, device=x0.device, dtype=x0.dtype)
        sigma = per_sample(torch.exp(ln_sigma * self.p_std + self.p_mean), x0)
        x = x0 + sigma * randn_like(x0, generator)
        err = self.denoise(x, sigma.reshape(-1), cond) - x0
        return (self.loss_weight(sigma) * err * err).mean()

    def sigmas(self, steps: int | None = None) -> torch.Tensor:
        """The sampling schedule: ``steps`` Karras noise levels from sigma_max to sigma_min, then 0
        (``steps + 1`` values, float32)."""
        steps = self.steps if steps is None else int(steps)
        sig = karras_sigmas(steps, self.sigma_min, self.sigma_max, self.rho)
        return torch.cat([sig, sig.new_zeros(1)])

    def heun_step(self, x: torch.Tensor, sigma_from, sigma_to, cond: torch.Tensor) -> torch.Tensor:
        """One step of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma from
        ``sigma_from`` (> 0) to ``sigma_to`` (numbers or ``(B,)`` tensors): Heun's 2nd-order method,
        falling back to Euler for samples whose ``sigma_to`` is 0."""
        s_from, s_to = per_sample(sigma_from, x), per_sample(sigma_to, x)
        final = s_to == 0
        if bool(final.all()):
            return self._step(x, s_from, s_to, cond, second_order=False)
        if not bool(final.any()):
            return self._step(x, s_from, s_to, cond, second_order=True)
        x_heun = self._step(x, s_from, torch.where(final, torch.ones_like(s_to), s_to), cond, True)
        return torch.where(final, self._step(x, s_from, s_to, cond, second_order=False), x_heun)

    def _step(self, x: torch.Tensor, s_from: torch.Tensor, s_to: torch.Tensor, cond: torch.Tensor,
              second_order: bool) -> torch.Tensor:
        # s_from, s_to: (B, 1, ...) as per_sample returns them; s_to > 0 when second_order
        d = (x - self.denoise(x, s_from.reshape(-1), cond)) / s_from
        x_next = x + (s_to - s_from) * d
        if not second_order:
            return x_next
        d_next = (x_next - self.denoise(x_next, s_to.reshape(-1), cond)) / s_to
        return x + (s_to - s_from) * (d + d_next) / 2

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Deterministic Heun sampling (Karras et al. 2022, algorithm 1 without churn) from
        x = noise * sigma_max over ``steps`` (default ``self.steps``) noise levels: 2 * steps - 1
        backbone calls, the last step to sigma = 0 being an Euler step. The loop has no
        data-dependent branches, so it traces for export."""
        sig = self.sigmas(steps).to(device=noise.device, dtype=noise.dtype)
        n = len(sig) - 1
        x = noise * sig[0]
        for i in range(n):
            s_from, s_to = per_sample(sig[i], x), per_sample(sig[i + 1], x)
            x = self._step(x, s_from, s_to, cond, second_order=i < n - 1)
        return x
