"""The G4PARTICLEXS files calofm builds from formulas: format, calibration and content."""

import importlib.util
import math

import numpy as np
import pytest

from calofm.simulate import xs_tables
from calofm.simulate.tables import MARKER, read_provenance
from conftest import read_physics_vector

pytestmark = pytest.mark.skipif(importlib.util.find_spec("geant4_pybind") is None,
                                reason="geant4_pybind is not installed")

Z_MAX = 30


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("g4data") / "xs"
    xs_tables.build_xs_tables(root, z_max=Z_MAX)
    return root


def test_layout_provenance_and_determinism(root, tmp_path):
    provenance = read_provenance(root)
    assert provenance["tables_version"] == xs_tables.XS_VERSION and provenance["z_max"] == Z_MAX
    assert (root / MARKER).is_file()
    for z in range(1, Z_MAX + 1):
        for name in (f"neutron/inel{z}", f"neutron/el{z}", f"neutron/cap{z}", f"gamma/inel{z}"):
            assert (root / name).is_file(), name
    again = tmp_path / "xs"
    xs_tables.build_xs_tables(again, z_max=3)
    for name in ("neutron/inel3", "neutron/el1", "neutron/cap2", "gamma/inel3"):
        assert (again / name).read_bytes() == (root / name).read_bytes()


@pytest.mark.parametrize("name", ["neutron/inel26", "neutron/el1", "neutron/cap26"])
def test_neutron_files_lie_on_an_exact_log_grid_up_to_20_mev(root, name):
    emin, emax, energies, values = read_physics_vector(root / name)
    assert (emin, emax) == (energies[0], energies[-1]) and emax == pytest.approx(20.0)
    steps = np.diff(np.log(energies))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)  # G4PhysicsLogVector finds bins by log
    assert np.all(values >= 0) and np.all(np.isfinite(values))


def test_gamma_files_lie_on_a_linear_grid(root):
    _, _, energies, values = read_physics_vector(root / "gamma/inel26")
    np.testing.assert_allclose(np.diff(energies), 0.5)
    assert energies[0] == 0 and values[0] == 0


def test_reaction_cross_section_at_20_mev_sets_the_high_energy_scale(root):
    """Iron: 1.17 pi (1.36 A^1/3 + 0.9 fm)^2 = 1.37 b; the inelastic channel has opened by then."""
    _, _, energies, values = read_physics_vector(root / "neutron/inel26")
    assert values[-1] / xs_tables.MM2_PER_BARN == pytest.approx(1.17 * math.pi * (1.36 * 55.845 ** (1 / 3) + 0.9) ** 2
                                                               * 1e-2, rel=1e-3)
    assert values[np.searchsorted(energies, 0.01)] < 0.02 * values[-1]  # no (n, n') at 10 keV
    assert np.all(read_physics_vector(root / "neutron/inel1")[3] == 0)  # n-p has no inelastic channel below pions


def test_np_elastic_matches_the_measured_free_cross_section(root):
    """Effective-range formula: 20.4 b at low energy (free n-p), 4.3 b at 1 MeV, 0.48 b at 20 MeV."""
    _, _, energies, values = read_physics_vector(root / "neutron/el1")
    barn = values / xs_tables.MM2_PER_BARN
    assert barn[0] == pytest.approx(20.4, rel=0.01)
    assert np.interp(1.0, energies, barn) == pytest.approx(4.26, rel=0.05)
    assert barn[-1] == pytest.approx(0.48, rel=0.05)


def test_capture_is_thermal_value_times_one_over_v(root):
    _, _, energies, values = read_physics_vector(root / "neutron/cap26")
    barn = values / xs_tables.MM2_PER_BARN
    thermal = np.exp(np.interp(math.log(2.53e-8), np.log(energies), np.log(barn)))
    assert thermal == pytest.approx(2.56, rel=1e-3)
    np.testing.assert_allclose(barn * np.sqrt(energies), barn[0] * np.sqrt(energies[0]), rtol=1e-6)


def test_giant_dipole_resonance_peak_and_sum_rule():
    """Lead: the GDR peaks near 13.5 MeV and integrates to 60 NZ/A mb MeV (TRK)."""
    a, z = 207.2, 82
    e = np.linspace(0.0, 200.0, 200001)
    sigma_mb = xs_tables.gamma_nuclear(z, a, e) / xs_tables.MM2_PER_BARN * 1e3
    assert e[np.argmax(sigma_mb)] == pytest.approx(13.5, abs=0.5)
    assert np.trapezoid(sigma_mb, e) == pytest.approx(60 * (a - z) * z / a, rel=0.03)  # tail beyond 200 MeV
