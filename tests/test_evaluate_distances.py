import math

import numpy as np
import pytest
from scipy.stats import entropy

from calofm.evaluate.distances import (
    OBSERVABLE_DEFINITIONS,
    SIX_OBSERVABLES,
    bootstrap,
    geometric_mean,
    histogram_edges,
    kl_quantile,
    observable_distances,
    profile_distances,
    separation_power,
    six_observable_geometric_mean,
    six_observables,
    wasserstein_normalised,
)


def _gauss(n, seed, loc=10.0, scale=2.0):
    return np.random.default_rng(seed).normal(loc, scale, n)


def _profiles(n, seed, scale=1.0, shift=0.0, n_bins=20):
    """(n, n_bins) energy per bin: a Gaussian-ish shower profile with per-shower jitter."""
    rng = np.random.default_rng(seed)
    centre = 8.0 * scale + shift + rng.normal(0, 1.0, (n, 1))
    x = np.arange(n_bins)[None, :]
    return rng.gamma(50.0, 1.0, (n, 1)) * np.exp(-0.5 * ((x - centre) / (3.0 * scale)) ** 2)


# --- identical samples ------------------------------------------------------------------------

def test_identical_samples_give_zero():
    x = _gauss(5000, 0)
    assert wasserstein_normalised(x, x) == pytest.approx(0.0, abs=1e-12)
    assert kl_quantile(x, x) == pytest.approx(0.0, abs=1e-12)
    assert separation_power(x, x, histogram_edges(x, x, 40)) == pytest.approx(0.0, abs=1e-12)
    p = _profiles(200, 1)
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in profile_distances(p, p).values())


# --- separation power -------------------------------------------------------------------------

def test_separation_power_disjoint_is_one_and_matches_calochallenge_formula():
    a, b = _gauss(1000, 0, loc=0, scale=1), _gauss(1000, 1, loc=100, scale=1)
    assert separation_power(a, b, histogram_edges(a, b, 50)) == pytest.approx(1.0)
    # CaloChallenge: density histograms times bin width, 1e-16 in the denominator
    x, y = _gauss(3000, 2), _gauss(3000, 3, loc=10.5)
    bins = np.linspace(0, 20, 33)
    h1 = np.histogram(x, bins, density=True)[0] * np.diff(bins)
    h2 = np.histogram(y, bins, density=True)[0] * np.diff(bins)
    expected = 0.5 * np.sum((h1 - h2) ** 2 / (h1 + h2 + 1e-16))
    assert separation_power(x, y, bins) == pytest.approx(expected, rel=1e-12)
    assert 0.0 < expected < 1.0


def test_separation_power_hand_computed():
    # reference: 3 in bin 0, 1 in bin 1 -> (0.75, 0.25); generated: 1, 1, 2 -> (0.25, 0.25, 0.5)
    ref, gen = [0.5, 0.5, 0.5, 1.5], [0.5, 1.5, 2.5, 2.5]
    expected = 0.5 * (0.5**2 / 1.0 + 0 + 0.5**2 / 0.5)
    assert separation_power(ref, gen, [0, 1, 2, 3]) == pytest.approx(expected)


def test_histogram_edges_log_ignores_non_positive():
    edges = histogram_edges([-1.0, 0.0, 1.0, 10.0], [100.0], n_bins=2, log=True)
    np.testing.assert_allclose(edges, [1.0, 10.0, 100.0])
    edges = histogram_edges([3.0], [3.0], n_bins=4)
    assert edges[0] == 2.5 and edges[-1] == 3.5 and len(edges) == 5


# --- Wasserstein ------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [0.1, 1.0, 3.0])
def test_wasserstein_of_a_shift_is_shift_over_std(d):
    x = _gauss(4000, 5)
    assert wasserstein_normalised(x, x + d) == pytest.approx(d / np.std(x, ddof=1), rel=1e-9)
    assert wasserstein_normalised(x, x - d) == pytest.approx(d / np.std(x, ddof=1), rel=1e-9)


def test_wasserstein_constant_reference_is_not_divided_by_zero():
    assert wasserstein_normalised([2.0, 2.0, 2.0], [3.0, 3.0]) == pytest.approx(1.0)


def test_profile_wasserstein_of_a_one_bin_shift():
    p = _profiles(300, 7, n_bins=30)
    p[:, -1] = 0.0  # nothing leaves the range
    shifted = np.zeros_like(p)
    shifted[:, 1:] = p[:, :-1]
    w = p.sum(axis=0)
    x = np.arange(30.0)
    std = np.sqrt(np.average((x - np.average(x, weights=w)) ** 2, weights=w))
    assert profile_distances(p, shifted)["wasserstein"] == pytest.approx(1.0 / std, rel=1e-9)
    # positions in mm: the normalised distance is unit-free
    assert profile_distances(p, shifted, positions=2.325 * x + 1)["wasserstein"] == pytest.approx(1.0 / std, rel=1e-9)


# --- KL ---------------------------------------------------------------------------------------

def test_kl_matches_calotransfer_recipe_and_grows_with_shift():
    x, y = _gauss(5000, 8), _gauss(5000, 9)
    edges = np.quantile(x, np.linspace(0, 1, 31))
    edges[0], edges[-1] = -np.inf, np.inf
    pk = np.histogram(x, edges)[0] / len(x) + 1e-6
    qk = np.histogram(y, edges)[0] / len(y) + 1e-6
    assert kl_quantile(x, y) == pytest.approx(entropy(pk, qk), rel=1e-12)
    values = [kl_quantile(x, y + d) for d in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[0] < 0.01


def test_kl_empty_generated_bins_are_finite():
    x = _gauss(3000, 10)
    v = kl_quantile(x, x + 1000.0)  # everything in the last bin
    assert math.isfinite(v)
    # 29 of 30 bins empty: sum over them of (1/30) log((1/30) / 1e-6) dominates
    assert v == pytest.approx(29 / 30 * math.log((1 / 30) / 1e-6) + 1 / 30 * math.log(1 / 30), rel=1e-3)


# --- monotonic response to miscalibration ----------------------------------------------------

def _all_distances(ref, gen, bins):
    return np.array([wasserstein_normalised(ref, gen), kl_quantile(ref, gen), separation_power(ref, gen, bins)])


def test_energy_scale_and_width_move_all_distances_up():
    ref = np.random.default_rng(11).lognormal(np.log(1000.0), 0.1, 20000)
    gen = np.random.default_rng(12).lognormal(np.log(1000.0), 0.1, 20000)
    bins = histogram_edges(ref, np.concatenate([gen * 0.5, gen * 2.0]), 60)
    scale = np.array([_all_distances(ref, gen * s, bins) for s in (1.0, 1.05, 1.10)])
    assert np.all(np.diff(scale, axis=0) > 0), scale
    mean = gen.mean()
    width = np.array([_all_distances(ref, mean + (gen - mean) * s, bins) for s in (1.0, 1.2, 1.4)])
    assert np.all(np.diff(width, axis=0) > 0), width
    # a 5 % scale on a 10 %-wide peak is large: ~0.5 reference std
    assert scale[1, 0] == pytest.approx(0.05 * 1000 / np.std(ref, ddof=1), rel=0.1)


def test_profile_distances_grow_with_shift_and_width():
    ref, gen = _profiles(2000, 13), _profiles(2000, 14)
    shift = np.array([list(profile_distances(ref, _profiles(2000, 14, shift=s)).values()) for s in (0.0, 0.5, 1.0)])
    assert np.all(np.diff(shift, axis=0) > 0), shift
    width = np.array([list(profile_distances(ref, _profiles(2000, 14, scale=s)).values()) for s in (1.0, 1.2, 1.4)])
    assert np.all(np.diff(width, axis=0) > 0), width
    assert list(profile_distances(ref, gen)) == ["wasserstein", "kl", "separation_power"]


# --- geometric mean ---------------------------------------------------------------------------

def test_geometric_mean_hand_computation():
    y = np.array([0.1, 0.4, 1.6])
    s = np.array([0.01, 0.02, 0.32])
    gm, err = geometric_mean(y, s)
    assert gm == pytest.approx(0.4, rel=1e-8)  # (0.1 * 0.4 * 1.6) ** (1/3) = 0.4
    # equal weights: GM / n * sqrt(sum (s/y)^2) = 0.4 / 3 * sqrt(0.01 + 0.0025 + 0.04)
    assert err == pytest.approx(0.4 / 3 * math.sqrt(0.0525), rel=1e-8)


def test_geometric_mean_appendix_f_weights_and_epsilon():
    y = np.array([0.0, 2.0])
    s = np.array([1e-11, 0.2])
    gm, err = geometric_mean(y, s, weights=[1, 3])  # normalised to (0.25, 0.75)
    eps = 1e-10
    mean_log = 0.25 * math.log10(eps) + 0.75 * math.log10(2 + eps)
    sigma_l = math.sqrt((0.25 * 1e-11 / (eps * math.log(10))) ** 2 + (0.75 * 0.2 / ((2 + eps) * math.log(10))) ** 2)
    assert gm == pytest.approx(10**mean_log, rel=1e-10)
    assert err == pytest.approx(10**mean_log * math.log(10) * sigma_l, rel=1e-10)


def test_six_observable_geometric_mean():
    values = dict(zip(SIX_OBSERVABLES, [0.1, 0.2, 0.4, 0.8, 1.6, 3.2]))
    distances = {k: {"wasserstein": (v, 0.1 * v), "kl": (1.0, 0.0)} for k, v in values.items()}
    gm, err = six_observable_geometric_mean(distances)
    assert gm == pytest.approx((0.1 * 0.2 * 0.4 * 0.8 * 1.6 * 3.2) ** (1 / 6), rel=1e-8)
    assert err == pytest.approx(gm / 6 * math.sqrt(6 * 0.01), rel=1e-8)
    assert six_observable_geometric_mean(distances, "kl")[0] == pytest.approx(1.0)
    del distances["occupancy"]
    with pytest.raises(KeyError, match="occupancy"):
        six_observable_geometric_mean(distances)


# --- bootstrap --------------------------------------------------------------------------------

def test_bootstrap_std_shrinks_like_one_over_sqrt_n():
    def mean_difference(a, b):
        return float(np.mean(b) - np.mean(a))

    stds = {}
    for n in (500, 8000):
        value, std = bootstrap(mean_difference, _gauss(n, 20), _gauss(n, 21), n=300, seed=1)
        assert value == pytest.approx(mean_difference(_gauss(n, 20), _gauss(n, 21)))
        assert std == pytest.approx(2.0 * math.sqrt(2.0 / n), rel=0.15)  # sigma * sqrt(1/n + 1/n)
        stds[n] = std
    assert stds[500] / stds[8000] == pytest.approx(4.0, rel=0.2)
    w = {n: bootstrap(wasserstein_normalised, _gauss(n, 22), _gauss(n, 23), n=100)[1] for n in (500, 8000)}
    assert 2.5 < w[500] / w[8000] < 6.5


def test_bootstrap_is_seeded():
    a, b = _gauss(300, 1), _gauss(300, 2)
    first = bootstrap(wasserstein_normalised, a, b, n=10, seed=3)
    assert bootstrap(wasserstein_normalised, a, b, n=10, seed=3) == first
    assert bootstrap(wasserstein_normalised, a, b, n=10, seed=4)[1] != first[1]
    assert math.isnan(bootstrap(wasserstein_normalised, a, b, n=1)[1])


# --- observables ------------------------------------------------------------------------------

def _toy_showers(n, seed, e_scale=1.0):
    rng = np.random.default_rng(seed)
    e_inc = rng.uniform(1e3, 1e4, n)
    shape = (6, 4, 5)
    base = np.exp(-0.5 * ((np.arange(6)[:, None, None] - 2.5) / 1.5) ** 2) * np.exp(-np.arange(5))[None, None, :]
    showers = rng.gamma(2.0, 1.0, (n, *shape)) * base * (e_inc[:, None, None, None] / base.sum() / 2)
    showers[showers < 0.5] = 0.0
    return showers.reshape(n, -1) * e_scale, e_inc, shape


def test_six_observables_definitions():
    showers, e_inc, shape = _toy_showers(50, 0)
    obs = six_observables(showers, e_inc[:, None], shape, threshold=1.0, chunk=7)
    # the six, and the centre of gravity of the next-token calorimeter foundation model
    assert set(obs) == set(SIX_OBSERVABLES) == set(OBSERVABLE_DEFINITIONS) - {"z_centre"}
    active = np.where(showers > 1.0, showers, 0.0)
    np.testing.assert_allclose(obs["visible_energy"], active.sum(axis=1))
    np.testing.assert_allclose(obs["energy_ratio"], active.sum(axis=1) / e_inc)
    np.testing.assert_allclose(obs["occupancy"], (showers > 1.0).mean(axis=1))
    np.testing.assert_allclose(np.sort(obs["voxel_energy"]), np.sort(showers[showers > 1.0]))
    np.testing.assert_allclose(obs["longitudinal_profile"], active.reshape(50, *shape).sum(axis=(2, 3)))
    np.testing.assert_allclose(obs["radial_profile"], active.reshape(50, *shape).sum(axis=(1, 2)))
    with pytest.raises(ValueError, match="mesh"):
        six_observables(showers, e_inc, (6, 4, 4))


def test_observable_distances_end_to_end():
    ref = six_observables(*_toy_showers(400, 1)[:2], (6, 4, 5))
    same = six_observables(*_toy_showers(400, 2)[:2], (6, 4, 5))
    showers, e_inc, shape = _toy_showers(400, 2, e_scale=1.2)
    scaled = six_observables(showers, e_inc, shape)
    d_same = observable_distances(ref, same, n_bootstrap=5)
    d_scaled = observable_distances(ref, {**scaled, "extra": np.ones(3)}, n_bootstrap=5)
    assert list(d_same) == list(SIX_OBSERVABLES) and list(d_scaled) == list(SIX_OBSERVABLES)
    for key in ("energy_ratio", "visible_energy", "voxel_energy"):
        for metric in ("wasserstein", "kl", "separation_power"):
            value, err = d_scaled[key][metric]
            assert value > d_same[key][metric][0] and err > 0
    gm_same, _ = six_observable_geometric_mean(d_same)
    gm_scaled, err = six_observable_geometric_mean(d_scaled)
    assert gm_scaled > gm_same and err > 0
    # reproducible and identical for the same seed
    assert observable_distances(ref, same, n_bootstrap=5) == d_same


def test_a_generated_sample_without_deposits_is_infinitely_far():
    ref = six_observables(*_toy_showers(100, 1)[:2], (6, 4, 5))
    showers, e_inc, shape = _toy_showers(100, 2)
    empty = six_observables(np.zeros_like(showers), e_inc, shape)
    d = observable_distances(ref, empty, n_bootstrap=3)
    for key in ("voxel_energy", "longitudinal_profile", "radial_profile"):
        assert d[key]["wasserstein"][0] == math.inf and d[key]["separation_power"] == (1.0, 0.0)
    assert math.isfinite(d["energy_ratio"]["wasserstein"][0])  # per-shower observables stay defined
    gm, err = six_observable_geometric_mean(d)
    assert gm == math.inf and math.isnan(err)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="non-finite"):
        wasserstein_normalised([1.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="empty"):
        kl_quantile([], [1.0])
    with pytest.raises(ValueError, match="both be"):
        observable_distances({"a": np.ones(3)}, {"a": np.ones((3, 2))})
    with pytest.raises(ValueError, match="values and errors"):
        geometric_mean([1.0, 2.0], [0.1])


@pytest.mark.parametrize("discrete", [False, True])
def test_observable_distance_errors_are_the_bootstrap_of_each_metric(discrete):
    rng = np.random.default_rng(30)
    ref, gen = rng.lognormal(0, 1, 3000), rng.lognormal(0.05, 1.1, 2500)
    if discrete:  # ties and repeated quantile edges, as occupancy counts
        ref, gen = np.round(ref * 3), np.round(gen * 3)
    seed = [5, 6]  # a non-int seed is used as is for every key
    d = observable_distances({"x": ref}, {"x": gen}, n_bootstrap=12, seed=seed, n_bins=25, log_binned={"x"})["x"]
    edges = histogram_edges(ref, gen, 25, log=True)
    expected = {
        "wasserstein": bootstrap(wasserstein_normalised, ref, gen, n=12, seed=seed),
        "kl": bootstrap(kl_quantile, ref, gen, n=12, seed=seed),
        "separation_power": bootstrap(lambda r, g: separation_power(r, g, edges), ref, gen, n=12, seed=seed),
    }
    for name, (value, err) in expected.items():
        assert d[name][0] == pytest.approx(value, rel=1e-12)
        assert d[name][1] == pytest.approx(err, rel=1e-6)
        assert err > 0
