"""Maximum-likelihood training of a conditional density backbone, such as a normalising flow.

The backbone is called as ``net(cond)`` and returns a distribution over the data with ``log_prob``
and a ``transform`` from data to a standard normal base (zuko's flows do). Training minimises the
mean negative log-likelihood; sampling maps caller-given standard normal noise through the inverse
transform, so it is deterministic given the noise, as every process's ``sample`` is. ShowerFlow
(seed 000 section 4.2: the number of points per layer given the incident energy) is trained so.
"""

from __future__ import annotations

import torch

from calofm.generative.process import Process


class Likelihood(Process):
    """Negative log-likelihood training and inverse-transform sampling of ``net(cond)``."""

    name = "likelihood"

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x0: torch.Tensor, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return -self.net(cond).log_prob(x0).mean()

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """Data for standard normal ``noise`` of the data's shape (``steps`` is not used)."""
        return self.net(cond).transform.inv(noise)
