"""Next-token likelihood training and KV-cached sampling of token-pair sequences (the next-token foundation model).

The data are (B, T, 2) token pairs (spatial, energy) from :class:`calofm.data.tokens.Tokeniser`:
a start pair, the voxels, an end pair, then padding. The backbone is called as ``net(spatial,
energy, cond, cache=None, start=0, keep=None)`` and returns the logits of the next spatial and
energy tokens after every position (after the ``keep`` ones only, when given);
``net.cache(batch, length)`` preallocates its key/value cache and ``net.vocab`` is the size of both
vocabularies. Training minimises the summed cross-entropies of the next pair (a batch is cut to its
longest sequence, and the heads skip the padding). Sampling draws one pair per step from the cached
decoder, by inverse CDF of the uniforms Phi(noise): deterministic given the caller's noise, as every
process's ``sample`` is. ``temperature``, ``top_k`` and ``top_p`` shape the distributions; a
sequence stops at its first end token and is padded after it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from calofm.data.tokens import END, PAD, START, special_token
from calofm.generative.process import Process


def filtered(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Probabilities from ``logits`` (B, V) at ``temperature``, kept to the ``top_k`` most likely
    tokens (0: all) and the smallest set holding ``top_p`` of the probability."""
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = logits.softmax(-1)
    if top_p < 1:
        sorted_probs, order = probs.sort(-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # the most likely token always stays
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
    return probs / probs.sum(-1, keepdim=True)


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token whose CDF interval holds the uniform ``u`` (B,), for probabilities (B, V)."""
    cdf = probs.cumsum(-1)
    return torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).squeeze(-1).clamp(max=probs.shape[-1] - 1)


class AutoRegressive(Process):
    """Cross-entropy training and KV-cached sampling of a next-token backbone."""

    name = "autoregressive"

    def __init__(self, net: torch.nn.Module, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.set_sampling(temperature, top_k, top_p)
        self.special = {t: special_token(net.vocab, t) for t in (START, END, PAD)}  # the same in both streams

    def set_sampling(self, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> None:
        """How the next tokens are drawn (kept in ``hparams``, so a saved model keeps them)."""
        if not (temperature > 0 and top_k >= 0 and 0 < top_p <= 1):
            raise ValueError(f"sampling needs temperature > 0, top_k >= 0 and 0 < top_p <= 1, got "
                             f"{temperature}, {top_k}, {top_p}")
        self.hparams = {"temperature": float(temperature), "top_k": int(top_k), "top_p": float(top_p)}

    def forward(self, x0: torch.Tensor, cond: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = x0.long()
        pad = self.special[PAD]
        x0 = x0[:, :max(int((x0[..., 0] != pad).sum(1).max()), 2)]
        keep = x0[:, 1:, 0] != pad
        logits = self.net(x0[:, :-1, 0], x0[:, :-1, 1], cond, keep=keep)
        return sum(F.cross_entropy(lg, x0[:, 1:, i][keep]) for i, lg in enumerate(logits))

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, cond: torch.Tensor, steps: int | None = None,
               kv_cache: bool = True) -> torch.Tensor:
        """Token pairs (B, T, 2) for standard normal ``noise`` (B, T, 2): T - 1 draws after the start
        pair (``steps`` is not used). ``kv_cache=False`` recomputes the whole prefix at every step
        (for benchmarks; the same tokens up to floating-point summation order)."""
        b, length = noise.shape[:2]
        start, end, pad = (self.special[t] for t in (START, END, PAD))
        uniforms = 0.5 * (1 + torch.erf(noise / math.sqrt(2)))
        out = torch.full((b, length, 2), pad, device=noise.device)
        out[:, 0] = start
        cache = self.net.cache(b, length, noise.device) if kv_cache else None
        done = torch.zeros(b, dtype=torch.bool, device=noise.device)
        for t in range(length - 1):
            first = t if kv_cache else 0  # the cache holds the earlier positions; else recompute them
            tokens = out[:, first:t + 1]
            newest = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=noise.device)
            newest[:, -1] = True  # the heads run after the newest token only
            logits = self.net(tokens[..., 0], tokens[..., 1], cond, keep=newest,
                              **({"cache": cache, "start": t} if kv_cache else {}))
            pair = []
            for i, lg in enumerate(logits):  # the spatial stream decides the end; the energy one never draws it
                lg = lg.clone()
                lg[:, [start, pad] if i == 0 else [start, end, pad]] = -math.inf
                pair.append(draw(filtered(lg, **self.hparams), uniforms[:, t + 1, i]))
            ended = done | (pair[0] == end)
            token = torch.where((ended & ~done)[:, None], end, torch.stack(pair, -1))
            out[:, t + 1] = torch.where(done[:, None], pad, token)
            done = ended
            if bool(done.all()):
                break
        return out
