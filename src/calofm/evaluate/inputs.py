"""Input checks shared by the metrics: real, finite arrays of the right shape, one-line errors."""

from __future__ import annotations

from typing import Any

import numpy as np

_CHUNK = 1 << 20  # values per finiteness check: no full-size temporary


def checked_array(
    x: Any,
    name: str,
    ndim: int | tuple[int, ...] = 1,
    min_rows: int = 1,
    dtype: Any = np.float64,
    error: type[Exception] = ValueError,
) -> np.ndarray:
    """``x`` (array-like or torch tensor) as a real, finite array; ``error`` names what is wrong.

    Checks the number of dimensions (``ndim``, one or several allowed), at least ``min_rows``
    rows, at least one column for 2-D arrays, a real (or boolean) dtype, and finiteness after
    the conversion to ``dtype``. ``dtype=None`` keeps a floating dtype and turns any other into
    float32. No copy is made when ``x`` already has the dtype.
    """
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if a.ndim not in dims:
        raise error(f"{name} must be a {' or '.join(f'{d}-D' for d in dims)} array, got shape {a.shape}")
    if len(a) < min_rows:
        raise error(f"{name} is empty" if len(a) == 0 else f"{name} needs at least {min_rows} events, got {len(a)}")
    if a.ndim == 2 and a.shape[1] == 0:
        raise error(f"{name} has no features")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
        raise error(f"{name} must be real numbers, got dtype {a.dtype}")
    if dtype is None:
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.float32
    a = a.astype(dtype, copy=False)
    rows = max(1, _CHUNK // max(1, int(np.prod(a.shape[1:]))))
    bad = sum(int(np.count_nonzero(~np.isfinite(a[i : i + rows]))) for i in range(0, len(a), rows))
    if bad:
        raise error(f"{name} has {bad} non-finite values (NaN or inf)")
    return a


def checked_pair(
    reference: Any, generated: Any, min_rows: int = 2, dtype: Any = np.float32, error: type[Exception] = ValueError
) -> tuple[np.ndarray, np.ndarray]:
    """Two 2-D samples of (events, features) checked by :func:`checked_array`, with equal feature counts."""
    x = checked_array(reference, "reference", 2, min_rows, dtype, error)
    y = checked_array(generated, "generated", 2, min_rows, dtype, error)
    if x.shape[1] != y.shape[1]:
        raise error(f"reference has {x.shape[1]} features per event but generated has {y.shape[1]}")
    return x, y


def checked_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int (bools refused) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def checked_weights(w: Any, n: int, name: str) -> np.ndarray | None:
    """``None``, or ``n`` finite non-negative float64 weights with a positive sum."""
    if w is None:
        return None
    w = checked_array(w, name)
    if len(w) != n:
        raise ValueError(f"{name} has {len(w)} weights for {n} values")
    if np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"{name} must be non-negative with a positive sum")
    return w
