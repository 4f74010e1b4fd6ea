"""The G4PARTICLEXS files that Geant4's modular FTFP_BERT reads, from published formulas.

Which constructor reads what (measured: the files each one opens with the installed geant4-pybind):

* ``G4HadronPhysicsFTFP_BERT``: ``neutron/inel{Z}`` for every Z, ``neutron/cap{Z}`` for the
  elements in the geometry (``G4NeutronInelasticXS``, ``G4NeutronCaptureXS``);
* ``G4HadronElasticPhysics``: ``neutron/el{Z}`` for the elements in the geometry
  (``G4NeutronElasticXS``);
* ``G4EmExtraPhysics``: ``gamma/inel{Z}`` for every Z (``G4GammaNuclearXS``).

Format: G4PhysicsVector ascii (``emin emax N``, ``N``, then N lines ``E value``), energies in
MeV, cross sections in Geant4's internal unit (mm^2). Neutron files lie on an exactly
logarithmic grid (``G4PhysicsLogVector``), gamma files on a linear one.

What is exact and what is not:

* **Neutrons above 20 MeV** (where the showers' energy goes): Geant4 uses its in-code
  Glauber-Gribov cross sections, scaled by file(20 MeV) / Glauber-Gribov(20 MeV). So the
  file's 20 MeV value is a calibration: the reaction cross section ``NORM * pi R^2`` with
  R = 1.36 A^(1/3) + 0.9 fm and NORM = 1.17, chosen so that the neutron inelastic cross section
  in iron at 10 GeV matches the proton one (the proton's is Geant4's own, from no file). With
  NORM = 1 the neutron interaction length in iron was 18.8 cm against 16.1 cm for protons;
  ``tests/test_simulate_hadronic.py`` checks the agreement.
* **Neutrons below 20 MeV** (approximate): inelastic = reaction cross section with a soft
  threshold (1 - exp(-E / 1 MeV)) for the (n, n') levels; elastic falls from the potential
  scattering 4 pi R^2 to 0.9 x the reaction cross section; hydrogen has no inelastic channel and
  its elastic cross section is the n-p effective-range formula (singlet + triplet); capture is
  the measured thermal value (Sears 1992, 2200 m/s) times the 1/v law. Resonances are absent.
* **Photo-nuclear below 40 MeV** (approximate): one giant-dipole Lorentzian,
  E0 = 31.2 A^(-1/3) + 20.6 A^(-1/6) MeV (Berman & Fultz 1975), width 5 MeV, normalised to the
  Thomas-Reiche-Kuhn sum rule 60 NZ/A mb MeV; Geant4's in-code parameterisation takes over
  above. There are no discrete nuclear levels (empty G4LEVELGAMMADATA): de-excitation gammas
  come from the continuum.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np

from calofm.simulate.tables import build_tables, element_data, physics_vector_text

XS_VERSION = "calofm-xs-1"
Z_MAX = 94  # G4EmExtraPhysics reads gamma/inel1..94

MM2_PER_FM2 = 1e-24  # 1 fm^2 = 10 mb
MM2_PER_BARN = 1e-22
HBAR_C_MEV_FM = 197.3269804
NEUTRON_MASS_MEV = 939.56542

NORM = 1.17  # reaction cross-section scale, calibrated on n / p in iron at 10 GeV (see above)
R0_FM, R_OFFSET_FM = 1.36, 0.9
INELASTIC_THRESHOLD_MEV = 1.0
ELASTIC_FALL_MEV = 1.0
GDR_WIDTH_MEV = 5.0
NEUTRON_GRID = np.geomspace(1e-11, 20.0, 200)  # MeV; its top sets the Glauber-Gribov scale
GAMMA_GRID = np.linspace(0.0, 40.0, 81)  # MeV
THERMAL_EV = 0.0253

# n-p low-energy scattering: triplet and singlet scattering lengths and effective ranges (fm)
NP_TRIPLET, NP_SINGLET = (5.424, 1.759), (-23.74, 2.75)

# Thermal (2200 m/s) neutron absorption cross sections of the natural elements, barn
# (V. F. Sears, Neutron News 3 (1992) 26). No capture file is written for the other Z.
THERMAL_CAPTURE_BARN = {
    1: 0.3326, 2: 0.00747, 3: 70.5, 4: 0.0076, 5: 767.0, 6: 0.0035, 7: 1.90, 8: 0.00019, 9: 0.0096,
    10: 0.039, 11: 0.530, 12: 0.063, 13: 0.231, 14: 0.171, 15: 0.172, 16: 0.53, 17: 33.5, 18: 0.675,
    19: 2.1, 20: 0.43, 21: 27.5, 22: 6.09, 23: 5.08, 24: 3.05, 25: 13.3, 26: 2.56, 27: 37.18,
    28: 4.49, 29: 3.78, 30: 1.11, 31: 2.75, 32: 2.2, 33: 4.5, 34: 11.7, 35: 6.9, 36: 25.0,
    37: 0.38, 38: 1.28, 39: 1.28, 40: 0.185, 41: 1.15, 42: 2.48, 43: 20.0, 44: 2.56, 45: 144.8,
    46: 6.9, 47: 63.3, 48: 2520.0, 49: 193.8, 50: 0.626, 51: 4.91, 52: 4.7, 53: 6.15, 54: 23.9,
    55: 29.0, 56: 1.1, 57: 8.97, 58: 0.63, 59: 11.5, 60: 50.5, 61: 168.4, 62: 5922.0, 63: 4530.0,
    64: 49700.0, 65: 23.4, 66: 994.0, 67: 64.7, 68: 159.0, 69: 100.0, 70: 34.8, 71: 74.0,
    72: 104.1, 73: 20.6, 74: 18.3, 75: 89.7, 76: 16.0, 77: 425.0, 78: 10.3, 79: 98.65, 80: 372.3,
    81: 3.43, 82: 0.171, 83: 0.0338, 88: 12.8, 90: 7.37, 91: 200.6, 92: 7.57,
}


def radius_fm(a: float) -> float:
    return R0_FM * a ** (1 / 3) + R_OFFSET_FM


def reaction_mm2(a: float) -> float:
    """The calibrated high-energy reaction cross section NORM * pi R^2."""
    return NORM * math.pi * radius_fm(a) ** 2 * MM2_PER_FM2


def neutron_inelastic(z: int, a: float, e_mev: np.ndarray) -> np.ndarray:
    if z == 1:
        return np.zeros_like(e_mev)
    return reaction_mm2(a) * -np.expm1(-e_mev / INELASTIC_THRESHOLD_MEV)


def neutron_elastic(z: int, a: float, e_mev: np.ndarray) -> np.ndarray:
    if z == 1:
        return np_elastic(e_mev)
    high, low = 0.9 * reaction_mm2(a), 4 * math.pi * radius_fm(a) ** 2 * MM2_PER_FM2
    return high + (low - high) * np.exp(-e_mev / ELASTIC_FALL_MEV)


def np_elastic(e_mev: np.ndarray) -> np.ndarray:
    """n-p elastic from the effective-range expansion, 3/4 triplet + 1/4 singlet (mm^2)."""
    k2 = NEUTRON_MASS_MEV * e_mev / 2 / HBAR_C_MEV_FM**2  # centre-of-mass wave number^2, fm^-2
    total = 0.0
    for weight, (length, reach) in ((0.75, NP_TRIPLET), (0.25, NP_SINGLET)):
        total = total + weight * 4 * math.pi / (k2 + (-1 / length + 0.5 * reach * k2) ** 2)
    return total * MM2_PER_FM2


def neutron_capture(z: int, e_mev: np.ndarray) -> np.ndarray:
    return THERMAL_CAPTURE_BARN[z] * MM2_PER_BARN * np.sqrt(THERMAL_EV * 1e-6 / e_mev)


def gamma_nuclear(z: int, a: float, e_mev: np.ndarray) -> np.ndarray:
    """Giant-dipole Lorentzian whose integral is the TRK sum rule 60 NZ/A mb MeV (mm^2)."""
    e0 = 31.2 * a ** (-1 / 3) + 20.6 * a ** (-1 / 6)
    trk_mb_mev = 60.0 * max(a - z, 0.0) * z / a
    peak_mm2 = 2 * trk_mb_mev / (math.pi * GDR_WIDTH_MEV) * 1e-3 * MM2_PER_BARN
    eg2 = (e_mev * GDR_WIDTH_MEV) ** 2
    return peak_mm2 * eg2 / ((e_mev**2 - e0**2) ** 2 + eg2)


def build_xs_tables(root: Path, z_max: int = Z_MAX) -> dict:
    """Write G4PARTICLEXS-style neutron and gamma files for Z = 1..z_max under root; return their provenance."""
    return build_tables(root, XS_VERSION, z_max, _write_xs_tables)


def _write_xs_tables(out: Path, z_max: int) -> dict:
    masses = element_data(z_max)["mass_amu"]
    neutron, gamma = out / "neutron", out / "gamma"
    neutron.mkdir()
    gamma.mkdir()
    text = partial(physics_vector_text, energy_digits=15)  # a log grid must read back exactly
    for z in range(1, z_max + 1):
        a = masses[z]
        (neutron / f"inel{z}").write_text(text(NEUTRON_GRID, neutron_inelastic(z, a, NEUTRON_GRID)))
        (neutron / f"el{z}").write_text(text(NEUTRON_GRID, neutron_elastic(z, a, NEUTRON_GRID)))
        if z in THERMAL_CAPTURE_BARN:
            (neutron / f"cap{z}").write_text(text(NEUTRON_GRID, neutron_capture(z, NEUTRON_GRID)))
        (gamma / f"inel{z}").write_text(text(GAMMA_GRID, gamma_nuclear(z, a, GAMMA_GRID)))
    return {
        "neutron_inel": f"reaction cross section {NORM} pi (1.36 A^1/3 + 0.9 fm)^2, soft threshold; "
                        "sets Glauber-Gribov's scale above 20 MeV",
        "neutron_el": "4 pi R^2 -> 0.9 sigma_R; n-p effective-range formula",
        "neutron_cap": "Sears 1992 thermal absorption x 1/v",
        "gamma_inel": "giant-dipole Lorentzian, TRK sum rule, 0-40 MeV",
    }
