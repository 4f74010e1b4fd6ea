"""Maximum-likelihood training of a conditional density backbone, such as a normalising flow.

The backbone has ``log_prob(x, cond)`` (per sample) and ``from_noise(noise, cond)`` (the sample
that standard normal noise of the data's shape maps to, e.g. a flow's inverse transform). Training
minimises the mean negative log-likelihood; sampling is deterministic given the caller's noise, as
every process's ``sample`` is. ShowerFlow
(CaloClouds II transfer study, section 4.2: the number of points per layer given the incident energy) is trained so.
"""

from __future__ import annotations

import torch

from calofm.generative.process import Process


class Likelihood(Process):
    """Negative log-likelihood training and inverse-transform sampling of a density backbone."""

    name = "likelihood"

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x0: torch.Tensor, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return -self.net.log_prob(x0, cond).mean()

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Data for standard normal ``noise`` of the data's shape (``steps`` is not used)."""
        return self.net.from_noise(noise, cond)
