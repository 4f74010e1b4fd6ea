"""Physics checks of `calofm simulate` (fast: few showers, low energies, fixed seeds)."""

import math

import numpy as np
import pytest

from calofm.data import open_showers
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, simulate


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("physics")
    cache = {}

    def _run(detector, particle, energy_gev, n):
        key = (detector, particle, energy_gev, n)
        if key not in cache:
            out = folder / f"{detector}_{particle}_{energy_gev}.h5"
            simulate(Run(get_detector(detector), Gun(particle, Spectrum.parse(str(energy_gev))), n, seed=1),
                     out, workers=2, progress=False)
            with open_showers(out) as f:
                cache[key] = (f.read(), f.readout)
        return cache[key]

    return _run


def _profiles(showers, mesh):
    n_z, n_a, n_r = mesh.shape
    voxels = showers.showers.reshape(len(showers), n_z, n_a, n_r)
    return voxels.sum(axis=(2, 3)).mean(0), voxels.sum(axis=(1, 2)).mean(0)


def _peak(profile, centres):
    """Position of the maximum, refined by a parabola through the three highest bins."""
    k = int(np.argmax(profile))
    y0, y1, y2 = profile[k - 1:k + 2]
    return centres[k] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (centres[1] - centres[0])


def test_response_is_linear_from_1_to_50_gev(run):
    # showers per point ~ 1/E keeps the statistical error near 1 %
    response = np.array([np.mean(s.visible_energy() / s.energy)
                         for s, _ in (run("par04-siw", "e-", e, n) for e, n in ((1, 200), (5, 40), (20, 10), (50, 4)))])
    assert np.all(np.abs(response / response.mean() - 1) < 0.03), response


@pytest.mark.parametrize("particle, offset", [("e-", -0.5), ("gamma", +0.5)])
def test_shower_maximum_follows_ln_e_over_ec(run, particle, offset):
    det = get_detector("par04-siw")
    showers, mesh = run("par04-siw", particle, 10, 20)
    longitudinal, _ = _profiles(showers, mesh)
    t_max = _peak(longitudinal, mesh.layer_centres() / det.x0_mm)
    expected = math.log(10e3 / det.critical_mev) + offset
    assert abs(t_max - expected) < 1.0, (t_max, expected)


def test_90_percent_lateral_containment_near_the_moliere_radius(run):
    det = get_detector("par04-siw")
    showers, mesh = run("par04-siw", "e-", 10, 20)
    _, radial = _profiles(showers, mesh)
    cumulative = np.concatenate([[0], np.cumsum(radial) / radial.sum()])
    r90 = np.interp(0.9, cumulative, mesh.layers[0].r_edges)
    assert r90 == pytest.approx(det.moliere_mm, rel=0.2)


def test_photons_start_deeper_than_electrons(run):
    depth = {}
    for particle in ("e-", "gamma"):
        showers, mesh = run("par04-siw", particle, 10, 20)
        longitudinal, _ = _profiles(showers, mesh)
        depth[particle] = np.average(mesh.layer_centres(), weights=longitudinal)
    assert depth["gamma"] > depth["e-"] + 2.0  # about 9/7 X0 = 5 mm deeper


def test_lead_showers_are_longer_than_tungsten_ones(run):
    depth = {}
    for detector in ("ild-w", "ild-pb"):
        showers, mesh = run(detector, "e-", 10, 20)
        longitudinal, _ = _profiles(showers, mesh)
        depth[detector] = np.average(mesh.layer_centres(), weights=longitudinal)
    assert depth["ild-pb"] > 1.25 * depth["ild-w"]  # X0(Pb) / X0(W) = 1.6
