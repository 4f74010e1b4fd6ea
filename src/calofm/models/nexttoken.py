"""The next-token backbone of the next-token foundation model (section 3): a causal transformer over
(spatial, energy) token pairs with a fixed-routing mixture of experts.

Two streams, one per vocabulary, each with its own embedding; the condition vector (incident
energy and angles, embedded linearly) is the first token of both. A cross-attention block lets the
energy stream (queries) read the spatial stream (keys and values); standard causal self-attention
blocks follow. Positions enter only through partial rotary embeddings (the first half of each
head's dimensions, base 1000) and a per-token depth bias (the voxel's layer / L). Each block's MLP
is one expert per (particle, material) class, chosen by the class of the sequence: every shower
runs exactly one expert per block, so the active parameters stay constant as experts are added.
Each particle has its own pair of output heads (logits of the next spatial and the next energy
token; the next-token foundation model's particle-wise vocabularies), chosen the same way through ``head_of_class``.
Full fp32 (the next-token foundation model saw bf16 artefacts in the multiplicity).

The model grows additively (``add_class``: a new class's expert copied from an existing one, and
optionally a new particle's heads); the adaptation strategies of :mod:`calofm.adapt` decide what
trains. Generation appends one pair at a time: ``forward(..., cache=KVCache, start=t)`` computes
only the new positions and reads the earlier keys and values from a cache preallocated to the
whole sequence (no reallocation while sampling); with a tensor ``start`` the step has fixed shapes
and no device sync, so a CUDA graph can capture it once and replay it for every token.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from calofm.data.preprocess import N_KINEMATIC
from calofm.data.tokens import N_SPECIAL
from calofm.models.init import reset_parameters


def rotary(x: torch.Tensor, positions: torch.Tensor, fraction: float = 0.5, base: float = 1000.0) -> torch.Tensor:
    """Partial RoPE: rotate the first ``fraction`` of the last dimension of ``x`` (B, H, T, D) by the
    angles of ``positions`` (T,), in pairs (i, i + d/2) of the rotated part; the rest passes."""
    d = int(x.shape[-1] * fraction) // 2 * 2
    if d == 0:
        return x
    freqs = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = positions.to(torch.float32)[:, None] * freqs[None]            # (T, d/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    a, b, rest = x[..., :d // 2], x[..., d // 2:d], x[..., d:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos, rest], dim=-1)


@dataclass
class KVCache:
    """Keys and values of every attention layer, preallocated to ``length`` positions."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @classmethod
    def empty(cls, layers: int, batch: int, heads: int, length: int, head_dim: int, device=None,
              dtype=torch.float32) -> KVCache:
        shape = (batch, heads, length, head_dim)
        return cls([torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)],
                   [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)])


class Attention(nn.Module):
    """Causal multi-head attention, queries from ``x`` and keys/values from ``context`` (the same
    stream for self-attention), partial RoPE on queries and keys."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor, start: int | torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``x`` and ``context`` (B, T, D) at stream positions ``start``.. . A Python int ``start``
        attends over the cache up to the new positions (no device sync); a 0-dim tensor writes the
        cache at ``start`` and attends over all of it, masked: fixed shapes, as a CUDA graph needs."""
        positions = start + torch.arange(x.shape[1], device=x.device)
        q = rotary(self._split(self.q(x)), positions)
        k, v = rotary(self._split(self.k(context)), positions), self._split(self.v(context))
        if isinstance(start, torch.Tensor):
            cache[0].index_copy_(2, positions, k.to(cache[0].dtype))
            cache[1].index_copy_(2, positions, v.to(cache[1].dtype))
            k, v = cache
            mask = torch.arange(k.shape[2], device=x.device) <= positions[:, None]
        else:
            if cache is not None:  # write the new positions, attend over everything up to them
                cache[0][:, :, start:start + k.shape[2]] = k
                cache[1][:, :, start:start + v.shape[2]] = v
                k, v = cache[0][:, :, :start + k.shape[2]], cache[1][:, :, :start + v.shape[2]]
            t, s = q.shape[2], k.shape[2]
            mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(diagonal=s - t)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(x.shape))


def routed(modules: nn.ModuleList, x: torch.Tensor, index: torch.Tensor, used: list[int] | None = None) -> torch.Tensor:
    """Each row of ``x`` (B, ..., D) through its own module ``modules[index[b]]`` (fixed routing;
    one batch call per module used). ``used``: the indices present, when the caller knows them: no
    device sync, and each used module runs on every row, selected after (fixed shapes)."""
    if used is not None:
        out = modules[used[0]](x)
        for i in used[1:]:
            out = torch.where((index == i).view(-1, *[1] * (x.dim() - 1)), modules[i](x), out)
        return out
    used = torch.unique(index).tolist()
    if len(used) == 1:
        return modules[used[0]](x)
    parts = {i: modules[i](x[index == i]) for i in used}
    first = next(iter(parts.values()))  # under autocast the modules' dtype, not x's
    out = first.new_empty((*x.shape[:-1], first.shape[-1]))
    for i, part in parts.items():
        out[index == i] = part
    return out


class Experts(nn.Module):
    """One MLP per class; ``forward(x, expert)`` runs each sequence (B, T, D) through its own."""

    def __init__(self, dim: int, hidden: int, n_experts: int):
        super().__init__()
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
                                     for _ in range(n_experts))

    def forward(self, x: torch.Tensor, expert: torch.Tensor, used: list[int] | None = None) -> torch.Tensor:
        return routed(self.experts, x, expert, used)


class Block(nn.Module):
    """Pre-norm attention (self, or cross from the spatial stream) and the class's expert MLP."""

    def __init__(self, dim: int, heads: int, hidden: int, n_experts: int, cross: bool = False):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, heads)
        self.mlp = Experts(dim, hidden, n_experts)

    def forward(self, x, expert, start, context=None, cache=None, used=None):
        h = self.norm1(x)
        x = x + self.attn(h, h if context is None else self.norm_context(context), start, cache)
        return x + self.mlp(self.norm2(x), expert, used)


def depths_of(layer_sizes) -> torch.Tensor:
    """Each spatial token's depth: its voxel's layer / L, 0 for the special tokens."""
    layers = torch.repeat_interleave(torch.arange(len(layer_sizes)), torch.as_tensor(layer_sizes))
    return torch.cat([layers / len(layer_sizes), torch.zeros(N_SPECIAL)])


class NextToken(nn.Module):
    """``net(spatial, energy, cond)`` -> (spatial logits, energy logits), (B, T, V) each, for token
    pairs (B, T) (position 0 is the start pair) of a readout with ``layer_sizes`` voxels per layer;
    both vocabularies have one token per voxel (the next-token foundation model's equal sizes) plus the special ones. A
    sequence's class is the index of the largest of its condition's entries from ``expert_column``
    on (the detector one-hot): it runs the class's expert and its particle's heads
    (``head_of_class``, default one particle)."""

    REPRESENTATION = "tokens"
    TRAINED_WITH = "autoregressive"
    ROUTED = True  # one expert per pre-training detector (the run's classes)
    ROLES = {"input": ["spatial_embed", "energy_embed", "depth_bias"], "noise": [], "condition": "cond_embed",
             "blocks": "blocks", "output": ["norm", "spatial_heads", "energy_heads"]}

    def __init__(self, n_cond: int, layer_sizes: list[int], n_experts: int = 1, head_of_class: list[int] | None = None,
                 expert_column: int = N_KINEMATIC, dim: int = 256, depth: int = 6, heads: int = 8, mlp_dim: int = 1024):
        super().__init__()
        head_of_class = list(head_of_class) if head_of_class is not None else [0] * n_experts
        if len(head_of_class) != n_experts or sorted(set(head_of_class)) != list(range(max(head_of_class) + 1)):
            raise ValueError(f"head_of_class {head_of_class}: one head index per expert ({n_experts}), "
                             "covering 0..P-1")
        self.heads, self.expert_column = heads, expert_column
        self.register_buffer("depths", depths_of(layer_sizes), persistent=False)
        self.register_buffer("head_of_class", torch.tensor(head_of_class), persistent=False)
        vocab = len(self.depths)
        self.spatial_embed, self.energy_embed = nn.Embedding(vocab, dim), nn.Embedding(vocab, dim)
        self.cond_embed = nn.Linear(n_cond, dim)
        self.depth_bias = nn.Linear(1, dim, bias=False)
        self.cross = Block(dim, heads, mlp_dim, n_experts, cross=True)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim, n_experts) for _ in range(depth - 1))
        self.norm = nn.LayerNorm(dim)
        n_heads = max(head_of_class) + 1
        self.spatial_heads = nn.ModuleList(nn.Linear(dim, vocab) for _ in range(n_heads))
        self.energy_heads = nn.ModuleList(nn.Linear(dim, vocab) for _ in range(n_heads))
        self.init_weights(self)

    @staticmethod
    def geometry_args(readout, args: dict) -> dict:
        """Constructor arguments for ``readout``: its voxels per layer."""
        return {**args, "layer_sizes": [int(a * r) for a, r in readout.layer_shapes()]}

    @property
    def vocab(self) -> int:
        return len(self.depths)

    @property
    def n_experts(self) -> int:
        return len(self.cross.mlp.experts)

    def _mixtures(self) -> list[Experts]:
        return [block.mlp for block in (self.cross, *self.blocks)]

    def experts_of(self, index: int) -> list[nn.Module]:
        """The expert MLPs class ``index`` runs, one per block."""
        return [mixture.experts[index] for mixture in self._mixtures()]

    def architecture(self) -> dict:
        """The constructor arguments that change as the model grows (``add_class``)."""
        return {"n_experts": self.n_experts, "head_of_class": self.head_of_class.tolist()}

    @torch.no_grad()
    def add_class(self, source: int, new_particle: bool = False) -> int:
        """A new class whose experts start as copies of class ``source``'s, run with ``source``'s
        particle heads or, with ``new_particle``, with a new particle's (copies of them); the
        existing classes compute exactly as before. Returns the new class's index."""
        if not 0 <= source < self.n_experts:
            raise ValueError(f"no class {source} to start from (the model has {self.n_experts})")
        for mixture in self._mixtures():
            mixture.experts.append(copy.deepcopy(mixture.experts[source]))
        head = int(self.head_of_class[source])
        if new_particle:
            for heads in (self.spatial_heads, self.energy_heads):
                heads.append(copy.deepcopy(heads[head]))
            head = len(self.spatial_heads) - 1
        self.head_of_class = torch.cat([self.head_of_class, self.head_of_class.new_tensor([head])])
        return self.n_experts - 1

    def classes(self, cond: torch.Tensor) -> torch.Tensor:
        """(B,) the class of each condition row."""
        return cond[:, self.expert_column:].argmax(1)

    def routes(self, cond: torch.Tensor) -> tuple[list[int], list[int]]:
        """The classes present in ``cond`` and their particles, as host lists (one device sync)."""
        classes = torch.unique(self.classes(cond)).tolist()
        return classes, sorted(set(self.head_of_class[classes].tolist()))

    def particles(self, cond: torch.Tensor) -> torch.Tensor:
        """(B,) the particle (head index) of each condition row."""
        return self.head_of_class[self.classes(cond)]

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        reset_parameters(module)
        for m in module.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=1 / math.sqrt(m.weight.shape[1]))

    def active_parameters(self) -> int:
        """Parameters one shower runs through: everything but the other classes' experts and the
        other particles' heads."""
        idle = [e for index in range(1, self.n_experts) for e in self.experts_of(index)]
        idle += [*self.spatial_heads[1:], *self.energy_heads[1:]]
        return sum(p.numel() for p in self.parameters()) - sum(p.numel() for m in idle for p in m.parameters())

    def cache(self, batch: int, length: int, device=None) -> KVCache:
        """An empty cache for ``batch`` sequences of ``length`` token pairs (and the condition)."""
        head_dim = self.spatial_embed.weight.shape[1] // self.heads
        return KVCache.empty(1 + len(self.blocks), batch, self.heads, length + 1, head_dim, device)

    def forward(self, spatial: torch.Tensor, energy: torch.Tensor, cond: torch.Tensor,
                cache: KVCache | None = None, start: int | torch.Tensor = 0, keep: torch.Tensor | None = None,
                routes: tuple[list[int], list[int]] | None = None):
        """Logits after every given position; with ``cache``, the tokens are positions ``start``..
        of sequences whose earlier positions (and the condition, when ``start`` > 0) are cached.
        ``keep`` (B, T) bool: only the logits after those positions, (N, V) each (training skips
        the heads, which dominate the cost, at padding). A 0-dim tensor ``start`` (> 0) with
        ``routes`` (:meth:`routes` of ``cond``) runs a decoding step of fixed shapes without a
        device sync, which a CUDA graph can capture (see ``Attention.forward``)."""
        expert = self.classes(cond)
        static = isinstance(start, torch.Tensor)
        prefix = not static and start == 0
        if prefix and int(expert.max()) >= self.n_experts:
            raise ValueError(f"a condition of class {int(expert.max())}: the model has experts for "
                             f"{self.n_experts} classes")
        bias = self.depth_bias(self.depths[spatial][..., None])
        s, e = self.spatial_embed(spatial) + bias, self.energy_embed(energy) + bias
        if prefix:  # the condition token leads both streams
            c = self.cond_embed(cond)[:, None]
            s, e = torch.cat([c, s], dim=1), torch.cat([c, e], dim=1)
        first = start + 1 if static else start + (start > 0)  # stream position of the first new token
        layer = (lambda i: (cache.keys[i], cache.values[i])) if cache is not None else (lambda i: None)
        classes, particles = routes if routes is not None else (None, None)
        x = self.cross(e, expert, first, context=s, cache=layer(0), used=classes)
        for i, block in enumerate(self.blocks, 1):
            x = block(x, expert, first, cache=layer(i), used=classes)
        x = self.norm(x)
        if prefix:
            x = x[:, 1:]  # logits after each token, not after the condition alone
        particle = self.head_of_class[expert]
        if keep is not None:
            x, particle = x[keep], particle[:, None].expand(keep.shape)[keep]
        return (routed(self.spatial_heads, x, particle, particles),
                routed(self.energy_heads, x, particle, particles))
