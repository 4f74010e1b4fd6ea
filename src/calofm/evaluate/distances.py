"""Histogram and sample distances for calorimeter-shower evaluation, as the community defines them.

Every metric compares a *reference* sample (Geant4) with a *generated* one (the model) and is
0 for identical inputs.  Sources of each definition:

* :func:`separation_power` -- CaloChallenge ``evaluate.py`` ``_separation_power`` (triangular
  discrimination, eq. 15 of arXiv:2009.03796): ``0.5 * sum_i (h1_i - h2_i)^2 / (h1_i + h2_i)``
  with ``h`` the density-normalised histogram times the bin width, i.e. the fraction of the
  in-range entries in each bin.  Bins with ``h1 + h2 = 0`` contribute nothing (the reference
  code adds 1e-16 to the denominator, which gives the same number).  Range: 0 (identical) to 1
  (disjoint).
* :func:`wasserstein_normalised` -- the CaloClouds II transfer study (Gaede, Kasieczka, Valente),
  section 4.1, eq. 4.2, computed with ``scipy.stats.wasserstein_distance`` and divided by the
  reference standard deviation, as its code, CaloTransfer (``plot_evaluate.wasserstein_d``):
  ``np.std(ref, ddof=1)`` for plain samples, the weighted population standard deviation for weighted
  samples (energy profiles).
* :func:`kl_quantile` -- the transfer study's eq. 4.1, ``KL(P||Q) = sum_i P_i log(P_i / Q_i)``
  (natural log, ``scipy.stats.entropy``) with bins at the quantiles of the reference (so every
  ``P_i`` is about ``1/n_bins``), as CaloTransfer ``quantiled_kl_divergence``: 30 bins, the outer
  edges moved to -inf/+inf (no generated entry falls outside), and ``1e-6`` added to every bin
  probability of both histograms before ``entropy`` renormalises them -- so an empty generated bin
  costs ``P_i log(P_i / 1e-6)`` (about 0.35 for 30 bins) instead of infinity.
* :func:`geometric_mean` -- the transfer study's eq. 4.3 and Appendix F (weighted, in log10 space,
  with ``epsilon = 1e-10`` and delta-method error propagation, eqs. F.1-F.6).

Observables (the transfer study's Table 1) are described in :data:`OBSERVABLE_DEFINITIONS`; an
observable is either a 1D sample (one value per shower, or one value per active voxel for the voxel
energy spectrum) or, for the two energy profiles, a 2D array ``(N showers, n_bins)`` of energy
deposited per bin, which stands for the *energy-weighted* distribution of the bin position (see
:func:`profile_distances`).  :func:`six_observables` computes all six from showers on a regular
cylindrical mesh.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np
from scipy.stats import entropy, wasserstein_distance

from calofm.evaluate.inputs import checked_array, checked_weights

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_HIST_BINS",
    "GEOMETRIC_MEAN_EPSILON",
    "KL_BINS",
    "KL_EPSILON",
    "LOG_BINNED",
    "OBSERVABLE_DEFINITIONS",
    "SIX_OBSERVABLES",
    "bootstrap",
    "geometric_mean",
    "histogram_edges",
    "kl_divergence",
    "kl_quantile",
    "observable_distances",
    "profile_distances",
    "separation_power",
    "separation_power_histograms",
    "six_observable_geometric_mean",
    "six_observables",
    "wasserstein_normalised",
]

KL_BINS = 30
"""Quantile bins of the KL divergence (CaloTransfer ``num_quantiles=30`` for every observable)."""
KL_EPSILON = 1e-6
"""Added to every bin probability of both histograms before the KL (CaloTransfer)."""
GEOMETRIC_MEAN_EPSILON = 1e-10
"""The CaloClouds II transfer study's eq. F.3: ``log10(y_i + epsilon)``."""
DEFAULT_HIST_BINS = 50
"""Bins of the separation-power histograms (plots use the same default)."""
DEFAULT_BOOTSTRAP = 20
"""Bootstrap resamplings for the errors of :func:`observable_distances`."""

SIX_OBSERVABLES = (
    "voxel_energy", "energy_ratio", "visible_energy", "occupancy", "longitudinal_profile", "radial_profile",
)

OBSERVABLE_DEFINITIONS: dict[str, str] = {
    "voxel_energy": "1D, per voxel: energy [MeV] of every active voxel (E > threshold) of every shower, pooled",
    "energy_ratio": "1D, per shower: total energy summed over all active voxels / incident energy (both MeV)",
    "visible_energy": "1D, per shower: total energy [MeV] summed over all active voxels",
    "occupancy": "1D, per shower: fraction of active voxels, n(E > threshold) / n_voxels",
    "longitudinal_profile": "2D (N, n_layers): energy [MeV] per layer per shower; compared as the energy-weighted "
                            "distribution of the layer index (weights = energy summed over showers)",
    "radial_profile": "2D (N, n_r): energy [MeV] per r bin (summed over layers and alpha) per shower; compared as the "
                      "energy-weighted distribution of the r-bin index (weights = energy summed over showers)",
    "z_centre": "1D, per shower: energy-weighted mean depth [mm] of the layer centres (0 for an empty shower); "
                "the centre of gravity of the next-token calorimeter foundation model, not one of the six",
}
"""Table 1 of the CaloClouds II transfer study, made precise.  ``threshold`` is the dataset's voxel
threshold (15.15 keV = 0.01515 MeV for CaloChallenge datasets 2/3, 1 MeV for dataset 1); "active"
means E > threshold."""

LOG_BINNED = frozenset({"voxel_energy", "visible_energy"})
"""1D observables whose separation-power histogram uses log-spaced edges (as the transfer study's plots)."""


# ---------------------------------------------------------------------------------------------
# separation power


def histogram_edges(reference, generated, n_bins: int = DEFAULT_HIST_BINS, log: bool = False) -> np.ndarray:
    """``n_bins + 1`` common bin edges spanning both samples (min to max of their union).

    ``log=True`` gives log-spaced edges over the positive values only (non-positive values are
    ignored; they fall outside the histogram).  If no value is positive, linear edges are used.
    A degenerate range (all values equal) is widened to ``[v - 0.5, v + 0.5]`` (linear) or
    ``[v / 2, 2 v]`` (log).
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    values = np.concatenate([np.ravel(np.asarray(reference, np.float64)), np.ravel(np.asarray(generated, np.float64))])
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("histogram_edges: no finite values in either sample")
    if log:
        positive = values[values > 0]
        if positive.size:
            lo, hi = positive.min(), positive.max()
            if lo == hi:
                lo, hi = lo / 2, hi * 2
            return np.geomspace(lo, hi, int(n_bins) + 1)
    lo, hi = values.min(), values.max()
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, int(n_bins) + 1)


def separation_power_histograms(h1, h2) -> float:
    """Triangular discrimination of two histograms (counts or probabilities over the same bins).

    Each histogram is normalised to unit sum first (an all-zero histogram stays zero), then
    ``0.5 * sum_i (h1_i - h2_i)^2 / (h1_i + h2_i)`` over bins with ``h1_i + h2_i > 0``.
    """
    p = np.asarray(h1, np.float64)
    q = np.asarray(h2, np.float64)
    if p.shape != q.shape:
        raise ValueError(f"separation power: histograms of different shapes {p.shape} and {q.shape}")
    p = p / p.sum() if p.sum() > 0 else np.zeros_like(p)
    q = q / q.sum() if q.sum() > 0 else np.zeros_like(q)
    total = p + q
    used = total > 0
    return float(0.5 * np.sum((p[used] - q[used]) ** 2 / total[used]))


def separation_power(reference, generated, bins) -> float:
    """CaloChallenge separation power of the two samples' histograms over ``bins`` (edges).

    Equivalent to ``np.histogram(x, bins, density=True)[0] * np.diff(bins)`` for both samples,
    as the CaloChallenge code: each histogram is normalised over its *in-range* entries.
    An integer ``bins`` means ``histogram_edges(reference, generated, bins)``.
    """
    reference = checked_array(reference, "reference")
    generated = checked_array(generated, "generated")
    if np.ndim(bins) == 0:
        bins = histogram_edges(reference, generated, n_bins=int(bins))
    bins = np.asarray(bins, np.float64)
    h1 = np.histogram(reference, bins)[0]
    h2 = np.histogram(generated, bins)[0]
    return separation_power_histograms(h1, h2)


# ---------------------------------------------------------------------------------------------
# Wasserstein


def _std(x: np.ndarray, w: np.ndarray | None) -> float:
    if w is None:
        return float(np.std(x, ddof=1)) if len(x) > 1 else 0.0
    mean = np.average(x, weights=w)
    return float(np.sqrt(np.average((x - mean) ** 2, weights=w)))


def wasserstein_normalised(reference, generated, reference_weights=None, generated_weights=None) -> float:
    """``scipy.stats.wasserstein_distance`` divided by the reference standard deviation.

    Unweighted: ``std(reference, ddof=1)``; weighted: the weighted population std (CaloTransfer).
    The result is unit-free and invariant under any common affine map ``x -> a x + b``.  If the
    reference std is 0 (a constant reference or a single value) the raw distance is returned.
    """
    reference = checked_array(reference, "reference")
    generated = checked_array(generated, "generated")
    wr = checked_weights(reference_weights, len(reference), "reference_weights")
    wg = checked_weights(generated_weights, len(generated), "generated_weights")
    distance = float(wasserstein_distance(reference, generated, wr, wg))
    std = _std(reference, wr)
    return distance / std if std > 0 else distance


# ---------------------------------------------------------------------------------------------
# KL


def kl_divergence(p, q, epsilon: float = KL_EPSILON) -> float:
    """``KL(P||Q)`` (natural log) of two histograms over the same bins.

    Both are normalised to unit sum, ``epsilon`` is added to every bin, and ``scipy.stats.entropy``
    renormalises and sums ``P_i log(P_i / Q_i)`` -- exactly the CaloTransfer recipe.
    """
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"kl_divergence: histograms must be 1D of equal length, got {p.shape} and {q.shape}")
    if p.sum() <= 0 or q.sum() <= 0 or np.any(p < 0) or np.any(q < 0):
        raise ValueError("kl_divergence: histograms must be non-negative with a positive sum")
    return float(entropy(p / p.sum() + epsilon, q / q.sum() + epsilon))


def kl_quantile(reference, generated, n_bins: int = KL_BINS, epsilon: float = KL_EPSILON) -> float:
    """The CaloClouds II transfer study's eq. 4.1 with bins at the ``n_bins``-quantiles of the reference.

    Edges ``np.quantile(reference, linspace(0, 1, n_bins + 1))`` with the first and last moved to
    -inf and +inf; then :func:`kl_divergence` of the two normalised histograms (``epsilon``
    smoothing, so empty generated bins give a large but finite value).  Repeated quantiles
    (discrete observables) give empty bins, which the smoothing makes harmless (0 contribution).
    """
    reference = checked_array(reference, "reference")
    generated = checked_array(generated, "generated")
    edges = np.quantile(reference, np.linspace(0.0, 1.0, int(n_bins) + 1))
    edges[0], edges[-1] = -np.inf, np.inf
    p = np.histogram(reference, edges)[0]
    q = np.histogram(generated, edges)[0]
    return kl_divergence(p, q, epsilon)


# ---------------------------------------------------------------------------------------------
# energy profiles (2D inputs)


def profile_distances(reference, generated, positions=None, epsilon: float = KL_EPSILON) -> dict[str, float]:
    """Distances between two energy profiles given per shower, arrays ``(N, n_bins)`` of energy per bin.

    The profile is the energy-weighted distribution of the bin position: positions ``positions``
    (default ``0..n_bins-1``: layer index or r-bin index, as CaloTransfer's radial profile) with
    weights = energy per bin summed over all showers.  Returns

    * ``wasserstein``: weighted Wasserstein-1 / weighted std of the reference profile;
    * ``kl``: :func:`kl_divergence` of the two normalised profiles over the natural bins (quantile
      bins are meaningless for a distribution on ``n_bins`` discrete positions);
    * ``separation_power``: :func:`separation_power_histograms` of the two profiles.

    A profile without any energy is infinitely far (``DISJOINT``).
    """
    reference = checked_array(reference, "reference profile", ndim=2)
    generated = checked_array(generated, "generated profile", ndim=2)
    if reference.shape[1] != generated.shape[1]:
        raise ValueError(f"profiles with different numbers of bins: {reference.shape[1]} and {generated.shape[1]}")
    if positions is None:
        positions = np.arange(reference.shape[1], dtype=np.float64)
    positions = checked_array(positions, "positions")
    if len(positions) != reference.shape[1]:
        raise ValueError(f"positions: {len(positions)} values for {reference.shape[1]} bins")
    wr, wg = reference.sum(axis=0), generated.sum(axis=0)
    if not (wr.sum() > 0 and wg.sum() > 0):  # e.g. a bootstrap replica of only empty showers
        return {name: value for name, (value, _) in DISJOINT.items()}
    return {
        "wasserstein": wasserstein_normalised(positions, positions, wr, wg),
        "kl": kl_divergence(wr, wg, epsilon),
        "separation_power": separation_power_histograms(wr, wg),
    }


# ---------------------------------------------------------------------------------------------
# geometric mean (the CaloClouds II transfer study, eq. 4.3 and Appendix F)


def geometric_mean(values, errors, weights=None, epsilon: float = GEOMETRIC_MEAN_EPSILON) -> tuple[float, float]:
    """Weighted geometric mean and its error, Appendix F of the CaloClouds II transfer study.

    ``L = sum_i w_i log10(y_i + eps)`` (F.3), ``GM = 10**L`` (F.2);
    ``sigma_log_i = sigma_i / ((y_i + eps) ln 10)`` (F.4), ``sigma_L^2 = sum_i w_i^2 sigma_log_i^2``
    (F.5), ``sigma_GM = GM ln(10) sigma_L`` (F.6).  Default weights ``1/n`` (eq. 4.3); given weights
    are normalised to unit sum.  For equal weights
    ``sigma_GM = GM / n * sqrt(sum_i (sigma_i / (y_i + eps))^2)``.
    """
    y = np.asarray(values, np.float64).ravel()
    s = np.asarray(errors, np.float64).ravel()
    if y.size == 0 or y.shape != s.shape:
        raise ValueError(f"geometric_mean: need equally many values and errors, got {y.size} and {s.size}")
    if np.any(y == math.inf):  # an observable the generated sample lacks altogether
        return math.inf, math.nan
    if np.any(y < 0) or not np.all(np.isfinite(y)):
        raise ValueError("geometric_mean: values must be finite and non-negative")
    w = np.full(y.size, 1.0 / y.size) if weights is None else np.asarray(weights, np.float64).ravel()
    if w.shape != y.shape or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("geometric_mean: weights must be non-negative, one per value, with a positive sum")
    w = w / w.sum()
    shifted = y + epsilon
    mean_log = float(np.sum(w * np.log10(shifted)))
    gm = 10.0**mean_log
    sigma_log = s / (shifted * np.log(10.0))
    sigma_mean_log = float(np.sqrt(np.sum(w**2 * sigma_log**2)))
    return float(gm), float(gm * np.log(10.0) * sigma_mean_log)


# ---------------------------------------------------------------------------------------------
# bootstrap


def _bootstrap_many(metrics: Mapping[str, Callable], reference: np.ndarray, generated: np.ndarray,
                    n: int, seed) -> dict[str, tuple[float, float]]:
    """All ``metrics`` on the full samples and on ``n`` shared resamplings (rows, with replacement)."""
    values = {k: float(m(reference, generated)) for k, m in metrics.items()}
    replicas = {k: np.empty(max(int(n), 0)) for k in metrics}
    rng = np.random.default_rng(seed)
    for b in range(max(int(n), 0)):
        i = rng.integers(0, len(reference), len(reference))
        j = rng.integers(0, len(generated), len(generated))
        r, g = reference[i], generated[j]
        for k, m in metrics.items():
            replicas[k][b] = m(r, g)
    return {k: (values[k], float(np.std(replicas[k], ddof=1)) if n >= 2 else float("nan")) for k in metrics}


def bootstrap(metric: Callable, reference, generated, n: int = DEFAULT_BOOTSTRAP, seed=0) -> tuple[float, float]:
    """``(metric(reference, generated), std over n bootstrap replicas)``.

    Each replica resamples both samples with replacement, at their own sizes, along the first axis
    (values of a 1D sample, showers of a 2D profile array); the std uses ``ddof=1`` and is NaN for
    ``n < 2``.  ``seed`` feeds ``np.random.default_rng``.
    """
    reference = np.asarray(reference)
    generated = np.asarray(generated)
    if len(reference) == 0 or len(generated) == 0:
        raise ValueError("bootstrap: empty sample")
    return _bootstrap_many({"metric": metric}, reference, generated, n, seed)["metric"]


# ---------------------------------------------------------------------------------------------
# observables


class _SortedReplicas:
    """Bootstrap replicas of a 1D sample as counts on its sorted values (no sorting per replica).

    A replica drawing indices ``i`` (``rng.integers(0, n, n)``, exactly as :func:`bootstrap`) is the
    sorted sample ``x`` with multiplicities ``counts``; ``cum[k]`` = number of replica entries among
    the ``k`` smallest values.  Histogram counts, quantiles, moments and CDFs follow from ``cum`` by
    look-ups, so each replica costs O(n) instead of O(n log n).
    """

    def __init__(self, values: np.ndarray):
        self.order = np.argsort(values, kind="stable")
        self.x = values[self.order]
        self.n = len(values)
        self.cum = np.zeros(self.n + 1, np.int64)
        self.counts = np.ones(self.n, np.int64)

    def draw(self, rng: np.random.Generator) -> None:
        self.counts = np.bincount(rng.integers(0, self.n, self.n), minlength=self.n)[self.order]
        np.cumsum(self.counts, out=self.cum[1:])

    def histogram_index(self, edges: np.ndarray) -> np.ndarray:
        """Indices into ``cum`` giving ``np.histogram`` counts: [e_i, e_i+1), the last bin closed."""
        index = np.searchsorted(self.x, edges, "left")
        index[-1] = np.searchsorted(self.x, edges[-1], "right")
        return index

    def histogram(self, index: np.ndarray) -> np.ndarray:
        return np.diff(self.cum[index])

    def order_statistics(self, k: np.ndarray) -> np.ndarray:
        """The ``k``-th smallest entries (0-based) of the replica."""
        return self.x[np.searchsorted(self.cum, k, "right") - 1]

    def quantile(self, q: np.ndarray) -> np.ndarray:
        """``np.quantile(replica, q)`` (method "linear")."""
        virtual = (self.n - 1) * q
        below = np.floor(virtual)
        gamma = virtual - below
        below = below.astype(np.int64)
        a = self.order_statistics(below)
        b = self.order_statistics(np.minimum(below + 1, self.n - 1))
        diff = b - a
        return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)

    def std(self) -> float:
        if self.n < 2:
            return 0.0
        mean = self.counts @ self.x / self.n
        return float(np.sqrt(self.counts @ (self.x - mean) ** 2 / (self.n - 1)))


def _sample_replicas(reference: np.ndarray, generated: np.ndarray, edges: np.ndarray, kl_bins: int,
                     n: int, seed) -> dict[str, float]:
    """Bootstrap stds of the three 1D metrics, replicas identical to :func:`bootstrap`'s (same seed)."""
    if n < 2:
        return dict.fromkeys(("wasserstein", "kl", "separation_power"), float("nan"))
    r, g = _SortedReplicas(reference), _SortedReplicas(generated)
    # Wasserstein as scipy: integral of |F_r - F_g| over the sorted union of both samples
    # (a stable merge of the two sorted samples; at tied values the step is 0, so the count of
    # reference values placed before a tie's last member never matters)
    both = np.concatenate([r.x, g.x])
    merge = np.argsort(both, kind="stable")
    steps = np.diff(both[merge])
    itype = np.int32 if len(both) < np.iinfo(np.int32).max else np.int64
    cdf_r = np.cumsum(merge[:-1] < r.n, dtype=itype)
    cdf_g = np.arange(1, len(both), dtype=itype) - cdf_r
    del both, merge
    sep_r, sep_g = r.histogram_index(edges), g.histogram_index(edges)
    levels = np.linspace(0.0, 1.0, int(kl_bins) + 1)
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3))
    for b in range(n):
        r.draw(rng)
        g.draw(rng)
        distance = float(np.abs(r.cum[cdf_r] / r.n - g.cum[cdf_g] / g.n) @ steps)
        std = r.std()
        kl_edges = r.quantile(levels)
        kl_edges[0], kl_edges[-1] = -np.inf, np.inf
        out[b] = (distance / std if std > 0 else distance,
                  kl_divergence(r.histogram(r.histogram_index(kl_edges)), g.histogram(g.histogram_index(kl_edges))),
                  separation_power_histograms(r.histogram(sep_r), g.histogram(sep_g)))
    return dict(zip(("wasserstein", "kl", "separation_power"), out.std(axis=0, ddof=1).tolist()))


# an observable one sample does not have at all (e.g. no voxel above threshold): infinitely far
DISJOINT = {"wasserstein": (math.inf, math.nan), "kl": (math.inf, math.nan), "separation_power": (1.0, 0.0)}


def _no_entries(sample: np.ndarray) -> bool:
    """True for an empty 1D sample or a 2D profile without any energy."""
    return sample.size == 0 or (sample.ndim == 2 and not np.any(sample > 0))


def observable_distances(reference: Mapping[str, np.ndarray], generated: Mapping[str, np.ndarray],
                         n_bootstrap: int = DEFAULT_BOOTSTRAP, seed=0, n_bins: int = DEFAULT_HIST_BINS,
                         log_binned: Iterable[str] = LOG_BINNED, kl_bins: int = KL_BINS,
                         positions: Mapping[str, np.ndarray] | None = None,
                         ) -> dict[str, dict[str, tuple[float, float]]]:
    """``{key: {"wasserstein": (v, err), "kl": (v, err), "separation_power": (v, err)}}`` for every key in both.

    A 1D entry is a sample: :func:`wasserstein_normalised`, :func:`kl_quantile` (``kl_bins``) and
    :func:`separation_power` over ``histogram_edges(ref, gen, n_bins, log=key in log_binned)``, the
    edges fixed from the full samples for all bootstrap replicas.  A 2D entry ``(N, n_bins)`` is an
    energy profile (:func:`profile_distances`, ``positions[key]`` if given).  Errors are bootstrap
    stds over ``n_bootstrap`` replicas shared by the three metrics -- the same replicas as
    ``bootstrap(metric, ref, gen, n_bootstrap, key_seed)`` -- seeded per key (from ``seed`` and the
    key's name) so a key's numbers do not depend on the other keys.  Keys present in only one
    mapping are skipped; the order follows ``reference``.

    1D replicas are evaluated on the presorted samples (O(n) each, :class:`_SortedReplicas`), so
    ~10^7 pooled voxel energies with 20 replicas take tens of seconds; the voxel replicas resample
    voxels, not showers (this ignores the correlation of the voxels of one shower).
    """
    log_binned = set(log_binned)
    positions = positions or {}
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for key in reference:
        if key not in generated:
            continue
        ref = np.asarray(reference[key], np.float64)
        gen = np.asarray(generated[key], np.float64)
        key_seed = [int(seed), *key.encode()] if isinstance(seed, (int, np.integer)) else seed
        if _no_entries(ref) or _no_entries(gen):
            out[key] = DISJOINT
        elif ref.ndim == 2 and gen.ndim == 2:
            pos = positions.get(key)
            checked_array(ref, f"reference[{key!r}]", ndim=2)
            checked_array(gen, f"generated[{key!r}]", ndim=2)
            metrics = {name: (lambda r, g, name=name: profile_distances(r, g, pos)[name])
                       for name in ("wasserstein", "kl", "separation_power")}
            out[key] = _bootstrap_many(metrics, ref, gen, n_bootstrap, key_seed)
        elif ref.ndim == 1 and gen.ndim == 1:
            checked_array(ref, f"reference[{key!r}]")
            checked_array(gen, f"generated[{key!r}]")
            edges = histogram_edges(ref, gen, n_bins=n_bins, log=key in log_binned)
            values = {"wasserstein": wasserstein_normalised(ref, gen),
                      "kl": kl_quantile(ref, gen, n_bins=kl_bins),
                      "separation_power": separation_power(ref, gen, edges)}
            errors = _sample_replicas(ref, gen, edges, kl_bins, int(n_bootstrap), key_seed)
            out[key] = {name: (values[name], errors[name]) for name in values}
        else:
            raise ValueError(f"observable {key!r}: reference {ref.shape} and generated {gen.shape} must both be "
                             "1D samples or both 2D (showers, bins) profiles")
    return out


def six_observable_geometric_mean(distances: Mapping[str, Mapping[str, tuple[float, float]]],
                                  metric: str = "wasserstein") -> tuple[float, float]:
    """Eq. 4.3 of the CaloClouds II transfer study: :func:`geometric_mean` of ``distances[k][metric]`` over the six.

    ``distances`` is the output of :func:`observable_distances`; each entry is ``(value, error)``.
    """
    missing = [k for k in SIX_OBSERVABLES if k not in distances]
    if missing:
        raise KeyError(f"six-observable geometric mean: missing observables {missing}")
    pairs = np.array([distances[k][metric] for k in SIX_OBSERVABLES], np.float64)
    return geometric_mean(pairs[:, 0], pairs[:, 1])


def six_observables(showers, incident_energy, shape: tuple[int, int, int], threshold: float = 0.0,
                    chunk: int = 1000) -> dict[str, np.ndarray]:
    """The six observables of the CaloClouds II transfer study (:data:`OBSERVABLE_DEFINITIONS`), regular mesh.

    ``showers`` ``(N, n_layers * n_alpha * n_r)`` MeV, voxel order layer slowest, r fastest
    (CaloChallenge); ``incident_energy`` ``(N,)`` or ``(N, 1)`` MeV; ``shape = (n_layers, n_alpha,
    n_r)``.  Voxels with ``E <= threshold`` [MeV] count as empty for all six observables (pass the
    dataset's voxel threshold, 0.01515 MeV for datasets 2/3).  Works through ``chunk`` showers at a
    time, so no full-size copy is made.  Irregular meshes (dataset 1): build the two profiles from
    the per-layer / per-r-bin sums of the feature extractor instead.
    """
    showers = np.asarray(showers)
    e_inc = np.asarray(incident_energy, np.float64).reshape(-1)
    n_layers, n_alpha, n_r = (int(s) for s in shape)
    if showers.ndim != 2 or showers.shape[1] != n_layers * n_alpha * n_r:
        raise ValueError(f"six_observables: showers of shape {showers.shape} do not match the mesh {tuple(shape)}")
    if len(e_inc) != len(showers):
        raise ValueError(f"six_observables: {len(e_inc)} incident energies for {len(showers)} showers")
    voxels, visible, count = [], np.empty(len(showers)), np.empty(len(showers))
    longitudinal = np.empty((len(showers), n_layers))
    radial = np.empty((len(showers), n_r))
    for start in range(0, len(showers), chunk):
        block = np.asarray(showers[start:start + chunk], np.float64)
        active = block > threshold
        block = np.where(active, block, 0.0)
        voxels.append(block[active])
        stop = start + len(block)
        visible[start:stop] = block.sum(axis=1)
        count[start:stop] = active.sum(axis=1)
        grid = block.reshape(len(block), n_layers, n_alpha, n_r)
        longitudinal[start:stop] = grid.sum(axis=(2, 3))
        radial[start:stop] = grid.sum(axis=(1, 2))
    return {
        "voxel_energy": np.concatenate(voxels) if voxels else np.empty(0),
        "energy_ratio": visible / e_inc,
        "visible_energy": visible,
        "occupancy": count / showers.shape[1],
        "longitudinal_profile": longitudinal,
        "radial_profile": radial,
    }
