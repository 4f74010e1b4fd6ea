"""Generative processes: model-agnostic training losses and samplers around any backbone.

A backbone is any module called as ``net(x, noise_label, cond)`` that returns a tensor of ``x``'s
shape (``x``: ``(B, ...)``, ``noise_label``: ``(B,)`` = ln(sigma) / 4, ``cond``: ``(B, n_cond)``).
A :class:`Process` wraps it (as k-diffusion's Denoiser wraps an inner model): ``forward(x0, cond,
generator)`` is the training loss, ``after_step()`` runs after each optimiser step, ``sample(noise,
cond, steps)`` generates from caller-given standard normal noise and ``sampler()`` is what to save.

* :class:`EDM`: Karras et al. 2022 diffusion, Heun sampling (32 steps by default).
* :class:`Consistency`: a consistency model (Song et al. 2023), one-step sampling by default.
* :class:`ConsistencyDistillation`: distils a trained EDM into a Consistency; its ``sampler()``
  is the target model. It and :class:`FlowDistillation` share :class:`Distillation` (frozen teacher).
* :class:`FlowMatching`: conditional flow matching on straight paths, Euler / midpoint / RK4 /
  adaptive ODE sampling; :class:`FactorisedFlowMatching` chains two of them (CaloDREAM's energy
  and shape networks). For these the backbone's second argument is the time t in [0, 1].
  :class:`FlowDistillation` distils either into a one-step student.
* :class:`Likelihood`: maximum likelihood of a density backbone (a normalising flow such as
  ShowerFlow), inverse-transform sampling.
* :class:`AutoRegressive`: next-token cross-entropy of token-pair sequences, KV-cached sampling with
  temperature / top-k / top-p.

``PROCESSES`` maps a saved sampler's ``name`` to its class, so ``PROCESSES[name](net, **hparams)``
rebuilds it around a fresh backbone before its state dict is loaded.
"""

from calofm.generative.autoregressive import AutoRegressive
from calofm.generative.consistency import Consistency, ConsistencyDistillation
from calofm.generative.edm import EDM
from calofm.generative.flow import SOLVERS, FactorisedFlowMatching, FlowDistillation, FlowMatching, flow_matching
from calofm.generative.likelihood import Likelihood
from calofm.generative.process import Distillation, Process, karras_sigmas

PROCESSES = {"edm": EDM, "consistency": Consistency, "cfm": FlowMatching, "cfm_factorised": FactorisedFlowMatching,
             "likelihood": Likelihood, "autoregressive": AutoRegressive}

__all__ = ["EDM", "PROCESSES", "AutoRegressive", "SOLVERS", "Consistency", "ConsistencyDistillation",
           "Distillation", "FactorisedFlowMatching", "FlowDistillation", "FlowMatching", "Likelihood", "Process",
           "flow_matching", "karras_sigmas"]
