"""Showers as token sequences for the next-token family (next-token foundation model, section 3, "Tokenization of Space
and Energy").

A shower becomes the sequence of its non-zero voxels in descending energy, each a pair (spatial
token = the voxel's index in CaloChallenge order, energy token = its linear energy bin), between a
start and an end pair. The readout is already discrete, so space needs no further tokenisation; the
energy bin width is chosen so that the energy vocabulary is about as large as the spatial one
(the next-token foundation model: 27k voxels, 25k energy bins), which lets the two losses share one weight.
Decoding puts each voxel at its bin's centre: the round trip is exact up to half a bin width (energies above the
last bin are clipped into it). The vocabularies belong to a geometry and are stored with the
checkpoint (``to_dict``, as every representation), with the longest sequence the model rows hold
(``max_len``, half as long again as the longest fitted one): generation draws at most that many.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from calofm.data.preprocess import Representation

START, END, PAD = 0, 1, 2  # special tokens, after the regular ones: token n_regular + START, ...
N_SPECIAL = 3


def special_token(vocab: int, which: int) -> int:
    """The id of the special token ``which`` (START, END or PAD) in a vocabulary of ``vocab`` tokens."""
    return vocab - N_SPECIAL + which


@dataclass(frozen=True)
class Tokeniser(Representation):
    """(spatial, energy) token pairs of the non-zero voxels of ``n_voxels``-voxel showers."""

    kind: ClassVar[str] = "tokens"
    n_voxels: int
    bin_width: float     # MeV per energy token
    n_bins: int          # energy tokens; the last one holds everything above its lower edge
    max_len: int         # token pairs of the longest sequence, start and end included

    @classmethod
    def fit(cls, showers: np.ndarray, n_bins: int | None = None) -> Tokeniser:
        """Bins of equal width up to the largest voxel energy of ``showers`` (N, V); by default as many
        energy tokens as voxels (the next-token foundation model's rule, which
        :class:`calofm.models.NextToken` follows)."""
        showers = np.asarray(showers)
        top = float(showers.max(initial=0.0))
        if not top > 0:
            raise ValueError("no deposit to fit the energy bins on")
        n_bins = int(n_bins or showers.shape[1])
        longest = int((showers > 0).sum(1).max())
        return cls(int(showers.shape[1]), top / n_bins, n_bins, longest * 3 // 2 + 2)

    def state_shape(self, readout=None) -> tuple[int, int]:
        """A shower's model rows: ``max_len`` (spatial, energy) pairs."""
        return self.max_len, 2

    @property
    def spatial_vocab(self) -> int:
        return self.n_voxels + N_SPECIAL

    @property
    def energy_vocab(self) -> int:
        return self.n_bins + N_SPECIAL

    def special(self, which: int) -> tuple[int, int]:
        """The (spatial, energy) pair of the special token ``which`` (START, END or PAD)."""
        return special_token(self.spatial_vocab, which), special_token(self.energy_vocab, which)

    def encode(self, showers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(spatial, energy) token arrays (N, T) padded with PAD, and the lengths (N,) counting the
        start and end pairs; T = 2 + the largest number of non-zero voxels."""
        showers = np.asarray(showers, dtype=np.float64)
        if showers.ndim != 2 or showers.shape[1] != self.n_voxels:
            raise ValueError(f"showers of shape {showers.shape} do not match {self.n_voxels} voxels")
        if np.any(~np.isfinite(showers)) or np.any(showers < 0):
            raise ValueError("showers hold negative or non-finite energies")
        hits = (showers > 0).sum(1)
        order = np.argsort(-showers, axis=1, kind="stable")[:, :int(hits.max(initial=0))]  # descending energy
        energy = np.take_along_axis(showers, order, axis=1)
        bins = np.minimum(np.floor(energy / self.bin_width), self.n_bins - 1).astype(np.int64)
        lengths = hits + 2
        spatial = np.full((len(showers), int(lengths.max(initial=2))), self.special(PAD)[0], dtype=np.int64)
        tokens = np.full_like(spatial, self.special(PAD)[1])
        inside = np.arange(order.shape[1])[None] < hits[:, None]
        spatial[:, 1:1 + order.shape[1]] = np.where(inside, order, spatial[:, 1:1 + order.shape[1]])
        tokens[:, 1:1 + order.shape[1]] = np.where(inside, bins, tokens[:, 1:1 + order.shape[1]])
        spatial[:, 0], tokens[:, 0] = self.special(START)
        rows = np.arange(len(showers))
        spatial[rows, lengths - 1], tokens[rows, lengths - 1] = self.special(END)
        return spatial, tokens, lengths

    def rows(self, showers, readout=None):
        """(N, max_len, 2) int64 token pairs of the showers, one padded sequence per shower (no extra
        conditions)."""
        spatial, energy, lengths = self.encode(showers.showers)
        if lengths.max(initial=0) > self.max_len:
            raise ValueError(f"a shower of {lengths.max() - 2} hits is longer than the tokeniser's "
                             f"{self.max_len - 2} (fitted on showers of fewer hits)")
        pairs = np.stack([spatial, energy], axis=-1)
        padding = np.broadcast_to(np.array(self.special(PAD)), (len(pairs), self.max_len - pairs.shape[1], 2))
        return torch.from_numpy(np.concatenate([pairs, padding], axis=1)), None, None

    def decode(self, x, energy=None) -> np.ndarray:
        """Voxel rows (N, V) in MeV from token pairs ``x`` (N, T, 2): every regular pair before the
        first end pair deposits its bin's centre energy in its voxel (a repeated voxel adds up);
        ``energy`` (the incident energies) is not needed."""
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        spatial, energy = x[..., 0].astype(np.int64), x[..., 1].astype(np.int64)
        ended = np.cumsum(spatial == self.special(END)[0], axis=1) > 0
        keep = ~ended & (spatial < self.n_voxels) & (energy < self.n_bins)
        rows, _ = np.nonzero(keep)
        out = np.zeros((len(spatial), self.n_voxels))
        np.add.at(out, (rows, spatial[keep]), (energy[keep] + 0.5) * self.bin_width)
        return out.astype(np.float32)

    def deeper(self, x: torch.Tensor, k: int, layers: int, layer_voxels: int) -> torch.Tensor:
        """The next-token foundation model's calibration (section 4) of generated token pairs ``x`` (N, T, 2):
        the ``k`` most energetic deposits (the first ``k`` pairs after the start) move ``layers`` layers deeper in
        the same transverse cell (at most to the last layer) of a readout of ``layer_voxels`` voxels
        per layer, CaloChallenge order."""
        x = x.clone()
        head = x[:, 1:1 + k, 0]
        regular = head < self.n_voxels
        last = (self.n_voxels // layer_voxels - 1) * layer_voxels
        moved = torch.minimum(head + layers * layer_voxels, last + head % layer_voxels)
        x[:, 1:1 + k, 0] = torch.where(regular, moved, head)
        return x
