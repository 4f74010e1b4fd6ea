"""FPD / KPD (JetNet definitions) and PRDC: known answers, properties, determinism."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg

from calofm.evaluate.fpd import (
    format_fpd_kpd,
    fpd,
    fpd_batch_sizes,
    frechet_distance,
    frechet_distance_samples,
    kpd,
    mmd_poly_unbiased,
    normalise_features,
)
from calofm.evaluate.prdc import prdc, prdc_inputs

# small, fast settings (the defaults are sized for 10^4-10^5 events)
FAST_FPD = dict(min_samples=1000, max_samples=4000, num_batches=4, num_points=5)
FAST_KPD = dict(num_batches=5, batch_size=800)


def gaussian(n, mean, cov, seed):
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(mean, cov, size=n).astype(np.float32)


def analytic_fd(mu1, s1, mu2, s2):
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), via the symmetric form."""
    r1 = linalg.sqrtm(s1).real
    eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(eig, 0, None))))


def random_cov(d, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.5 * np.eye(d))


D = 4
MU1 = np.zeros(D)
MU2 = np.array([0.5, -0.3, 0.2, 0.0])
S1 = random_cov(D, 10)
S2 = random_cov(D, 11, scale=1.5)


# ----------------------------------------------------------------------------- Fréchet


def test_frechet_distance_matches_closed_form():
    # diagonal covariances: |dmu|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = np.array([1.0, 2.0, 0.5]), np.array([4.0, 0.5, 0.5])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    want = 1.0 + 4.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-12)
    # full covariances
    assert frechet_distance(MU1, S1, MU2, S2) == pytest.approx(analytic_fd(MU1, S1, MU2, S2), rel=1e-10)
    assert frechet_distance(MU2, S2, MU2, S2) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_singular_covariance_is_finite():
    s = np.diag([1.0, 0.0, 0.0])  # singular product: JetNet's eps fallback
    val = frechet_distance(np.zeros(3), s, np.zeros(3), s)
    assert np.isfinite(val) and abs(val) < 1e-2


def test_frechet_distance_samples_close_to_population():
    x = gaussian(50_000, MU1, S1, 1)
    y = gaussian(50_000, MU2, S2, 2)
    assert frechet_distance_samples(x, y) == pytest.approx(analytic_fd(MU1, S1, MU2, S2), rel=0.03)


def test_batch_sizes_evenly_spaced_in_inverse_n():
    b = fpd_batch_sizes(10_000, 50_000, 10)
    assert b[0] == 10_000 and b[-1] in (49_999, 50_000) and len(b) == 10
    inv = 1 / b.astype(float)
    assert np.allclose(np.diff(inv), np.diff(inv)[0], rtol=1e-3)


# ----------------------------------------------------------------------------- FPD


def test_fpd_identical_gaussians_is_zero_within_error():
    x = gaussian(4000, MU1, S1, 1)
    # one sample against itself: the N -> infinity limit is exactly 0
    val, err, det = fpd(x, x, return_details=True, **FAST_FPD)
    assert val <= 2 * err + 1e-6
    # the error is the intercept's standard error of the unweighted straight-line fit, scaled by the
    # residual variance (curve_fit's absolute_sigma=False)
    design = np.column_stack([np.ones(FAST_FPD["num_points"]), 1 / det["batch_sizes"]])
    resid = det["values"] - design @ [val, det["slope"]]
    cov = np.linalg.inv(design.T @ design) * (resid @ resid) / (len(resid) - 2)
    assert err == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-6)
    # two independent samples of one Gaussian: the limit is the FD between the two
    # finite samples, O(d / n) (like Geant4 vs Geant4), far below a real difference
    y = gaussian(4000, MU1, S1, 2)
    same, _ = fpd(x, y, **FAST_FPD)
    shifted, _ = fpd(x, gaussian(4000, MU2, S1, 2), **FAST_FPD)
    assert same < 2e-3
    assert shifted > 20 * same


def test_fpd_recovers_analytic_frechet_distance():
    x = gaussian(20_000, MU1, S1, 3)
    y = gaussian(20_000, MU2, S2, 4)
    want = analytic_fd(MU1, S1, MU2, S2)
    val, err, det = fpd(x, y, normalise=False, return_details=True, **FAST_FPD)
    assert val == pytest.approx(want, rel=0.05)
    assert err < 0.05 * want
    # finite-N values are biased upwards and the fit extrapolates that bias away
    assert det["values"][0] > val and det["slope"] > 0
    assert det["all_values"].shape == (FAST_FPD["num_points"], FAST_FPD["num_batches"])


def test_fpd_normalisation_uses_reference_max():
    x = gaussian(3000, MU1, S1, 5)
    y = gaussian(3000, MU2, S2, 6)
    scale = np.array([1.0, 10.0, 100.0, 0.1], dtype=np.float32)
    xn, yn = normalise_features(x, y)
    assert np.allclose(np.abs(xn).max(axis=0), 1.0)
    # scaling both samples per feature leaves the normalised FPD unchanged
    a = fpd(x, y, **FAST_FPD)
    b = fpd(x * scale, y * scale, **FAST_FPD)
    assert b[0] == pytest.approx(a[0], rel=1e-4, abs=1e-7)
    # a constant-zero feature does not break the normalisation
    xz = np.concatenate([x, np.zeros((len(x), 1), np.float32)], axis=1)
    yz = np.concatenate([y, np.zeros((len(y), 1), np.float32)], axis=1)
    assert np.isfinite(fpd(xz, yz, **FAST_FPD)[0])


def test_fpd_warns_on_degenerate_inputs_without_changing_values():
    x = gaussian(3000, MU1, S1, 28)
    y = gaussian(3000, MU1, S1, 29)
    # a reference feature that is ~0 (float noise) but not in the generated sample
    xz = np.concatenate([x, np.full((len(x), 1), 1e-10, np.float32)], axis=1)
    yz = np.concatenate([y, np.full((len(y), 1), 0.05, np.float32)], axis=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fpd(xz, yz, **FAST_FPD)
        kpd_value = kpd(xz, yz, **FAST_KPD)
    messages = [str(w.message) for w in caught]
    assert sum("reference's max" in m for m in messages) == 2
    # JetNet's curve_fit does not move from its start on values ~1e17: flagged
    assert value == (1.0, 0.0) and any("non-negative least-squares" in m for m in messages)
    assert np.isfinite(kpd_value[0]) and kpd_value[0] > 1e10  # huge, but no float32 overflow
    # batches not larger than the number of features: singular covariances
    wide = np.random.default_rng(0).normal(size=(400, 50)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fpd(wide, wide, min_samples=40, max_samples=200, num_batches=2, num_points=3)
    assert any("singular" in str(w.message) for w in caught)


def test_fpd_fit_agrees_with_exact_least_squares_in_normal_use():
    x = gaussian(5000, MU1, S1, 30)
    y = gaussian(5000, MU2, S2, 31)
    val, err, det = fpd(x, y, return_details=True, **FAST_FPD)
    assert abs(val - det["intercept_lstsq"]) <= err
    inv_n = 1 / det["batch_sizes"]
    resid = det["values"] - (det["intercept_lstsq"] + det["slope_lstsq"] * inv_n)
    assert np.abs(resid).max() < 0.1 * det["values"].mean()


def test_fpd_deterministic_with_seed():
    x = gaussian(2000, MU1, S1, 7)
    y = gaussian(2000, MU2, S2, 8)
    assert fpd(x, y, seed=3, **FAST_FPD) == fpd(x, y, seed=3, **FAST_FPD)
    assert fpd(x, y, seed=3, **FAST_FPD) != fpd(x, y, seed=4, **FAST_FPD)


def test_fpd_same_subsets_as_jetnet_sampling():
    """The FD of each batch uses the indices JetNet's generator sequence gives."""
    x = gaussian(500, MU1, S1, 9)
    y = gaussian(500, MU2, S2, 10)
    kw = dict(min_samples=200, max_samples=1000, num_batches=2, num_points=3, normalise=False, seed=42)
    _, _, det = fpd(x, y, return_details=True, **kw)
    rng = np.random.default_rng(42)
    for p, n in enumerate(fpd_batch_sizes(200, 1000, 3)):
        for b in range(2):
            xs, ys = x[rng.choice(500, size=n)], y[rng.choice(500, size=n)]
            want = frechet_distance(
                xs.astype(np.float64).mean(0), np.cov(xs.astype(np.float64), rowvar=False),
                ys.astype(np.float64).mean(0), np.cov(ys.astype(np.float64), rowvar=False),
            )
            assert det["all_values"][p, b] == pytest.approx(want, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- KPD


def reference_mmd(x, y, degree=4):
    """Direct float64 transcription of the unbiased estimator."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    g = 1.0 / x.shape[1]
    kxx = (x @ x.T * g + 1) ** degree
    kyy = (y @ y.T * g + 1) ** degree
    kxy = (x @ y.T * g + 1) ** degree
    m, n = len(x), len(y)
    return (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()


def test_mmd_matches_direct_formula_across_blocks():
    x = gaussian(2500, MU1, S1, 11) / 4  # > one 2048-row block: exercises the blocking
    y = gaussian(2300, MU2, S2, 12) / 4
    assert mmd_poly_unbiased(x, y) == pytest.approx(reference_mmd(x, y), rel=1e-4, abs=1e-7)
    assert mmd_poly_unbiased(x, y, degree=3) == pytest.approx(reference_mmd(x, y, 3), rel=1e-4, abs=1e-7)


def test_kpd_identical_is_zero_and_grows_with_shift():
    x = gaussian(3000, MU1, S1, 13)
    y = gaussian(3000, MU1, S1, 14)
    val0, err0 = kpd(x, y, **FAST_KPD)
    assert abs(val0) < 3 * err0 + 1e-4
    vals = []
    for shift in (0.1, 0.3, 1.0):
        vals.append(kpd(x, y + np.float32(shift), **FAST_KPD)[0])
    assert all(v > 0 for v in vals)
    assert vals[0] < vals[1] < vals[2]
    assert vals[0] > abs(val0)


def test_kpd_median_and_error_definition():
    x = gaussian(1500, MU1, S1, 15)
    y = gaussian(1500, MU2, S2, 16)
    med, err, values = kpd(x, y, return_values=True, **FAST_KPD)
    assert med == pytest.approx(np.median(values))
    lo, hi = np.percentile(values, [16.275, 83.725])
    assert err == pytest.approx((hi - lo) / 2)
    # each batch: fresh generator seeded seed + 1000 i, reference indices first
    xn, yn = normalise_features(x, y)
    rng = np.random.default_rng(42 + 1000 * 2)
    i1 = rng.choice(len(x), size=FAST_KPD["batch_size"])
    i2 = rng.choice(len(y), size=FAST_KPD["batch_size"])
    assert values[2] == pytest.approx(reference_mmd(xn[i1], yn[i2]), rel=1e-4, abs=1e-8)


def test_kpd_deterministic_with_seed():
    x = gaussian(1000, MU1, S1, 17)
    y = gaussian(1000, MU2, S2, 18)
    assert kpd(x, y, seed=1, **FAST_KPD) == kpd(x, y, seed=1, **FAST_KPD)
    assert kpd(x, y, seed=1, **FAST_KPD) != kpd(x, y, seed=2, **FAST_KPD)


def test_format_is_times_ten_to_the_three():
    text = format_fpd_kpd((0.0246, 0.0003), (2.3e-5, 1e-5))
    assert text == "FPD (x10^3): 24.6000 ± 0.3000\nKPD (x10^3): 0.0230 ± 0.0100"


# ----------------------------------------------------------------------------- the documented agreement

DOC = Path(__file__).resolve().parents[1] / "docs" / "evaluation-fpd.md"


def agreement_features(seed, n=5000, d=32, shift=0.0):
    """The inputs of the doc's Agreement table (its ``features``)."""
    mixing = np.random.default_rng(0).normal(size=(d, d)) / np.sqrt(d)
    return np.exp(np.random.default_rng(seed).normal(size=(n, d)) @ mixing + shift).astype(np.float32)


def test_the_documented_agreement_table_is_reproduced():
    """docs/evaluation-fpd.md, Agreement: the calofm column, recomputed, to the decimals it shows."""
    text = DOC.read_text()
    table = {(m[1], m[2]): (m[3], m[4]) for m in
             re.finditer(r"^\| (FPD|KPD), (same|shifted) \| [^|]+ \| (\S+) ± (\S+) \|$", text, re.MULTILINE)}
    assert len(table) == 4
    reference = agreement_features(1)
    for case, generated in (("same", agreement_features(2)), ("shifted", agreement_features(2, shift=0.2))):
        fpd_value, fpd_error, details = fpd(reference, generated, min_samples=1000, max_samples=5000,
                                            num_batches=10, num_points=5, return_details=True)
        got = {"FPD": (fpd_value, fpd_error), "KPD": kpd(reference, generated, num_batches=10, batch_size=1000)}
        for metric, pair in got.items():
            for value, shown in zip(pair, table[metric, case]):
                decimals = len(shown.split(".")[1])
                assert value * 1e3 == pytest.approx(float(shown), abs=0.5 * 10.0**-decimals), (metric, case)
        if case == "same":  # the curve_fit caveat's example
            shown = re.search(r"least-squares intercept is\s+(\S+) x 10\^-3", text)[1]
            assert details["intercept_lstsq"] * 1e3 == pytest.approx(float(shown), abs=0.5e-6)


# ----------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros(10), np.zeros((10, 1)), "2-D"),
        (np.zeros((10, 3)), np.zeros((10, 4)), "features"),
        (np.full((10, 2), np.nan), np.zeros((10, 2)), "NaN"),
        (np.zeros((1, 2)), np.zeros((10, 2)), "at least 2"),
    ],
)
def test_bad_inputs_are_rejected(x, y, match):
    with pytest.raises(ValueError, match=match):
        fpd(x, y)
    with pytest.raises(ValueError, match=match):
        kpd(x, y)
    with pytest.raises(ValueError, match=match):
        prdc(x, y)


def test_bad_parameters_are_rejected():
    x = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(ValueError, match="max_samples"):
        fpd(x, x, min_samples=100, max_samples=50)
    with pytest.raises(ValueError, match="num_points"):
        fpd(x, x, num_points=1)
    with pytest.raises(ValueError, match="batch_size"):
        kpd(x, x, batch_size=1)
    with pytest.raises(ValueError, match="more than k"):
        prdc(x[:5], x, k=5, max_samples=None)


# ----------------------------------------------------------------------------- PRDC


def test_prdc_identical_array_is_one():
    x = gaussian(600, MU1, S1, 19)
    r = prdc(x, x, k=5)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["coverage"] == 1.0
    assert r["density"] == pytest.approx(1.0, abs=0.1)


def test_prdc_same_distribution_near_one():
    x = gaussian(2000, MU1, S1, 20)
    y = gaussian(2000, MU1, S1, 21)
    r = prdc(x, y, k=5)
    assert r["precision"] > 0.85 and r["recall"] > 0.85
    assert r["density"] == pytest.approx(1.0, abs=0.15)
    assert r["coverage"] > 0.9


def test_prdc_precision_drops_for_far_shift():
    x = gaussian(1500, MU1, S1, 22)
    y = gaussian(1500, MU1, S1, 23) + np.float32(10.0)
    r = prdc(x, y, k=5)
    assert r["precision"] < 0.05 and r["density"] < 0.05
    assert r["recall"] < 0.05 and r["coverage"] < 0.05


def test_prdc_matches_brute_force_definition():
    x = gaussian(300, MU1, S1, 24)
    y = gaussian(250, MU2, S2, 25)
    k = 3
    dxx = np.linalg.norm(x[:, None] - x[None], axis=-1)
    dyy = np.linalg.norm(y[:, None] - y[None], axis=-1)
    dxy = np.linalg.norm(x[:, None] - y[None], axis=-1)
    rr = np.sort(dxx, axis=1)[:, k]
    rf = np.sort(dyy, axis=1)[:, k]
    want = {
        "precision": (dxy < rr[:, None]).any(axis=0).mean(),
        "recall": (dxy < rf[None, :]).any(axis=1).mean(),
        "density": (dxy < rr[:, None]).sum(axis=0).mean() / k,
        "coverage": (dxy.min(axis=1) < rr).mean(),
    }
    got = prdc(x, y, k=k)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-2), key


def test_prdc_subsampling_is_seeded():
    x = gaussian(1200, MU1, S1, 26)
    y = gaussian(1200, MU2, S2, 27)
    a = prdc(x, y, max_samples=500, seed=1)
    assert a == prdc(x, y, max_samples=500, seed=1)
    assert a != prdc(x, y, max_samples=500, seed=2)


def test_prdc_inputs_log10_with_floor():
    showers = np.array([[[0.0, 1.0], [100.0, 0.05]], [[-1.0, 10.0], [0.1, 1000.0]]])
    out = prdc_inputs(showers)
    assert out.shape == (2, 4) and out.dtype == np.float32
    assert np.allclose(out, [[-1, 0, 2, np.log10(0.05)], [-1, 1, -1, 3]])
    assert np.allclose(prdc_inputs(showers, floor=1e-3)[0, 0], -3)
    with pytest.raises(ValueError):
        prdc_inputs(showers, floor=0)
