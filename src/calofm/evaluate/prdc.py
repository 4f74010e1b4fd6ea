"""Precision, recall, density and coverage (PRDC) of a generated sample against a reference.

The metrics of Naeem et al. 2020 ("Reliable Fidelity and Diversity Metrics for Generative Models"),
computed as the ``prdc`` package does, with Euclidean distances:

* ``r_i``: distance from reference point ``i`` to its k-th nearest other reference point (the
  (k+1)-th smallest distance counting itself); ``s_j`` likewise inside the generated sample;
  ``D_ij`` reference-to-generated distances.
* precision = fraction of generated ``j`` with ``D_ij < r_i`` for some ``i``;
* recall    = fraction of reference ``i`` with ``D_ij < s_j`` for some ``j``;
* density   = (1/k) * mean over generated ``j`` of #{i: D_ij < r_i};
* coverage  = fraction of reference ``i`` with ``min_j D_ij < r_i``.

Comparisons are strict (``<``), as in ``prdc``. When a sample has more than ``max_samples`` events,
a random subset of ``max_samples`` events (without replacement, ``default_rng(seed)``, reference
first) is used; the cost is O(n^2 d). Two samples from one distribution give precision and recall
near (not at) 1 in high dimension, density near 1 and coverage near ``1 - 2^-k``-ish; identical
arrays give exactly (1, 1, ~1, 1). The results equal those of ``prdc`` 0.2 to all printed digits on
Gaussian and log10-voxel inputs.

calofm feeds it the voxels (:func:`prdc_inputs`): ``log10`` of the voxel energies in MeV, with zero
(or negative) voxels set to ``floor = 0.1`` MeV first; other voxels, also those below the floor,
are kept.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calofm.evaluate.fpd import SEED
from calofm.evaluate.inputs import checked_int, checked_pair

__all__ = ["PRDC_K", "PRDC_MAX_SAMPLES", "prdc", "prdc_inputs"]

PRDC_K = 5
"""Nearest neighbours: Naeem et al. 2020 and the ``prdc`` package default."""
PRDC_MAX_SAMPLES = 10_000
"""Events per sample before subsampling (calofm's choice: the cost is O(n^2 d)); ``None`` uses all."""

_BLOCK = 2048  # rows per block of a distance matrix


def prdc_inputs(showers: Any, floor: float = 0.1) -> np.ndarray:
    """log10 of voxel energies (MeV), zeros set to ``floor``: the PRDC input calofm uses.

    ``showers`` has shape ``(n_events, ...)``; it is flattened to ``(n_events, n_voxels)``.
    Voxels ``<= 0`` become ``floor`` before the log; positive voxels, also those below
    ``floor``, are kept as they are. Returns float32.
    """
    if not floor > 0:
        raise ValueError(f"floor must be positive, got {floor}")
    arr = np.asarray(showers, dtype=np.float32)
    if arr.ndim < 2:
        raise ValueError(f"showers must be (n_events, n_voxels, ...), got shape {arr.shape}")
    arr = arr.reshape(arr.shape[0], -1)
    if np.isnan(arr).any():
        raise ValueError("showers contain NaN")
    return np.log10(np.where(arr > 0, arr, np.float32(floor))).astype(np.float32, copy=False)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from sklearn.metrics import pairwise_distances

    return pairwise_distances(a, b, metric="euclidean")


def _knn_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Distance to the k-th nearest other point: the (k+1)-th smallest including itself."""
    radii = np.empty(x.shape[0], dtype=np.float64)
    for i in range(0, x.shape[0], _BLOCK):
        d = _pairwise(x[i : i + _BLOCK], x)
        radii[i : i + _BLOCK] = np.partition(d, k, axis=1)[:, k]
    return radii


def _subsample(x: np.ndarray, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_samples is None or x.shape[0] <= max_samples:
        return x
    return x[np.sort(rng.choice(x.shape[0], size=max_samples, replace=False))]


def prdc(
    reference: Any,
    generated: Any,
    k: int = PRDC_K,
    max_samples: int | None = PRDC_MAX_SAMPLES,
    seed: int = SEED,
) -> dict[str, float]:
    """``{"precision", "recall", "density", "coverage"}`` of ``generated`` against ``reference``.

    Inputs are used as given (see :func:`prdc_inputs` for the voxel transform); samples larger than
    ``max_samples`` are subsampled without replacement with ``default_rng(seed)`` (reference first).
    """
    x, y = checked_pair(reference, generated)
    k = checked_int("k", k, 1)
    if max_samples is not None:
        max_samples = checked_int("max_samples", max_samples, k + 1)
    rng = np.random.default_rng(seed)
    x = _subsample(x, max_samples, rng)
    y = _subsample(y, max_samples, rng)
    for name, arr in (("reference", x), ("generated", y)):
        if arr.shape[0] <= k:
            raise ValueError(f"{name} needs more than k={k} events, got {arr.shape[0]}")

    real_radii = _knn_radii(x, k)
    fake_radii = _knn_radii(y, k)

    n_real, n_fake = x.shape[0], y.shape[0]
    fake_in_some_ball = np.zeros(n_fake, dtype=bool)
    fake_ball_count = np.zeros(n_fake, dtype=np.int64)
    real_recalled = np.zeros(n_real, dtype=bool)
    real_covered = np.zeros(n_real, dtype=bool)
    for i in range(0, n_real, _BLOCK):
        d = _pairwise(x[i : i + _BLOCK], y)  # (block of reference, all generated)
        inside = d < real_radii[i : i + _BLOCK, None]
        fake_in_some_ball |= inside.any(axis=0)
        fake_ball_count += inside.sum(axis=0)
        real_recalled[i : i + _BLOCK] = (d < fake_radii[None, :]).any(axis=1)
        real_covered[i : i + _BLOCK] = d.min(axis=1) < real_radii[i : i + _BLOCK]

    return {
        "precision": float(fake_in_some_ball.mean()),
        "recall": float(real_recalled.mean()),
        "density": float(fake_ball_count.mean() / k),
        "coverage": float(real_covered.mean()),
    }
