"""The next-token backbone of seed 003 section 3: a causal transformer over (spatial, energy) token
pairs with a fixed-routing mixture of experts.

Two streams, one per vocabulary, each with its own embedding; the condition vector (incident
energy and angles, embedded linearly) is the first token of both. A cross-attention block lets the
energy stream (queries) read the spatial stream (keys and values); standard causal self-attention
blocks follow. Positions enter only through partial rotary embeddings (the first half of each
head's dimensions, base 1000) and a per-token depth bias (the voxel's layer / L). Each block's MLP
is one expert per (particle, material) class, chosen by the class of the sequence: every shower
runs exactly one expert per block, so the active parameters stay constant as experts are added.
Two heads give the logits of the next spatial and the next energy token. Full fp32 (seed 003 saw
bf16 artefacts in the multiplicity).

Generation appends one pair at a time: ``forward(..., cache=KVCache, start=t)`` computes only the
new positions and reads the earlier keys and values from a cache preallocated to the maximum length
(static shapes, for CUDA graphs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from calofm.data.preprocess import N_KINEMATIC
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

    def forward(self, x: torch.Tensor, context: torch.Tensor, positions: torch.Tensor,
                cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        q = rotary(self._split(self.q(x)), positions)
        k, v = rotary(self._split(self.k(context)), positions), self._split(self.v(context))
        start = int(positions[0])
        if cache is not None:  # write the new positions, attend over everything up to them
            cache[0][:, :, start:start + k.shape[2]] = k
            cache[1][:, :, start:start + v.shape[2]] = v
            k, v = cache[0][:, :, :start + k.shape[2]], cache[1][:, :, :start + v.shape[2]]
        t, s = q.shape[2], k.shape[2]
        mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(diagonal=s - t)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(x.shape))


class Experts(nn.Module):
    """One MLP per class; ``forward(x, expert)`` runs each sequence (B, T, D) through its own."""

    def __init__(self, dim: int, hidden: int, n_experts: int):
        super().__init__()
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
                                     for _ in range(n_experts))

    def forward(self, x: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        for i in torch.unique(expert).tolist():
            rows = expert == i
            out[rows] = self.experts[i](x[rows])
        return out


class Block(nn.Module):
    """Pre-norm attention (self, or cross from the spatial stream) and the class's expert MLP."""

    def __init__(self, dim: int, heads: int, hidden: int, n_experts: int, cross: bool = False):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attn = Attention(dim, heads)
        self.mlp = Experts(dim, hidden, n_experts)

    def forward(self, x, expert, positions, context=None, cache=None):
        h = self.norm1(x)
        x = x + self.attn(h, h if context is None else self.norm_context(context), positions, cache)
        return x + self.mlp(self.norm2(x), expert)


class NextToken(nn.Module):
    """``net(spatial, energy, cond)`` -> (spatial logits, energy logits), (B, T, V) each, for token
    pairs (B, T) (position 0 is the start pair). ``depths`` gives each spatial token's depth (its
    voxel's layer / L; 0 for the special tokens); a sequence's expert is the index of the largest of
    its condition's entries from ``expert_column`` on (the class one-hot)."""

    def __init__(self, n_cond: int, depths, energy_vocab: int, n_experts: int = 1, expert_column: int = N_KINEMATIC,
                 dim: int = 256, depth: int = 6, heads: int = 8, mlp_dim: int = 1024, max_len: int = 2048):
        super().__init__()
        self.heads, self.max_len, self.expert_column = heads, max_len, expert_column
        self.register_buffer("depths", torch.as_tensor(depths, dtype=torch.float32), persistent=False)
        spatial_vocab = len(self.depths)
        self.spatial_embed, self.energy_embed = nn.Embedding(spatial_vocab, dim), nn.Embedding(energy_vocab, dim)
        self.cond_embed = nn.Linear(n_cond, dim)
        self.depth_bias = nn.Linear(1, dim, bias=False)
        self.cross = Block(dim, heads, mlp_dim, n_experts, cross=True)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim, n_experts) for _ in range(depth - 1))
        self.norm = nn.LayerNorm(dim)
        self.spatial_head, self.energy_head = nn.Linear(dim, spatial_vocab), nn.Linear(dim, energy_vocab)
        self.init_weights(self)

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        reset_parameters(module)
        for m in module.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=1 / math.sqrt(m.weight.shape[1]))

    def active_parameters(self) -> int:
        """Parameters one shower runs through: everything but the other classes' experts."""
        idle = sum(sum(p.numel() for p in e.parameters()) for block in [self.cross, *self.blocks]
                   for e in block.mlp.experts[1:])
        return sum(p.numel() for p in self.parameters()) - idle

    def cache(self, batch: int, device=None) -> KVCache:
        """An empty cache for ``batch`` sequences of up to ``max_len`` + 1 positions (with the condition)."""
        head_dim = self.spatial_embed.weight.shape[1] // self.heads
        return KVCache.empty(1 + len(self.blocks), batch, self.heads, self.max_len + 1, head_dim, device)

    def forward(self, spatial: torch.Tensor, energy: torch.Tensor, cond: torch.Tensor,
                cache: KVCache | None = None, start: int = 0):
        """Logits after every given position; with ``cache``, the tokens are positions ``start``..
        of sequences whose earlier positions (and the condition, when ``start`` > 0) are cached."""
        expert = cond[:, self.expert_column:].argmax(1)
        bias = self.depth_bias(self.depths[spatial][..., None])
        s, e = self.spatial_embed(spatial) + bias, self.energy_embed(energy) + bias
        if start == 0:  # the condition token leads both streams
            c = self.cond_embed(cond)[:, None]
            s, e = torch.cat([c, s], dim=1), torch.cat([c, e], dim=1)
        first = start + (start > 0)  # stream position of the first new token (the condition is position 0)
        positions = torch.arange(first, first + s.shape[1], device=s.device)
        layer = (lambda i: (cache.keys[i], cache.values[i])) if cache is not None else (lambda i: None)
        x = self.cross(e, expert, positions, context=s, cache=layer(0))
        for i, block in enumerate(self.blocks, 1):
            x = block(x, expert, positions, cache=layer(i))
        x = self.norm(x)
        if start == 0:
            x = x[:, 1:]  # logits after each token, not after the condition alone
        return self.spatial_head(x), self.energy_head(x)
