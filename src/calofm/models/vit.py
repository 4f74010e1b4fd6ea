"""CaloDREAM++ (section 2.2): an energy network and a universal vision-transformer shape network.

Both are velocity fields for conditional flow matching, called as ``net(x, t, cond)`` with the time
t in [0, 1]; :class:`CaloDREAM` holds the pair as the two stages of
:class:`calofm.generative.FactorisedFlowMatching` (u ~ p(u | C), then voxels ~ p(x | C, u), eq. 7).

* :class:`EnergyNet` generates the L layer-energy ratios u in parallel: condition tokens
  s_i = [C_i, onehot(i), 0] (eq. 8) feed a transformer encoder, ratio tokens t_i = [u_i(t),
  onehot(i), 0] (eq. 9) its decoder, whose cross-attention output per layer goes, with a Gaussian
  Fourier projection of t, through an MLP (two linear layers, SiLU) to that layer's velocity (eq. 11).
* :class:`ViT` takes a geometry of one or several grids (runs of layers sharing a transverse shape:
  one for a regular mesh, several for CaloChallenge dataset 1 or an ECAL + HCAL pair), each with
  its own 3D patch of one common voxel count P_tot (eq. 12). Patches are embedded linearly, get the
  3D sine embedding of learnable Gaussian-initialised frequencies on the normalised patch grid
  (eqs. 13-16), and pass DiT blocks with adaLN conditioning on embed(C, u) + embed(t).

The flat voxel vector is in the readout's voxel order (layer slowest), so grid g is a contiguous
(layers, slow, fast) box. A grid whose sides are not multiples of its patch is padded with zeros
inside the network and the padding dropped on the way out: the generative state is exactly the
detector's voxels (CaloDREAM++ pads the data instead and collapses the pads after generation).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from calofm.geometry.layers import layer_grids
from calofm.models.dit import Block, FinalLayer
from calofm.models.init import reset_parameters

# CaloDREAM++ (table A3) for CaloChallenge ds2 and LEMURS, read as (layers, alpha, r): the table's header
# says (z, r, alpha), but ds2 has 16 alpha and 9 r bins, so its 16 must be alpha
DEFAULT_PATCH = (3, 16, 1)


class FourierTime(nn.Module):
    """Gaussian Fourier projection of t (Tancik et al. 2020): [sin 2 pi t w, cos 2 pi t w] with fixed
    w ~ N(0, scale^2) of ``dim / 2`` entries (a saved buffer, never trained)."""

    def __init__(self, dim: int, scale: float = 30.0):
        super().__init__()
        self.scale = scale
        self.register_buffer("w", torch.empty(dim // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the frequencies afresh (a model trained from scratch gets its own)."""
        self.w.normal_(0.0, self.scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * t.float()[:, None] * self.w[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


def onehot_tokens(values: torch.Tensor, width: int) -> torch.Tensor:
    """(B, n) values -> (B, n, width) tokens [value_i, onehot(i), 0] (CaloDREAM++, eqs. 8, 9)."""
    b, n = values.shape
    which = torch.eye(n, width - 1, device=values.device, dtype=values.dtype).expand(b, n, width - 1)
    return torch.cat([values[..., None], which], dim=-1)


class EnergyNet(nn.Module):
    """Velocity of the L layer-energy ratios given the conditions, all L in one call (eq. 11).

    ``cond_embed`` adds C_i times a learned vector of its own to condition token i (zero at
    initialisation, so the tokens start as eq. 8): a one-hot entry that is 0 then adds nothing,
    which keeps every other detector's output fixed when only a new slot's entry trains.
    """

    def __init__(self, n_cond: int, n_layers: int, dim: int = 64, heads: int = 4, encoder_layers: int = 4,
                 decoder_layers: int = 4, ff_dim: int = 1024, time_dim: int = 64, time_scale: float = 30.0):
        super().__init__()
        if max(n_cond, n_layers) + 1 > dim:
            raise ValueError(f"energy network dim {dim} must exceed the number of conditions ({n_cond}) and "
                             f"of layers ({n_layers}): tokens are [value, one-hot, 0]")
        self.dim = dim
        self.cond_embed = nn.Linear(n_cond, dim, bias=False)
        self.transformer = nn.Transformer(dim, heads, encoder_layers, decoder_layers, ff_dim, dropout=0.0,
                                          batch_first=True)
        self.time_embed = nn.Sequential(FourierTime(time_dim, time_scale), nn.Linear(time_dim, time_dim))
        self.head = nn.Sequential(nn.Linear(dim + time_dim, ff_dim), nn.SiLU(), nn.Linear(ff_dim, 1))
        self.init_weights(self)

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """(Re-)initialise ``module``: Xavier weights, zero biases, the condition values at zero."""
        reset_parameters(module, self.zero_layers())

    def zero_layers(self) -> set[int]:
        return {id(self.cond_embed)}

    def forward(self, u: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        src = onehot_tokens(cond, self.dim) + cond[..., None] * self.cond_embed.weight.t()[None]
        h = self.transformer(src, onehot_tokens(u, self.dim))
        time = self.time_embed(t)[:, None].expand(-1, h.shape[1], -1)
        return self.head(torch.cat([h, time.to(h.dtype)], dim=-1)).squeeze(-1)


class Patching:
    """Cuts flat voxel vectors into (B, tokens, P_tot) patches grid by grid, and back exactly.

    ``grids``: [(layers, slow, fast), patch (p_layers, p_slow, p_fast)] per grid, in voxel order.
    """

    def __init__(self, grids):
        self.grids = [(tuple(map(int, shape)), tuple(map(int, patch))) for shape, patch in grids]
        sizes = {math.prod(patch) for _, patch in self.grids}
        if len(sizes) != 1:
            raise ValueError("every grid's patch must hold the same number of voxels (eq. 12), got "
                             + ", ".join(f"{p} = {math.prod(p)}" for _, p in self.grids))
        self.patch_voxels = sizes.pop()
        self.counts = [tuple(-(-s // p) for s, p in zip(shape, patch)) for shape, patch in self.grids]
        self.n_voxels = sum(math.prod(shape) for shape, _ in self.grids)
        self.n_tokens = sum(math.prod(c) for c in self.counts)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        out, start = [], 0
        for (shape, patch), count in zip(self.grids, self.counts):
            n = math.prod(shape)
            box = x[:, start:start + n].reshape(-1, *shape)
            pad = [p * c - s for s, p, c in zip(shape, patch, count)]
            box = nn.functional.pad(box, (0, pad[2], 0, pad[1], 0, pad[0]))
            box = box.reshape(-1, count[0], patch[0], count[1], patch[1], count[2], patch[2])
            out.append(box.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, math.prod(count), self.patch_voxels))
            start += n
        return torch.cat(out, dim=1)

    def unpatchify(self, tokens: torch.Tensor) -> torch.Tensor:
        out, start = [], 0
        for (shape, patch), count in zip(self.grids, self.counts):
            part = tokens[:, start:start + math.prod(count)]
            box = part.reshape(-1, *count, *patch).permute(0, 1, 4, 2, 5, 3, 6)
            box = box.reshape(-1, *(c * p for c, p in zip(count, patch)))
            out.append(box[:, :shape[0], :shape[1], :shape[2]].reshape(-1, math.prod(shape)))
            start += math.prod(count)
        return torch.cat(out, dim=1)

    def coordinates(self) -> torch.Tensor:
        """(tokens, 3) patch coordinates (x, y, z): x, y local to the grid in {0, 1/X, ...} (eq. 14),
        z cumulative over the grids in {0, 1/L, ..., (L-1)/L}, L = all grids' layer patches (eq. 13)."""
        total_z = sum(c[0] for c in self.counts)
        coords, z0 = [], 0
        for nz, nx, ny in self.counts:
            z, x, y = torch.meshgrid(torch.arange(nz) + z0, torch.arange(nx), torch.arange(ny), indexing="ij")
            coords.append(torch.stack([x.flatten() / nx, y.flatten() / ny, z.flatten() / total_z], dim=1))
            z0 += nz
        return torch.cat(coords).float()


class PatchPositions(nn.Module):
    """P = [sin(x w), cos(x w), sin(y w), cos(y w), sin(z w), cos(z w)] with learnable w = 2 pi f,
    f ~ N(0, 1) of dim / 6 entries (eqs. 15, 16)."""

    def __init__(self, coordinates: torch.Tensor, dim: int):
        super().__init__()
        self.register_buffer("coords", coordinates, persistent=False)
        self.freqs = nn.Parameter(torch.empty(dim // 6))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.freqs.copy_(2 * math.pi * torch.randn(self.freqs.shape))

    def forward(self) -> torch.Tensor:
        angles = self.coords[:, :, None] * self.freqs  # (tokens, 3, dim / 6)
        return torch.stack([angles.sin(), angles.cos()], dim=2).flatten(1)


class ViT(nn.Module):
    """The shape network: ``net(x, t, cond) -> velocity`` of flat voxels x (B, V), cond (B, n_cond)."""

    def __init__(self, n_cond: int, grids, dim: int = 480, depth: int = 6, heads: int = 6, mlp_dim: int = 1920,
                 time_dim: int = 64, time_scale: float = 30.0):
        super().__init__()
        if dim % 6 or dim % heads:
            raise ValueError(f"ViT dim {dim} must be divisible by 6 (eq. 16) and by heads {heads}")
        self.patching = Patching(grids)
        self.patch_embed = nn.Linear(self.patching.patch_voxels, dim)
        self.pos_embed = PatchPositions(self.patching.coordinates(), dim)
        self.time_embed = nn.Sequential(FourierTime(time_dim, time_scale), nn.Linear(time_dim, dim), nn.SiLU(),
                                        nn.Linear(dim, dim))
        self.cond_embed = nn.Sequential(nn.Linear(n_cond, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_dim) for _ in range(depth))
        self.final = FinalLayer(dim, self.patching.patch_voxels)
        self.init_weights(self)

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """(Re-)initialise ``module``: Xavier weights, zero biases, Gaussian frequencies; the adaLN
        modulations and the head at zero (an untrained net outputs zero velocity)."""
        reset_parameters(module, self.zero_layers())

    def zero_layers(self) -> set[int]:
        return {id(m) for m in [*(b.modulation[-1] for b in self.blocks), self.final.modulation[-1],
                                self.final.linear]}

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.patching.n_voxels:
            raise ValueError(f"expected voxels of shape (B, {self.patching.n_voxels}), got {tuple(x.shape)}")
        tokens = self.patch_embed(self.patching.patchify(x)) + self.pos_embed()
        c = self.time_embed(t) + self.cond_embed(cond)
        for block in self.blocks:
            tokens = block(tokens, c)
        return self.patching.unpatchify(self.final(tokens, c))


class CaloDREAM(nn.Module):
    """The energy network and the shape network as the two stages of factorised flow matching.

    The data vector is [u (L), voxels (V)] (:class:`calofm.data.preprocess.LayerRatioTransform`);
    ``first`` = ``energy`` sees C, ``second`` = ``shape`` sees [C, u]. ``ROLES`` name the parts for
    the transfer strategies: the universal blocks are the shape network's; the input, output and
    position roles are the detector-specific parts CaloDREAM++ re-initialises (figure 1).
    """

    FACTORISED = True
    TRAINED_WITH = "cfm"
    REPRESENTATION = "layer_ratios"
    ROLES: ClassVar[dict[str, str | list[str]]] = {
        "input": "shape.patch_embed",
        "position": "shape.pos_embed",
        "noise": ["shape.time_embed", "energy.time_embed"],
        "condition": ["shape.cond_embed", "energy.cond_embed"],
        "blocks": "shape.blocks",
        "output": ["shape.final", "energy.head"],
    }

    def __init__(self, n_cond: int, grids, energy: dict | None = None, **shape):
        super().__init__()
        self.split = sum(int(g[0][0]) for g in grids)  # L: one ratio per layer
        self.energy = EnergyNet(n_cond, self.split, **(energy or {}))
        self.shape = ViT(n_cond + self.split, grids, **shape)

    @property
    def first(self) -> EnergyNet:
        return self.energy

    @property
    def second(self) -> ViT:
        return self.shape

    @staticmethod
    def geometry_args(readout, args: dict) -> dict:
        """Constructor arguments from a readout and the config's: ``patch`` (one (layers, slow, fast)
        patch for every grid, or a list with one per grid; default (3, 16, 1)) becomes ``grids``."""
        args = dict(args)
        shapes = layer_grids(readout.layer_shapes())
        patch = args.pop("patch", DEFAULT_PATCH)
        patches = patch if patch and isinstance(patch[0], (list, tuple)) else [patch] * len(shapes)
        if len(patches) != len(shapes):
            raise ValueError(f"model.args.patch: {len(patches)} patches for {len(shapes)} grids {shapes}")
        return {**args, "grids": [[list(s), list(p)] for s, p in zip(shapes, patches)]}

    @staticmethod
    def transfer_args(base_args: dict, model_args: dict) -> dict:
        """A base model's arguments for a target of another geometry: its patch (when it had one for
        every grid) unless ``model_args`` names one (for ``geometry_args``)."""
        if set(model_args) - {"patch"}:
            raise ValueError(f"adapt.model: only the patch can change with the geometry, got {sorted(model_args)}")
        args = {k: v for k, v in base_args.items() if k not in ("grids", "n_cond")}
        patches = {tuple(patch) for _, patch in base_args["grids"]}
        if "patch" not in model_args and len(patches) != 1:
            raise ValueError("a new geometry; name its patches with adapt.model.patch (--patch)")
        return {**args, "patch": list(next(iter(patches))), **model_args}

    @torch.no_grad()
    def load_transferable(self, base: CaloDREAM, x: torch.Tensor | None = None) -> list[str]:
        """Take ``base``'s weights for this (new) geometry, as CaloDREAM++ (section 6) does; returns the
        names of the parameters that were re-initialised or interpolated (to train with a larger
        learning rate). (The target's training rows ``x`` are not needed.)

        Everything whose shape is unchanged is copied (the universal blocks, both time and the
        energy network). The patch embedding and the head are copied when the patch is the same,
        interpolated (trilinear over the patch) when every grid of both geometries has one patch
        shape, and re-initialised otherwise. The positional frequencies are re-initialised when the
        number of patches changes. The condition embedding keeps its columns for C and starts the
        columns for u afresh when the number of layers changes.
        """
        mine, theirs = self.state_dict(), base.state_dict()
        fresh: list[str] = []
        old, new = base.shape.patching.grids, self.shape.patching.grids
        old_patches, new_patches = {p for _, p in old}, {p for _, p in new}
        for key in ("shape.patch_embed", "shape.final.linear"):
            w, b = f"{key}.weight", f"{key}.bias"
            if mine[w].shape == theirs[w].shape and old_patches == new_patches:
                continue  # copied below
            fresh += [w, b]
            if len(old_patches) == len(new_patches) == 1:
                (p_old,), (p_new,) = old_patches, new_patches
                if key.endswith("embed"):  # rescaled so that a patch of uniform voxels embeds as before
                    mine[w].copy_(_resize_patch(theirs[w], p_old, p_new) * (math.prod(p_old) / math.prod(p_new)))
                    mine[b].copy_(theirs[b])
                else:
                    mine[w].copy_(_resize_patch(theirs[w].t(), p_old, p_new).t())
                    mine[b].copy_(_resize_patch(theirs[b][None], p_old, p_new)[0])
        if self.shape.patching.n_tokens != base.shape.patching.n_tokens:
            fresh.append("shape.pos_embed.freqs")
        cond = "shape.cond_embed.0.weight"
        if mine[cond].shape != theirs[cond].shape:
            n_c = self.energy.cond_embed.in_features
            mine[cond][:, :n_c] = theirs[cond][:, :n_c]
            fresh.append(cond)
        for name, value in theirs.items():
            if name not in fresh and mine[name].shape == value.shape:
                mine[name].copy_(value)  # state_dict tensors share the parameters' storage
        return fresh

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """(Re-)initialise ``module`` (self or a part of either network) as the networks do."""
        reset_parameters(module, self.energy.zero_layers() | self.shape.zero_layers())


def _resize_patch(rows: torch.Tensor, old: tuple, new: tuple) -> torch.Tensor:
    """(N, prod(old)) values over a patch of shape ``old`` -> (N, prod(new)) by trilinear interpolation."""
    out = nn.functional.interpolate(rows.reshape(len(rows), 1, *old), size=new, mode="trilinear", align_corners=False)
    return out.reshape(len(rows), -1)
