"""Deterministic train/validation/test splits and nested subsets for data-size scans."""

from __future__ import annotations

import numpy as np


def split_indices(n: int, fractions=(0.8, 0.1, 0.1), seed: int = 0) -> dict[str, np.ndarray]:
    """Shuffle ``range(n)`` with ``seed`` and cut it into train / val / test by ``fractions``.

    The same (n, fractions, seed) always gives the same split; each part is sorted.
    """
    fractions = np.asarray(fractions, dtype=float)
    if len(fractions) != 3 or np.any(fractions < 0) or not np.isclose(fractions.sum(), 1):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions.tolist()}")
    order = np.random.default_rng(seed).permutation(n)
    cuts = np.round(np.cumsum(fractions)[:2] * n).astype(int)
    train, val, test = np.split(order, cuts)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def nested_subset(indices: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """The first ``size`` of ``indices`` in a fixed shuffled order (sorted).

    Subsets of one pool with one seed are nested: the 100-shower set lies inside the
    1000-shower set, so a data-size scan only ever adds showers.
    """
    indices = np.asarray(indices)
    if not 0 < size <= len(indices):
        raise ValueError(f"subset size {size} is not within 1..{len(indices)} available showers")
    order = np.random.default_rng(seed).permutation(len(indices))
    return np.sort(indices[order[:size]])
