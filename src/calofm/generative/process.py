"""The base of every generative process and the helpers the processes share.

A process wraps a backbone ``net(x, noise_label, cond) -> tensor of x's shape`` (``x``: ``(B, ...)``,
``noise_label``: ``(B,)``, ``cond``: ``(B, n_cond)``) and knows how to train it (``forward`` returns
the loss) and how to generate with it (``sample``). The training loop only ever sees this interface.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def per_sample(sigma, x: torch.Tensor) -> torch.Tensor:
    """``sigma`` (a number, a 0-d tensor or a ``(B,)`` tensor) as a ``(B, 1, 1, ...)`` tensor that
    broadcasts over ``x``'s trailing shape, on ``x``'s device and in its dtype."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma has shape {tuple(sigma.shape)}, wanted () or ({x.shape[0]},)")
    return sigma.reshape(-1, *([1] * (x.ndim - 1)))


def noise_label(sigma: torch.Tensor) -> torch.Tensor:
    """The conditioning value the backbone gets for noise level ``sigma``: c_noise = ln(sigma) / 4
    (EDM, Karras et al. 2022, table 1), shape ``(B,)``."""
    return torch.log(sigma.reshape(sigma.shape[0])) / 4


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise with ``x``'s shape, device and dtype, drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """``steps`` noise levels from ``sigma_max`` down to ``sigma_min`` evenly spaced in
    sigma^(1/rho) (Karras et al. 2022, eq. 5), computed in float64 and returned as float32."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps == 1:
        return torch.tensor([sigma_max], dtype=torch.float32)
    ramp = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sig = (hi + ramp * (lo - hi)) ** rho
    sig[0], sig[-1] = sigma_max, sigma_min  # exact endpoints, free of rounding
    return sig.to(torch.float32)


class Process(nn.Module):
    """A generative process around a backbone.

    Contract used by the shared training loop and by generation:

    * ``forward(x0, cond, generator=None)`` returns the scalar training loss for a batch of data
      ``x0`` (``(B, ...)``) with conditions ``cond`` (``(B, n_cond)``). All its randomness comes from
      ``generator`` (on ``x0``'s device; ``None`` uses torch's global generator), so a seeded run
      is reproducible step by step. The loss being ``forward`` lets DistributedDataParallel wrap it.
    * ``after_step()`` is called after each optimiser step (for example to update an EMA target).
    * ``sample(noise, cond, steps=None)`` maps standard normal ``noise`` of the data's shape to data,
      without gradients; the caller owns the noise, so two implementations can be compared exactly.
    * ``sampler()`` is the process to save for generation (for distillation, the distilled model).

    ``name`` is the key of the sampler in ``calofm.generative.PROCESSES`` and ``hparams`` its
    constructor arguments other than the backbone, so ``PROCESSES[p.name](net, **p.hparams)``
    rebuilds it for loading a state dict.
    """

    name = "process"

    def __init__(self) -> None:
        super().__init__()
        self.hparams: dict = {}

    def forward(self, x0: torch.Tensor, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no training loss")

    def after_step(self) -> None:
        """Hook run by the training loop after every optimiser step; nothing by default."""

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} cannot sample")

    def sampler(self) -> Process:
        """The process to save for generation."""
        return self


class Distillation(Process):
    """What the distillations share: a frozen ``teacher`` process that stays in eval mode (a fixed
    ODE solver: no dropout), and the ``students()`` that a pre-trained distilled run initialises
    when the student is re-distilled from an adapted teacher."""

    teacher: Process
    student: Process

    def train(self, mode: bool = True) -> Distillation:
        super().train(mode)
        self.teacher.eval()
        return self

    def students(self) -> list[Process]:
        """The processes a pre-trained student's weights go into."""
        return [self.student]


def _is_finite_positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def check_noise_range(sigma_min: float, sigma_max: float, sigma_data: float, rho: float) -> None:
    """Raise ``ValueError`` unless 0 < sigma_min < sigma_max, sigma_data > 0 and rho > 0."""
    if not all(_is_finite_positive(v) for v in (sigma_min, sigma_max, sigma_data, rho)):
        raise ValueError("sigma_min, sigma_max, sigma_data and rho must be finite and positive")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be below sigma_max ({sigma_max})")
