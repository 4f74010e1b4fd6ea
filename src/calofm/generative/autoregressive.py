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
               decode: str = "cached") -> torch.Tensor:
        """Token pairs (B, T, 2) for standard normal ``noise`` (B, T, 2): T - 1 draws after the start
        pair (``steps`` is not used). ``decode`` (the same tokens up to floating-point summation order):
        ``cached`` reads the earlier positions from the KV cache; ``uncached`` recomputes the whole
        prefix at every step (for benchmarks); ``static`` runs every step after the first with fixed
        shapes over the whole preallocated cache, without a device sync, and asks whether every
        sequence has ended every 16 steps only (ended ones draw padding); ``graph`` captures that
        step once per call as a CUDA graph and replays it for every token (CUDA only)."""
        if decode not in DECODES:
            raise ValueError(f"decode {decode!r}: one of {', '.join(DECODES)}")
        if decode == "graph" and noise.device.type != "cuda":
            raise ValueError(f"decode 'graph' captures a CUDA graph: the noise is on {noise.device}")
        b, length = noise.shape[:2]
        end, pad = self.special[END], self.special[PAD]
        uniforms = 0.5 * (1 + torch.erf(noise / math.sqrt(2)))
        out = torch.full((b, length, 2), pad, device=noise.device)
        out[:, 0] = self.special[START]
        cache = self.net.cache(b, length, noise.device) if decode != "uncached" else None
        banned = self._banned(noise.device)
        step = None
        check = 1 if decode in ("cached", "uncached") else 16  # steps between host syncs on "all ended"
        done = torch.zeros(b, dtype=torch.bool, device=noise.device)
        for t in range(length - 1):
            if t == 0 or decode in ("cached", "uncached"):
                first = 0 if decode == "uncached" else t  # the cache holds the earlier positions
                tokens = out[:, first:t + 1]
                newest = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=noise.device)
                newest[:, -1] = True  # the heads run after the newest token only
                logits = self.net(tokens[..., 0], tokens[..., 1], cond, keep=newest,
                                  **({} if cache is None else {"cache": cache, "start": t}))
                pair = self._draw(logits, uniforms[:, t + 1], banned)
            else:
                if step is None:
                    step = self._static_step(cond, cache, banned, graph=decode == "graph",
                                             example=(out[:, 1:2], uniforms[:, 2]))
                pair = step(out[:, t:t + 1], t, uniforms[:, t + 1])
            ended = done | (pair[:, 0] == end)
            token = torch.where((ended & ~done)[:, None], end, pair)
            out[:, t + 1] = torch.where(done[:, None], pad, token)
            done = ended
            if t % check == check - 1 and bool(done.all()):
                break
        return out

    def _banned(self, device) -> torch.Tensor:
        """(2, V) the tokens each stream never draws: the spatial stream decides the end, the energy one never."""
        start, end, pad = (self.special[t] for t in (START, END, PAD))
        banned = torch.zeros((2, self.net.vocab), dtype=torch.bool, device=device)
        banned[0, [start, pad]] = True
        banned[1, [start, end, pad]] = True
        return banned

    def _draw(self, logits, u: torch.Tensor, banned: torch.Tensor) -> torch.Tensor:
        """(B, 2) the next pair from the (spatial, energy) logits (B, V) and uniforms ``u`` (B, 2)."""
        return torch.stack([draw(filtered(lg.masked_fill(banned[i], -math.inf), **self.hparams), u[:, i])
                            for i, lg in enumerate(logits)], -1)

    def _static_step(self, cond, cache, banned, graph: bool, example):
        """``step(tokens (B, 1, 2), t, u (B, 2)) -> pair (B, 2)``: a decoding step of fixed shapes
        (``NextToken.forward`` with a tensor start and the routes of ``cond``), as a CUDA graph when
        ``graph``: captured after a warm-up on ``example`` (the inputs of step t = 1, which the
        warm-up computes exactly as the first replay will, so its cache writes change nothing)."""
        routes = self.net.routes(cond)
        tokens = example[0].clone()
        position = torch.ones((), dtype=torch.long, device=cond.device)
        u = example[1].clone()

        def run() -> torch.Tensor:
            logits = self.net(tokens[..., 0], tokens[..., 1], cond, cache=cache, start=position, routes=routes)
            return self._draw([lg[:, 0] for lg in logits], u, banned)

        if graph:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                run()
            torch.cuda.current_stream().wait_stream(side)
            cuda_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(cuda_graph):
                pair = run()

        def step(new_tokens: torch.Tensor, t: int, new_u: torch.Tensor) -> torch.Tensor:
            tokens.copy_(new_tokens)
            position.fill_(t)
            u.copy_(new_u)
            if not graph:
                return run()
            cuda_graph.replay()
            return pair.clone()

        return step


DECODES = ("cached", "uncached", "static", "graph")
