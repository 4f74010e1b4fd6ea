"""Learning-rate and EMA schedules (CaloDiT-2, section 3.2.3)."""

from __future__ import annotations

import math

import torch


def wsd(step: int, total: int, warmup: float = 0.1, decay: float = 0.4) -> float:
    """Warmup-stable-decay factor of the peak learning rate at ``step`` (0-based) of ``total``.

    Linear warm-up over the first ``warmup`` fraction, constant, then a square-root decay to 0
    over the last ``decay`` fraction.
    """
    n_warm, n_decay = round(warmup * total), round(decay * total)
    if step < n_warm:
        return (step + 1) / n_warm
    start = total - n_decay
    if step < start:
        return 1.0
    return 1.0 - math.sqrt((step - start + 1) / (n_decay + 1))


def ema_decay(step: int, cap: float) -> float:
    """EMA decay that rises from 0 (step 0: the EMA is the weights) towards ``cap``."""
    return min(cap, step / (step + 10))


@torch.no_grad()
def ema_update(average: dict[str, torch.Tensor], params: dict[str, torch.Tensor], decay: float) -> None:
    """average <- decay * average + (1 - decay) * params, in place."""
    for name, p in params.items():
        average[name].lerp_(p.detach().to(average[name].dtype), 1.0 - decay)
