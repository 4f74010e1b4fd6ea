"""CaloDiT-2 backbone: a diffusion transformer on the full 3D shower (seed paper, section 3.2.1).

The shower ``x`` of shape (B, R, A, Z) in (r, phi, z) order is cut into 3D patches by a
shared Conv3d, given fixed 3D sin-cos positional embeddings, and passed through DiT
blocks with adaLN-Zero conditioning on ``c = [noise embedding, condition embedding]``.
A modulated linear head maps every token back to its patch of voxels. The modulations
and the head start at zero, so an untrained net outputs exactly zero.

Call: ``net(x, noise_label, cond)`` with noise_label (B,) (EDM passes ln(sigma)/4) and
cond (B, n_cond) already preprocessed; returns a tensor of x's shape.

``DiT.ROLES`` names the submodule playing each role, and ``init_weights(module)`` re-initialises
any part, so transfer-learning strategies can freeze, reset or adapt parts of any backbone
without knowing its layout:

    input      patch_embed  voxels -> tokens (Conv3d)
    noise      time_embed   noise label -> half of c
    condition  cond_embed   incident-particle / detector condition -> other half of c
    blocks     blocks       nn.ModuleList of transformer blocks
    output     final        tokens -> voxels
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from calofm.models.init import reset_parameters


def sincos_1d(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """Standard sinusoidal embedding (N,) -> (N, dim): sin then cos at frequencies 1/10000^(2i/dim)."""
    freqs = 10000.0 ** (-torch.arange(dim // 2, dtype=torch.float64) * 2 / dim)
    angles = pos.double()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Fixed embedding of a 3D patch grid, (prod(grid), dim): one third of dim per axis (r, phi, z).

    Tokens are in row-major grid order, as Conv3d output flattens.
    """
    idx = torch.cartesian_prod(*(torch.arange(n) for n in grid))
    return torch.cat([sincos_1d(idx[:, k], dim // 3) for k in range(3)], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class NoiseEmbed(nn.Module):
    """Noise label -> sinusoidal features (freq_dim) -> MLP -> out_dim.

    The label (EDM's ln(sigma)/4, of order 1) is scaled by 1000 first, the range of DiT's
    timesteps and the consistency-models convention, so that all frequencies (1 down to
    1/10000) vary over the noise range rather than only the fastest few.
    """

    SCALE = 1000.0

    def __init__(self, out_dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, noise_label: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=noise_label.device) / half)
        angles = self.SCALE * noise_label.float()[:, None] * freqs[None]
        features = torch.cat([angles.cos(), angles.sin()], dim=1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class Attention(nn.Module):
    """Multi-head self-attention with one qkv projection and fused attention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class Block(nn.Module):
    """Transformer block with adaLN-Zero: c sets shift, scale and gate of attention and MLP."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_dim, dim))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1))
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class FinalLayer(nn.Module):
    """Modulated LayerNorm and a linear map from each token to its patch of voxels."""

    def __init__(self, dim: int, patch_size: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_size)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """CaloDiT-2: ``net(x, noise_label, cond) -> tensor of x's shape`` (see module docstring).

    shape is the voxel mesh (R, A, Z), patch the 3D patch size dividing it; dim is the
    token width, split evenly between noise and condition embeddings to form c.
    """

    REPRESENTATION = "mesh"
    ROLES: ClassVar[dict[str, str]] = {
        "input": "patch_embed",
        "noise": "time_embed",
        "condition": "cond_embed",
        "blocks": "blocks",
        "output": "final",
    }

    def __init__(
        self,
        n_cond: int,
        shape=(9, 16, 45),
        patch=(3, 2, 3),
        dim: int = 384,
        depth: int = 6,
        heads: int = 6,
        mlp_dim: int = 1536,
        freq_dim: int = 256,
    ):
        super().__init__()
        self.shape, self.patch = tuple(shape), tuple(patch)
        if len(self.shape) != 3 or len(self.patch) != 3 or any(s % p for s, p in zip(self.shape, self.patch)):
            raise ValueError(f"mesh shape {self.shape} is not divisible by patch {self.patch}")
        if dim % 6:
            raise ValueError(f"dim {dim} must be divisible by 6 (3D sin-cos embedding needs dim/3 even)")
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        if freq_dim % 2:
            raise ValueError(f"freq_dim {freq_dim} must be even")
        self.grid = tuple(s // p for s, p in zip(self.shape, self.patch))
        self.dim = dim

        self.patch_embed = nn.Conv3d(1, dim, kernel_size=self.patch, stride=self.patch)
        self.register_buffer("pos_embed", sincos_3d(self.grid, dim), persistent=False)
        self.time_embed = NoiseEmbed(dim // 2, freq_dim)
        self.cond_embed = nn.Sequential(nn.Linear(n_cond, dim // 2), nn.SiLU(), nn.Linear(dim // 2, dim // 2))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim) for _ in range(depth))
        self.final = FinalLayer(dim, math.prod(self.patch))
        self.init_weights(self)

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """(Re-)initialise ``module`` (self or a part): Xavier-uniform weights and zero biases
        (patch_embed as a Linear); the adaLN modulations and the head at zero."""
        zero = {id(layer) for layer in [*(b.modulation[-1] for b in self.blocks), self.final.modulation[-1],
                                        self.final.linear]}
        reset_parameters(module, zero)

    @staticmethod
    def geometry_args(readout, args: dict) -> dict:
        """Constructor arguments from a readout (its regular mesh as ``shape``) and the config's."""
        n_z, n_a, n_r = readout.shape
        return {**args, "shape": [n_r, n_a, n_z]}

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, R, A, Z) -> (B, tokens, voxels per patch), tokens in row-major grid order."""
        (gr, ga, gz), (pr, pa, pz) = self.grid, self.patch
        # -1: batch axis stays dynamic in exports
        x = x.reshape(-1, gr, pr, ga, pa, gz, pz).permute(0, 1, 3, 5, 2, 4, 6)
        return x.reshape(-1, self.num_tokens, pr * pa * pz)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, tokens, voxels per patch) -> (B, R, A, Z); inverse of ``patchify``."""
        (gr, ga, gz), (pr, pa, pz) = self.grid, self.patch
        x = tokens.reshape(-1, gr, ga, gz, pr, pa, pz).permute(0, 1, 4, 2, 5, 3, 6)
        return x.reshape(-1, *self.shape)

    def forward(self, x: torch.Tensor, noise_label: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"expected voxels of shape (B, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        tokens = self.patch_embed(x[:, None]).flatten(2).transpose(1, 2) + self.pos_embed
        c = torch.cat([self.time_embed(noise_label), self.cond_embed(cond)], dim=-1)
        for block in self.blocks:
            tokens = block(tokens, c)
        return self.unpatchify(self.final(tokens, c))
