"""Backbones: nn.Modules that know nothing of training.

Every backbone is called as ``net(x, noise_label, cond)`` and returns a tensor of x's
shape (for flow matching the label is the time t); generative processes (EDM, CFM, ...) wrap
it. A factorised backbone (``FACTORISED``, :class:`CaloDREAM`) instead holds two such networks,
``first`` and ``second``, split at ``split``. Each class declares the data ``REPRESENTATION`` it
takes (:mod:`calofm.data.preprocess`), ``geometry_args(readout, args)`` (its constructor arguments
for a readout) and its ``ROLES`` for the transfer strategies. ``BACKBONES`` maps config names to classes.

* ``dit``: CaloDiT-2 (EDM, consistency distillation).
* ``vit``: CaloDREAM++ energy network + universal ViT shape network (factorised CFM).
* ``showerflow`` and ``pointwise``: the point-cloud family (CaloClouds II): ShowerFlow, a density
  ``log_prob(x, cond)`` / ``from_noise(noise, cond)`` for the points per layer (likelihood), and
  the PointWise per-point denoiser (EDM), trained as two runs, the second naming the first.
* ``nexttoken``: the next-token transformer of the next-token foundation model over (spatial, energy) token
  pairs, with a fixed-routing mixture of experts (autoregressive); called as ``net(spatial, energy, cond)``.

A backbone that may be trained with one process only names it in ``TRAINED_WITH``; one that can
move to another readout has ``transfer_args`` and ``load_transferable``.
"""

from calofm.models.dit import DiT
from calofm.models.nexttoken import NextToken
from calofm.models.pointwise import PointWise
from calofm.models.showerflow import ShowerFlow
from calofm.models.vit import CaloDREAM

BACKBONES = {"dit": DiT, "vit": CaloDREAM, "showerflow": ShowerFlow, "pointwise": PointWise, "nexttoken": NextToken}

__all__ = ["BACKBONES", "CaloDREAM", "DiT", "NextToken", "PointWise", "ShowerFlow"]
