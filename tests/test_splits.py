import numpy as np
import pytest

from calofm.data import nested_subset, split_indices


def test_splits_are_disjoint_complete_and_deterministic():
    parts = split_indices(1000, (0.8, 0.1, 0.1), seed=3)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(1000))
    again = split_indices(1000, (0.8, 0.1, 0.1), seed=3)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = split_indices(1000, (0.8, 0.1, 0.1), seed=4)
    assert not np.array_equal(parts["val"], other["val"])


def test_subsets_for_data_size_scans_are_nested():
    pool = split_indices(100_000, seed=0)["train"]
    sizes = [100, 1000, 10_000, 80_000]
    subsets = [nested_subset(pool, size, seed=1) for size in sizes]
    assert [len(s) for s in subsets] == sizes
    for small, large in zip(subsets, subsets[1:]):
        assert np.all(np.isin(small, large))
    assert np.all(np.isin(subsets[-1], pool))
    assert np.array_equal(nested_subset(pool, 100, seed=1), subsets[0])


def test_bad_split_requests():
    with pytest.raises(ValueError, match="summing to 1"):
        split_indices(10, (0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="subset size 200 is not within 1..100"):
        nested_subset(np.arange(100), 200)
