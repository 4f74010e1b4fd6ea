"""Fréchet and kernel physics distances (FPD, KPD), as JetNet computes them.

FPD (:func:`fpd`) is the ``N -> infinity`` intercept of a straight-line fit in ``1/N`` to the
Fréchet distance between Gaussians fitted to random batches of ``N`` reference and ``N`` generated
events; KPD (:func:`kpd`) is the median over batches of the unbiased MMD^2 with the kernel
``(x . y / d + 1)^4``. Both follow the JetNet package (``jetnet`` 0.2.5; Kansal et al.,
arXiv:2211.10295) with the CaloChallenge's call (``min_samples=10000``, ``batch_size=10000``), in an
independent implementation (``jetnet`` is not a dependency) that draws the same random subsets, so
the numbers agree with JetNet's to rounding. The reference, always the first argument, sets the
normalisation. Both are printed x 10^3 (:func:`format_fpd_kpd`).

The algorithm step by step, where each default comes from, the precision and the check against
JetNet: ``docs/evaluation-fpd.md``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np
from scipy import linalg
from scipy.optimize import curve_fit, nnls
from scipy.stats import iqr

from calofm.evaluate.inputs import checked_int, checked_pair

__all__ = [
    "normalise_features",
    "fpd_batch_sizes",
    "frechet_distance",
    "frechet_distance_samples",
    "fpd",
    "mmd_poly_unbiased",
    "kpd",
    "format_fpd_kpd",
]

# CaloChallenge evaluate.py call site (docs/evaluation-fpd.md)
FPD_MIN_SAMPLES = 10_000
KPD_BATCH_SIZE = 10_000
# JetNet 0.2.5 defaults
FPD_MAX_SAMPLES = 50_000
FPD_NUM_BATCHES = 20
FPD_NUM_POINTS = 10
KPD_NUM_BATCHES = 10
KPD_DEGREE = 4
SEED = 42
FD_EPS = 1e-6
KPD_PERCENTILES = (16.275, 83.725)

_BLOCK = 2048  # rows per block of a kernel matrix


# ----------------------------------------------------------------------------- helpers


def normalise_features(
    reference: np.ndarray, generated: np.ndarray | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Divide by the reference's per-feature max |x| (1 where that is 0), as JetNet does."""
    maxes = np.max(np.abs(reference), axis=0)
    maxes = np.where(maxes == 0, 1, maxes).astype(reference.dtype, copy=False)
    if generated is None:
        return reference / maxes
    return reference / maxes, generated / maxes


def _normalise_checked(x: np.ndarray, y: np.ndarray, limit: float = 1e3) -> tuple[np.ndarray, np.ndarray]:
    """normalise_features plus a warning when the generated sample dwarfs the reference.

    A feature whose reference values are all ~0 (float noise of an exactly-zero feature)
    gets a tiny scale, and a generated sample that is not ~0 there becomes huge after
    normalisation and swamps FPD and KPD. JetNet does the same silently; the numbers are
    not changed here, only reported.
    """
    xn, yn = normalise_features(x, y)
    worst = np.abs(yn).max(axis=0)
    bad = np.flatnonzero(worst > limit)
    if bad.size:
        order = bad[np.argsort(-worst[bad])][:5]
        ref_max = np.abs(x).max(axis=0)
        listing = ", ".join(
            f"#{j}: reference max {ref_max[j]:.3g}, generated {worst[j] * (ref_max[j] or 1):.3g}" for j in order
        )
        warnings.warn(
            f"{bad.size} features reach more than {limit:g} x the reference's max |x| after "
            f"normalisation and dominate the distance ({listing})",
            RuntimeWarning,
            stacklevel=3,
        )
    return xn, yn


# ----------------------------------------------------------------------------- Fréchet


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = FD_EPS
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), computed as JetNet does.

    ``|mu1 - mu2|^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr(sqrtm(sigma1 @ sigma2))`` in float64;
    ``eps`` is added to both diagonals if the square root is not finite, and the real
    part of a complex square root is kept.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(
            f"covariances {sigma1.shape}, {sigma2.shape} do not fit means of length {mu1.size}"
        )
    diff = mu1 - mu2

    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))

    if np.iscomplexobj(covmean):
        re_trace = np.trace(covmean.real)
        im_trace = np.trace(covmean.imag)
        small = np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3) or (
            re_trace != 0 and np.isclose(im_trace / re_trace, 0, atol=1e-3)
        )
        if not small:
            warnings.warn(
                "Large imaginary components in covariance matrix while calculating "
                f"Fréchet distance Im: {im_trace:.2f} Re: {re_trace:.2f}",
                RuntimeWarning,
                stacklevel=3,
            )
        covmean = covmean.real

    tr1, tr2 = float(np.trace(sigma1)), float(np.trace(sigma2))
    tr_covmean = float(np.trace(covmean))
    # Tr sqrt(S1 S2) is the nuclear norm of S2^(1/2) S1^(1/2): 0 <= it <= sqrt(Tr S1 Tr S2).
    # sqrtm's Schur recursion can leave that range by orders of magnitude when both
    # covariances are singular (fewer events than features, constant features); JetNet
    # then reports garbage. Only in that case use the exact symmetric eigenvalue form.
    bound = np.sqrt(max(tr1, 0.0) * max(tr2, 0.0))
    slack = 1e-6 * bound + 1e-12 * (abs(tr1) + abs(tr2))
    if not (np.isfinite(tr_covmean) and -slack <= tr_covmean <= bound + slack):
        warnings.warn(
            f"scipy.linalg.sqrtm gave Tr sqrt(S1 S2) = {tr_covmean:.4g} outside [0, {bound:.4g}] "
            "(singular covariances: too few events for the number of features, or constant "
            "features); using the symmetric eigenvalue form instead",
            RuntimeWarning,
            stacklevel=3,
        )
        tr_covmean = _trace_sqrt_product(sigma1, sigma2)

    return float(diff @ diff + tr1 + tr2 - 2.0 * tr_covmean)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr sqrt(S1 S2) for symmetric PSD S1, S2 via the eigenvalues of S1^(1/2) S2 S1^(1/2)."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(root @ ((sigma2 + sigma2.T) / 2) @ root)
    return float(np.sum(np.sqrt(np.clip(lam, 0, None))))


_THREADPOOLS: Any = None


def _one_blas_thread():
    """Context that runs BLAS/LAPACK single-threaded (no-op without threadpoolctl).

    ``sqrtm`` of a few-hundred-square matrix is made of many small LAPACK/BLAS calls; on
    a busy machine OpenBLAS's spinning worker threads slow it down many times over.
    """
    global _THREADPOOLS
    if _THREADPOOLS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _THREADPOOLS = ThreadpoolController()
        except Exception:  # pragma: no cover - threadpoolctl comes with scikit-learn
            _THREADPOOLS = False
    if _THREADPOOLS is False:  # pragma: no cover
        return contextlib.nullcontext()
    return _THREADPOOLS.limit(limits=1, user_api="blas")


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings(), _one_blas_thread():
        # singular products are handled by the caller (eps offset), as in JetNet
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        try:
            return linalg.sqrtm(a)
        except (linalg.LinAlgError, ValueError):
            return np.full_like(a, np.nan)


class _Rows:
    """Reusable buffers for gathering batch rows as float64 (through a float32 one for float32 data).

    Every FD batch gathers up to ``max_samples`` rows; reusing the buffers avoids
    allocating (and page-faulting) fresh arrays of that size per batch.
    """

    def __init__(self, rows: int, features: int, dtype=np.float32):
        self.f32 = np.empty((rows, features), dtype=np.float32) if dtype == np.float32 else None
        self.f64 = np.empty((rows, features), dtype=np.float64)

    def take(self, data: np.ndarray, idx: np.ndarray) -> np.ndarray:
        k = idx.size
        out = self.f64[:k]
        if self.f32 is None:
            return np.take(data, idx, axis=0, out=out)
        np.take(data, idx, axis=0, out=self.f32[:k])
        np.copyto(out, self.f32[:k])
        return out


def _mean_cov(
    data: np.ndarray, idx: np.ndarray, rows: _Rows | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (float64) of the rows ``data[idx]`` (repeats allowed).

    When the batch is at least as large as the sample, the repeated rows are weighted by
    their counts instead of being copied (same result, less work).
    """
    n = idx.size
    if n >= data.shape[0]:
        counts = np.bincount(idx, minlength=data.shape[0])
        used = np.flatnonzero(counts)
        w = counts[used].astype(np.float64)
        if rows is None:
            rows = _Rows(used.size, data.shape[1], data.dtype)
        centred = rows.take(data, used)
        mu = (w @ centred) / n
        centred -= mu
        centred *= np.sqrt(w)[:, None]
    else:
        if rows is None:
            rows = _Rows(n, data.shape[1], data.dtype)
        centred = rows.take(data, idx)
        mu = centred.mean(axis=0)
        centred -= mu
    cov = (centred.T @ centred) / (n - 1)
    return mu, cov


def frechet_distance_samples(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two samples (no normalisation)."""
    x, y = checked_pair(x, y)
    mu1, s1 = _mean_cov(x, np.arange(x.shape[0]))
    mu2, s2 = _mean_cov(y, np.arange(y.shape[0]))
    return frechet_distance(mu1, s1, mu2, s2)


def _linear(x: np.ndarray, intercept: float, slope: float) -> np.ndarray:
    return intercept + slope * x


def fpd_batch_sizes(min_samples: int, max_samples: int, num_points: int) -> np.ndarray:
    """Batch sizes evenly spaced in 1/N, as JetNet computes them (truncated to int32)."""
    return (1 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype("int32")


def sample_batches(n: int) -> dict:
    """FPD batch arguments that follow a sample of ``n`` showers (n/5 ... n, 5 sizes x 5 batches),
    for samples far below JetNet's 10 000-50 000 (calofm's studies and the global FPD)."""
    return {"min_samples": max(n // 5, 2), "max_samples": max(n, 2), "num_batches": 5, "num_points": 5}


def fpd(
    reference: Any,
    generated: Any,
    min_samples: int = FPD_MIN_SAMPLES,
    max_samples: int = FPD_MAX_SAMPLES,
    num_batches: int = FPD_NUM_BATCHES,
    num_points: int = FPD_NUM_POINTS,
    normalise: bool = True,
    seed: int = SEED,
    return_details: bool = False,
    dtype: Any = np.float32,
) -> tuple[float, float] | tuple[float, float, dict]:
    """Fréchet physics distance (value, error): the 1/N -> 0 intercept, as JetNet computes it.

    See ``docs/evaluation-fpd.md`` for the algorithm. With ``return_details=True`` a third
    item holds ``batch_sizes``, the averaged ``values`` per batch size, every single
    value (``all_values``, shape ``(num_points, num_batches)``), the fitted ``slope``
    and the exact non-negative least-squares ``intercept_lstsq`` / ``slope_lstsq``.
    ``dtype``: of the features (the batch covariances are float64 either way); float64 as
    JetNet, for nearly singular covariances (few showers for the feature count), where the
    float32 rounding of the inputs moves FPD by up to 3e-4 relative.
    """
    x, y = checked_pair(reference, generated, dtype=dtype)
    min_samples = checked_int("min_samples", min_samples, 2)
    max_samples = checked_int("max_samples", max_samples, 2)
    num_batches = checked_int("num_batches", num_batches, 1)
    num_points = checked_int("num_points", num_points, 2)
    if max_samples < min_samples:
        raise ValueError(f"max_samples ({max_samples}) is below min_samples ({min_samples})")
    if normalise:
        x, y = _normalise_checked(x, y)

    batches = fpd_batch_sizes(min_samples, max_samples, num_points)
    if batches.min() <= x.shape[1]:
        warnings.warn(
            f"FPD batches of {batches.min()} events for {x.shape[1]} features: the batch "
            "covariances are singular and the FPD is ill-conditioned; use batches much "
            "larger than the number of features",
            RuntimeWarning,
            stacklevel=2,
        )
    rng = np.random.default_rng(seed)
    rows = _Rows(min(int(batches.max()), max(len(x), len(y))), x.shape[1], x.dtype)
    all_values = np.empty((num_points, num_batches))
    for p, batch_size in enumerate(batches):
        for b in range(num_batches):
            idx1 = rng.choice(len(x), size=batch_size)
            idx2 = rng.choice(len(y), size=batch_size)
            mu1, s1 = _mean_cov(x, idx1, rows)
            mu2, s2 = _mean_cov(y, idx2, rows)
            all_values[p, b] = frechet_distance(mu1, s1, mu2, s2)
    values = all_values.mean(axis=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 points: covariance not estimable (inf error)
        params, covs = curve_fit(
            _linear, 1 / batches, values, bounds=([0, 0], [np.inf, np.inf])
        )
    value, error = float(params[0]), float(np.sqrt(np.diag(covs)[0]))
    # JetNet's bounded curve_fit starts at (1, 1) and, with 1/N ~ 1e-5, can stop short of
    # the least-squares optimum; the exact non-negative least-squares fit is kept beside
    # it and a disagreement beyond the quoted error is reported (the value stays JetNet's).
    (ls_intercept, ls_slope), _ = nnls(np.column_stack([np.ones(num_points), 1 / batches]), values)
    if not abs(value - ls_intercept) <= max(error, 1e-6 * abs(ls_intercept)):
        warnings.warn(
            f"FPD fit (JetNet's curve_fit) gives intercept {value:.6g} ± {error:.3g}, but the "
            f"exact non-negative least-squares intercept is {ls_intercept:.6g}",
            RuntimeWarning,
            stacklevel=2,
        )
    if return_details:
        details = {
            "batch_sizes": batches,
            "values": values,
            "all_values": all_values,
            "slope": float(params[1]),
            "intercept_lstsq": float(ls_intercept),
            "slope_lstsq": float(ls_slope),
        }
        return value, error, details
    return value, error


# ----------------------------------------------------------------------------- kernel


def _kernel_inplace(gram: np.ndarray, gamma: float, degree: int) -> np.ndarray:
    gram *= gamma
    gram += 1.0
    if degree == 4:
        np.square(gram, out=gram)
        np.square(gram, out=gram)
    else:
        np.power(gram, degree, out=gram)
    return gram


def _kernel_sums_same(x: np.ndarray, gamma: float, degree: int) -> tuple[float, float]:
    """(sum of all entries, trace) of k(x, x), using symmetry: upper blocks only."""
    n = x.shape[0]
    total = 0.0
    trace = 0.0
    for i in range(0, n, _BLOCK):
        xi = x[i : i + _BLOCK]
        for j in range(i, n, _BLOCK):
            k = _kernel_inplace(xi @ x[j : j + _BLOCK].T, gamma, degree)
            s = float(k.sum(dtype=np.float64))
            if i == j:
                total += s
                trace += float(np.diagonal(k).sum(dtype=np.float64))
            else:
                total += 2.0 * s
    return total, trace


def _kernel_sum_cross(x: np.ndarray, y: np.ndarray, gamma: float, degree: int) -> float:
    total = 0.0
    for i in range(0, x.shape[0], _BLOCK):
        k = _kernel_inplace(x[i : i + _BLOCK] @ y.T, gamma, degree)
        total += float(k.sum(dtype=np.float64))
    return total


def mmd_poly_unbiased(x: np.ndarray, y: np.ndarray, degree: int = KPD_DEGREE, dtype: Any = np.float32) -> float:
    """Unbiased quadratic MMD^2 with k(a, b) = (a . b / d + 1)^degree (no normalisation), kernels in ``dtype``."""
    x, y = checked_pair(x, y, dtype=dtype)
    degree = checked_int("degree", degree, 1)
    gamma = 1.0 / x.shape[1]
    m, n = x.shape[0], y.shape[0]
    # float32 kernels unless they could overflow (features far above the normalised scale)
    reach = float(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64).max()))
    reach = max(reach, float(np.sqrt(np.einsum("ij,ij->i", y, y, dtype=np.float64).max())))
    if (reach * reach * gamma + 1.0) ** degree > 1e30:
        x, y = x.astype(np.float64), y.astype(np.float64)
    sxx, txx = _kernel_sums_same(x, gamma, degree)
    syy, tyy = _kernel_sums_same(y, gamma, degree)
    sxy = _kernel_sum_cross(x, y, gamma, degree)
    return (sxx - txx) / (m * (m - 1)) + (syy - tyy) / (n * (n - 1)) - 2.0 * sxy / (m * n)


def kpd(
    reference: Any,
    generated: Any,
    num_batches: int = KPD_NUM_BATCHES,
    batch_size: int = KPD_BATCH_SIZE,
    normalise: bool = True,
    seed: int = SEED,
    degree: int = KPD_DEGREE,
    return_values: bool = False,
    dtype: Any = np.float32,
) -> tuple[float, float] | tuple[float, float, np.ndarray]:
    """Kernel physics distance (median, error) as JetNet computes it.

    See ``docs/evaluation-fpd.md``. With ``return_values=True`` the per-batch MMD^2 values
    come third. ``dtype``: of the kernel matrices; float32 (default) is twice as fast and
    agrees with JetNet's float64 to about 1e-6 relative (a small MMD is a difference of
    large kernel sums); float64 agrees to about 1e-8, the rounding of JetNet's sequential
    sums (calofm's pairwise sums agree with exact summation).
    """
    x, y = checked_pair(reference, generated, dtype=dtype)
    num_batches = checked_int("num_batches", num_batches, 1)
    batch_size = checked_int("batch_size", batch_size, 2)
    if normalise:
        x, y = _normalise_checked(x, y)

    values = np.empty(num_batches)
    for i in range(num_batches):
        rng = np.random.default_rng(seed + i * 1000)
        idx1 = rng.choice(len(x), size=batch_size)
        idx2 = rng.choice(len(y), size=batch_size)
        values[i] = mmd_poly_unbiased(x[idx1], y[idx2], degree=degree, dtype=dtype)

    median = float(np.median(values))
    error = float(iqr(values, rng=KPD_PERCENTILES) / 2)
    if return_values:
        return median, error, values
    return median, error


def format_fpd_kpd(fpd_result: tuple[float, float], kpd_result: tuple[float, float]) -> str:
    """The CaloChallenge's two result lines: both values x 10^3, four decimals."""
    fv, fe = fpd_result[:2]
    kv, ke = kpd_result[:2]
    return f"FPD (x10^3): {fv * 1e3:.4f} ± {fe * 1e3:.4f}\nKPD (x10^3): {kv * 1e3:.4f} ± {ke * 1e3:.4f}"

