"""The three voxel orders of a regular (n_z, n_alpha, n_r) mesh, and exact conversions among them.

- ``calochallenge``: (N, n_z * n_alpha * n_r), z slowest, then alpha, r fastest.
- ``lemurs``: (N, n_r, n_alpha, n_z) array in (r, phi, z) order.
- ``par04``: (N, n_r * n_alpha * n_z), Geant4 Par04 output filling, r outer, phi, z inner.
The alpha bin of the CaloChallenge is the phi bin of LEMURS and Par04 (same index).
"""

from __future__ import annotations

import numpy as np

ORDERS = ("calochallenge", "lemurs", "par04")


def _to_zar(showers: np.ndarray, order: str, shape: tuple[int, int, int]) -> np.ndarray:
    n_z, n_a, n_r = shape
    n = len(showers)
    if order == "calochallenge":
        return showers.reshape(n, n_z, n_a, n_r)
    if order in ("lemurs", "par04"):
        return showers.reshape(n, n_r, n_a, n_z).transpose(0, 3, 2, 1)
    raise ValueError(f"unknown voxel order {order!r}; known: {', '.join(ORDERS)}")


def reorder(showers: np.ndarray, src: str, dst: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Convert showers from voxel order ``src`` to ``dst`` for a mesh of ``shape`` = (n_z, n_alpha, n_r)."""
    showers = np.asarray(showers)
    expected = int(np.prod(shape))
    if showers.size != len(showers) * expected:
        raise ValueError(f"showers of shape {showers.shape} do not hold {expected} voxels per shower")
    zar = _to_zar(showers, src, shape)
    n = len(showers)
    if dst == "calochallenge":
        out = zar.reshape(n, -1)
    elif dst == "lemurs":
        out = zar.transpose(0, 3, 2, 1)
    elif dst == "par04":
        out = zar.transpose(0, 3, 2, 1).reshape(n, -1)
    else:
        raise ValueError(f"unknown voxel order {dst!r}; known: {', '.join(ORDERS)}")
    return np.ascontiguousarray(out)
