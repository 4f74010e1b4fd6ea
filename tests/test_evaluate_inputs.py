"""The one input check of the metrics: shapes, sizes, dtypes and finiteness, one-line errors."""

import numpy as np
import pytest
import torch

from calofm.evaluate.inputs import (
    checked_array,
    checked_int,
    checked_pair,
    checked_weights,
)


class Refused(ValueError):
    pass


def test_arrays_are_converted_without_copies_where_possible():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert checked_array(x, "x", ndim=2, dtype=np.float32) is x
    assert checked_array(x, "x", ndim=2, dtype=None) is x  # floating dtypes are kept
    assert checked_array(x.astype(np.int64), "x", ndim=2, dtype=None).dtype == np.float32
    assert checked_array(torch.ones(4), "t").dtype == np.float64
    assert checked_array([True, False], "b").tolist() == [1.0, 0.0]


@pytest.mark.parametrize("x, kw, message", [
    (np.zeros(3), {"ndim": 2}, "x must be a 2-D array, got shape (3,)"),
    (np.zeros((2, 2, 2)), {"ndim": (1, 2)}, "x must be a 1-D or 2-D array, got shape (2, 2, 2)"),
    (np.zeros(0), {}, "x is empty"),
    (np.zeros((1, 3)), {"ndim": 2, "min_rows": 2}, "x needs at least 2 events, got 1"),
    (np.zeros((3, 0)), {"ndim": 2}, "x has no features"),
    (np.array(["a", "b"]), {}, "x must be real numbers, got dtype <U1"),
    (np.array([1j, 2]), {}, "x must be real numbers, got dtype complex128"),
    (np.array([1.0, np.nan, -np.inf]), {"dtype": np.float32}, "x has 2 non-finite values (NaN or inf)"),
])
def test_each_refusal_is_one_line_in_the_callers_error_class(x, kw, message):
    with pytest.raises(Refused) as info:
        checked_array(x, "x", error=Refused, **kw)
    assert str(info.value) == message


def test_non_finite_values_are_counted_across_chunks():
    x = np.zeros((3000, 1000), np.float32)  # three chunks of 2^20 values
    x[[5, 1100, 2999], [0, 7, 999]] = np.nan
    with pytest.raises(ValueError, match="3 non-finite"):
        checked_array(x, "x", ndim=2)


def test_pairs_integers_and_weights():
    with pytest.raises(ValueError, match="reference has 2 features per event but generated has 3"):
        checked_pair(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(TypeError, match="integer"):
        checked_int("k", True, 1)
    with pytest.raises(ValueError, match="k must be at least 2, got 1"):
        checked_int("k", np.int64(1), 2)
    assert checked_weights(None, 3, "w") is None
    with pytest.raises(ValueError, match="w has 2 weights for 3 values"):
        checked_weights([1, 2], 3, "w")
    with pytest.raises(ValueError, match="non-negative"):
        checked_weights([1, -2, 3], 3, "w")
