"""ShowerFlow (seed 000 section 4.2): a conditional normalising flow for the number of points in
each layer of a point-cloud shower given the incident particle.

A zuko neural spline flow (monotonic rational-quadratic splines of ``bins`` bins, ``transforms``
coupling blocks) over the L layer counts, each divided by the fixed ``NORM_POINTS`` = 800 of seed
000 instead of a per-event scaling, conditioned on the condition vector. Called as ``net(cond)``,
it returns the flow's distribution; :class:`calofm.generative.Likelihood` trains and samples it.
"""

from __future__ import annotations

import torch
import zuko
from torch import nn

from calofm.models.init import reset_parameters

NORM_POINTS = 800.0  # seed 000: one fixed normalisation of the per-layer point counts


class ShowerFlow(nn.Module):
    """p(N_1 / 800, ..., N_L / 800 | cond): seed 000 table 5's 2 blocks of 8-bin splines."""

    def __init__(self, n_cond: int, n_layers: int, transforms: int = 2, bins: int = 8,
                 hidden: tuple[int, ...] = (368, 368)):
        super().__init__()
        self.flow = zuko.flows.NSF(n_layers, n_cond, bins=bins, transforms=transforms,
                                   hidden_features=tuple(hidden), passes=2)  # passes=2: coupling

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """(Re-)initialise ``module``: Xavier weights and zero biases (identity-like splines)."""
        reset_parameters(module)

    def forward(self, cond: torch.Tensor):
        return self.flow(cond)

    @staticmethod
    def normalise(counts: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Counts (N, L) -> the flow's variables (counts + u) / 800 with u ~ U(0, 1) (dequantisation:
        a density cannot sit on whole numbers, and many late layers are empty)."""
        u = torch.rand(counts.shape, generator=generator, dtype=torch.float64)
        return ((counts.to(torch.float64) + u) / NORM_POINTS).float()

    @staticmethod
    def counts(values: torch.Tensor) -> torch.Tensor:
        """The flow's variables -> whole, non-negative counts (the inverse of ``normalise``)."""
        return torch.floor(values.to(torch.float64) * NORM_POINTS).clamp(min=0).long()
