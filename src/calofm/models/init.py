"""Weight initialisation shared by the backbones (and used again by the re-initialising strategies)."""

from __future__ import annotations

from torch import nn


def reset_parameters(module: nn.Module, zero=frozenset()) -> None:
    """(Re-)initialise every layer in ``module``: Xavier-uniform weights and zero biases for linear
    and 3D-convolution layers (convolutions as the linear map over their patch), weights at zero
    for the layers whose ``id`` is in ``zero``; any other module with parameters of its own
    (attention in-projections, learnable frequencies) by its own reset."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv3d)):
            nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            if id(m) in zero:
                nn.init.zeros_(m.weight)
        elif isinstance(m, nn.MultiheadAttention):
            m._reset_parameters()
        elif hasattr(m, "reset_parameters"):
            m.reset_parameters()
