"""Hadronic physics of `calofm simulate` offline (fast: small samples, fixed seeds).

The figures they check are in docs/hadronic.md.
"""

import importlib.util
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from calofm.data import open_showers
from calofm.geometry import layer_grids
from calofm.simulate.detectors import Detector, get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.materials import material
from calofm.simulate.physics import Physics
from calofm.simulate.runner import Run, measure_interaction_length, simulate

pytestmark = pytest.mark.skipif(importlib.util.find_spec("geant4_pybind") is None,
                                reason="geant4_pybind is not installed")


def sandwich(absorber: str, thickness: float, layers: int, scintillator: float = 5.0) -> Detector:
    """An absorber / polystyrene sandwich scored out to 50 cm, sampling fraction 1 (visible energy)."""
    return Detector.sandwich(f"{absorber}-sci", absorber, thickness, "G4_POLYSTYRENE", scintillator, layers,
                             {"n_r": 10, "n_alpha": 1, "n_z": layers, "dr": 50.0}, sampling_fraction=1.0)


@pytest.fixture(scope="module")
def shoot(tmp_path_factory):
    """shoot(detector, particle, GeV, n, birks_kb=None) -> (showers, metadata), cached per argument set."""
    folder = tmp_path_factory.mktemp("hadronic")
    cache = {}

    def _shoot(detector, particle, energy_gev, n, birks_kb=None):
        key = (detector.name, detector.fingerprint, particle, energy_gev, n, birks_kb)
        if key not in cache:
            out = folder / f"{len(cache)}.h5"
            physics = Physics("ftfp_bert", birks_kb)
            simulate(Run(detector, Gun(particle, Spectrum.parse(str(energy_gev))), n, seed=3, physics=physics),
                     out, workers=2, progress=False)
            with open_showers(out) as f:
                cache[key] = (f.read(), dict(f.metadata))
        return cache[key]

    return _shoot


def response(shoot, detector, particle, energy_gev, n, birks_kb=None):
    """Mean visible energy over incident energy, and its error."""
    showers, _ = shoot(detector, particle, energy_gev, n, birks_kb)
    r = showers.visible_energy() / showers.energy
    return r.mean(), r.std(ddof=1) / np.sqrt(len(r))


def centre_of_gravity_layers(showers) -> float:
    """Mean energy-weighted layer index (the sandwiches have one mesh z bin per layer)."""
    profile = showers.showers.reshape(len(showers), -1, 10).sum(axis=2)
    return float(np.mean(profile @ np.arange(profile.shape[1]) / profile.sum(axis=1)))


# --- e/pi with Birks' law ----------------------------------------------------------------
FE_SCI = sandwich("G4_Fe", 20.0, 100)  # 12 lambda_I: contained, so e/pi is the calorimeter's, not leakage


def test_e_over_pi_is_above_one_and_falls_with_energy(shoot):
    """e/pi = 1.14 at 3 GeV, about 1.09 from 10 GeV up (errors about 0.015 with these samples): the
    electromagnetic fraction of pion showers grows with their energy."""
    low = [response(shoot, FE_SCI, "e-", 3, 200), response(shoot, FE_SCI, "pi+", 3, 600)]
    high = [response(shoot, FE_SCI, "e-", 30, 20), response(shoot, FE_SCI, "pi+", 30, 40)]
    ratios = []
    for (e, e_err), (pi, pi_err) in (low, high):
        ratio, error = e / pi, e / pi * np.hypot(e_err / e, pi_err / pi)
        assert ratio > 1.0 + 3 * error
        ratios.append((ratio, error))
    assert ratios[0][0] - ratios[1][0] > 1.5 * np.hypot(ratios[0][1], ratios[1][1])


def test_birks_law_is_what_makes_e_over_pi_exceed_one(shoot):
    """Without quenching the slow protons of hadronic showers count in full (the same 150 events)."""
    quenched, _ = shoot(FE_SCI, "pi+", 3, 600)
    unquenched, _ = shoot(FE_SCI, "pi+", 3, 150, birks_kb=0.0)
    electrons, _ = shoot(FE_SCI, "e-", 3, 200)
    electrons0, _ = shoot(FE_SCI, "e-", 3, 50, birks_kb=0.0)
    pi, pi0 = quenched.visible_energy()[:150], unquenched.visible_energy()
    e, e0 = electrons.visible_energy()[:50], electrons0.visible_energy()
    assert np.all(pi <= pi0) and np.all(e <= e0)
    assert np.mean(pi0 / pi) > np.mean(e0 / e) + 0.1  # pions lose >= 10 % more light than electrons
    assert np.mean(e0 / e) == pytest.approx(1.02, abs=0.015)  # electrons barely: MIP-like dE/dx


# --- longitudinal scaling -----------------------------------------------------------------
def test_pion_depth_scales_with_lambda_and_electron_depth_with_x0(shoot):
    """One stack in nuclear interaction lengths, in iron and in tungsten (X0 / lambda_I: 0.105 and 0.035).

    Measured in lambda_I, the pion showers' centres of gravity nearly agree (tungsten's is shorter
    by its compact electromagnetic part); in X0 they differ by more than 2x. The electrons' do the
    reverse.
    """
    fe, w = material("G4_Fe"), material("G4_W")
    tungsten = sandwich("G4_W", round(20.0 * w.lambda_i_mm / fe.lambda_i_mm, 2), 100)

    def log_ratios(particle, n):
        """ln(W / Fe) of the centres of gravity in lambda_I and in X0 (the iron runs are e/pi's)."""
        depth, per_layer = [], []
        for d, count in ((FE_SCI, n), (tungsten, n // 4)):
            depth.append(centre_of_gravity_layers(shoot(d, particle, 3, count)[0]) + 0.5)
            per_layer.append([sum(s.thickness / length(material(s.material)) for s in d.blocks[0].slabs)
                              for length in (lambda m: m.lambda_i_mm, lambda m: m.x0_mm)])
        return [np.log(depth[1] * per_layer[1][k] / (depth[0] * per_layer[0][k])) for k in (0, 1)]

    pi_lambda, pi_x0 = log_ratios("pi+", 600)
    e_lambda, e_x0 = log_ratios("e-", 200)
    assert abs(pi_lambda) < 0.35 and abs(pi_x0) > np.log(2)
    assert abs(e_x0) < 0.35 and abs(e_lambda) > np.log(2)


# --- interaction lengths ------------------------------------------------------------------
def test_neutron_and_proton_interaction_lengths_in_iron_agree():
    """The neutron's comes from calofm's 20 MeV calibration, the proton's from Geant4's own code."""
    with ThreadPoolExecutor(2) as pool:  # one Geant4 process each
        proton, neutron = pool.map(lambda a: measure_interaction_length("G4_Fe", a[0], 10.0, n=6000, seed=a[1]),
                                   [("proton", 1), ("neutron", 2)])
    assert neutron[0] / proton[0] == pytest.approx(1.0, abs=0.05)  # errors: 1.2 % each
    assert proton[0] == pytest.approx(160.6, rel=0.05)  # 16.06 +- 0.36 cm in a standalone geant4-pybind trial


# --- a W/Si ECAL is thin for pions -------------------------------------------------------
def test_a_fraction_of_pions_cross_a_silicon_tungsten_ecal_as_mips(shoot):
    ecal = get_detector("ild-w")
    pions, _ = shoot(ecal, "pi+", 20, 60)
    muons, _ = shoot(ecal, "mu-", 20, 20)
    raw_pi = pions.visible_energy() * ecal.sampling_fraction
    raw_mu = muons.visible_energy() * ecal.sampling_fraction
    # 30 x 0.5 mm Si at ~0.39 MeV/mm; a rare muon radiates a shower
    assert 3.0 < np.median(raw_mu) < 12.0 and np.percentile(raw_mu, 80) < 15.0
    mip_like = np.mean(raw_pi < 15.0)
    assert 0.4 < mip_like < 0.85  # 66 % in a standalone trial's thinner ECAL (0.9 lambda_I: about half never interact)
    assert np.mean(raw_pi > 50.0) > 0.1  # the others shower


# --- reproducibility and provenance -------------------------------------------------------
def test_same_seed_same_pion_showers_whatever_the_workers(tmp_path):
    ecal = get_detector("ild-w")
    runs = []
    for workers, name in ((1, "one.h5"), (2, "two.h5")):
        simulate(Run(ecal, Gun("pi-", Spectrum.parse("5")), 6, seed=11), tmp_path / name, workers=workers,
                 progress=False)
        with open_showers(tmp_path / name) as f:
            runs.append((f.read(), json.loads(f.metadata["settings"])))
    np.testing.assert_array_equal(runs[0][0].showers, runs[1][0].showers)
    assert runs[0][0].showers.sum() > 0
    settings = runs[0][1]
    assert settings["physics"]["list"] == "ftfp_bert"  # the default for pions
    if settings["g4data"]["g4data"] == "calofm-built":
        assert "G4HadronPhysicsFTFP_BERT" in settings["physics"]["constructors"]
        assert settings["g4data"]["xs"]["tables_version"].startswith("calofm-xs")
    else:
        assert settings["physics"]["constructors"] == ["FTFP_BERT"]


# --- ECAL + HCAL ----------------------------------------------------------------------------
def test_ecal_hcal_preset_is_two_grids_with_their_own_sampling_fractions(shoot):
    detector = get_detector("ild-ecal-hcal")
    mesh = detector.mesh_binning()
    assert layer_grids(mesh.layer_shapes()) == [(30, 16, 9), (24, 8, 10)]
    assert mesh.z_edges[30] == pytest.approx(99.0) and mesh.z_edges[-1] == pytest.approx(detector.depth_mm)
    showers, meta = shoot(detector, "pi+", 20, 8)
    assert showers.showers.shape == (8, 30 * 16 * 9 + 24 * 8 * 10)
    ecal = showers.showers[:, :30 * 16 * 9].sum(axis=1)
    hcal = showers.showers[:, 30 * 16 * 9:].sum(axis=1)
    assert hcal.mean() > ecal.mean() > 0
    assert 0.5 < (showers.visible_energy() / showers.energy).mean() < 1.1  # EM scale: below 1 by e/pi
    assert json.loads(meta["sampling_fractions"]) == {"ecal": 0.02333, "hcal": 0.0216}
