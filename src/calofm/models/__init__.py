"""Backbones: nn.Modules that know nothing of training.

Every backbone is called as ``net(x, noise_label, cond)`` and returns a tensor of x's
shape; generative processes (EDM, ...) wrap it. ``BACKBONES`` maps config names to classes.
"""

from calofm.models.dit import DiT

BACKBONES = {"dit": DiT}

__all__ = ["BACKBONES", "DiT"]
