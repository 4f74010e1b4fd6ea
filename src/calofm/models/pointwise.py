"""The PointWise net of CaloClouds II (CaloClouds II transfer study, appendix B): a per-point denoiser for EDM.

Every point [x, y, z, E] of a shower is denoised independently given a context: six
ConcatSquashLinear layers 4 -> 128 -> 256 -> 512 -> 256 -> 128 -> 4 (table 8 of the CaloClouds II transfer study), each
h' = Linear(h) * sigmoid(Gate(ctx)) + Bias(ctx), with leaky ReLU between them. The context is the
noise embedding and an embedding of the condition vector (incident energy, angles, detector
one-hot and, for CaloClouds, the per-layer point counts), concatenated.

Call: ``net(x, noise_label, cond)`` with x (B, 4) points or (B, P, 4) point sets, noise_label (B,)
and cond (B, n_cond); returns a tensor of x's shape, so :class:`calofm.generative.EDM` and
consistency distillation wrap it unchanged.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from calofm.models.dit import NoiseEmbed
from calofm.models.init import reset_parameters

WIDTHS = (4, 128, 256, 512, 256, 128, 4)  # table 8 of the CaloClouds II transfer study


class ConcatSquashLinear(nn.Module):
    """Linear(h) gated by sigmoid(Gate(ctx)) plus a context bias (Grathwohl et al. 2019, FFJORD)."""

    def __init__(self, d_in: int, d_out: int, d_ctx: int):
        super().__init__()
        self.layer = nn.Linear(d_in, d_out)
        self.gate = nn.Linear(d_ctx, d_out)
        self.bias = nn.Linear(d_ctx, d_out, bias=False)

    def forward(self, h: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.layer(h) * torch.sigmoid(self.gate(ctx)) + self.bias(ctx)


class PointWise(nn.Module):
    """``net(x, noise_label, cond)``: the per-point denoiser (see the module docstring).

    ``ROLES``: the six layers are the blocks (top-k trains the output-side ones, the CaloClouds II transfer
    study's Top2); the first and last are the input and output; the noise and condition embeddings make the
    context.
    """

    REPRESENTATION = "points"
    ROLES: ClassVar[dict[str, str]] = {
        "input": "blocks.0",
        "noise": "time_embed",
        "condition": "cond_embed",
        "blocks": "blocks",
        "output": "blocks.5",
    }

    def __init__(self, n_cond: int, widths=WIDTHS, ctx_dim: int = 64, freq_dim: int = 64):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if widths[0] != widths[-1] or len(widths) < 2:
            raise ValueError(f"PointWise widths {widths} must start and end at the point size")
        self.time_embed = NoiseEmbed(ctx_dim // 2, freq_dim)
        self.cond_embed = nn.Sequential(nn.Linear(n_cond, ctx_dim // 2), nn.SiLU(),
                                        nn.Linear(ctx_dim // 2, ctx_dim // 2))
        self.blocks = nn.ModuleList(ConcatSquashLinear(a, b, 2 * (ctx_dim // 2)) for a, b in zip(widths, widths[1:]))
        self.init_weights(self)

    @staticmethod
    def geometry_args(readout, args: dict) -> dict:
        """The net sees points, not cells: its arguments are the same for every readout."""
        return dict(args)

    @staticmethod
    def transfer_args(base_args: dict, model_args: dict) -> dict:
        if model_args:
            raise ValueError(f"adapt.model: the PointWise net takes no geometry arguments, got {sorted(model_args)}")
        return {k: v for k, v in base_args.items() if k != "n_cond"}

    @torch.no_grad()
    def load_transferable(self, base: PointWise, x: torch.Tensor | None = None) -> list[str]:
        """Every weight transfers to another readout (the representation maps its layers to depth)."""
        self.load_state_dict(base.state_dict())
        return []

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """(Re-)initialise ``module``: Xavier weights and zero biases."""
        reset_parameters(module)

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        ctx = torch.cat([self.time_embed(noise_label), self.cond_embed(cond)], dim=-1)
        if x.ndim == 3:  # point sets: one context per set
            ctx = ctx[:, None]
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h, ctx)
            if i < len(self.blocks) - 1:
                h = F.leaky_relu(h)
        return h
