"""Geant4 EM data tables built from formulas: file formats, physics content, and a Geant4 run."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from calofm.simulate import tables
from calofm.simulate.tables import TABLES_VERSION, build_em_tables
from conftest import read_physics_vector

pytestmark = pytest.mark.skipif(importlib.util.find_spec("geant4_pybind") is None,
                                reason="geant4_pybind is not installed")

Z_MAX = 74  # W, and the H of G4_Galactic: all the Geant4 run below needs
W = 74
W_DENSITY = 19.3  # g/cm3
W_MOLAR_MASS = 183.84  # g/mol
W_X0 = 0.3504 * W_DENSITY  # g/cm2, PDG
AVOGADRO = 6.02214076e23


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("g4data") / "em"
    build_em_tables(root, z_max=Z_MAX)
    return root


@pytest.fixture(scope="module")
def sandia():
    return tables.element_data(Z_MAX)["intervals"]


def read_brem(path):
    """brem_SB/brZ -> (header, kappa, ln T, chi[T, kappa]) as G4Physics2DVector::Retrieve reads it."""
    tokens = path.read_text().split()
    header = tuple(int(t) for t in tokens[:3])
    _, nk, nt = header
    values = np.array(tokens[3:], dtype=float)
    assert len(values) == nk + nt + nk * nt
    return header, values[:nk], values[nk:nk + nt], values[nk + nt:].reshape(nt, nk)


def read_fit(path):
    """pe-high / pe-low -> (n_shells, n_shells_used, E_min, shell rows [E_bind, c1..c6])."""
    tokens = path.read_text().split()
    n1, n2 = int(tokens[0]), int(tokens[1])
    rows = np.array(tokens[3:], dtype=float).reshape(n1, 7)
    return n1, n2, float(tokens[2]), rows


def photo_cross_section(root, z, e_mev):
    """sigma [barn] as G4LivermorePhotoElectricModel::ComputeCrossSectionPerAtom gets it from the files."""
    phot = root / "epics2017" / "phot"
    _, _, e_high, high = read_fit(phot / f"pe-high-{z}.dat")
    _, _, e_low, low = read_fit(phot / f"pe-low-{z}.dat")
    _, _, energies, values = read_physics_vector(phot / f"pe-cs-{z}.dat")
    e = max(e_mev, high[0, 0])
    if e >= e_low:
        c = (high if e >= e_high else low)[0, 1:]
        return sum(c[i] / e ** (i + 1) for i in range(6))
    return np.interp(e, energies, values) / e**3


def test_layout_and_provenance(root):
    provenance = build_em_tables(root, z_max=Z_MAX)
    assert provenance["tables_version"] == TABLES_VERSION
    assert (provenance["z_min"], provenance["z_max"]) == (1, Z_MAX)
    assert json.loads((root / tables.MARKER).read_text()) == provenance
    for z in range(1, Z_MAX + 1):
        assert (root / "brem_SB" / f"br{z}").is_file()
        for prefix in ("pe-cs", "pe-high", "pe-low"):
            assert (root / "epics2017" / "phot" / f"{prefix}-{z}.dat").is_file()
    assert not (root / "brem_SB" / f"br{Z_MAX + 1}").exists()
    assert (root / "ENSDFSTATE" / "ENSDFSTATE.dat").read_bytes() == b""
    assert list((root / "LEVELGAMMA").iterdir()) == []
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temporary build left over


@pytest.mark.parametrize("z", [1, 4, 5, W])
def test_brem_format(root, z):
    header, kappa, log_t, chi = read_brem(root / "brem_SB" / f"br{z}")
    assert header == (2, 32, 57)
    assert kappa[0] == 0 and kappa[-1] == 1 and np.all(np.diff(kappa) > 0)
    assert log_t[0] == pytest.approx(math.log(1e-3)) and log_t[-1] == pytest.approx(math.log(1e4))
    assert np.all(np.diff(log_t) > 0)
    assert np.all(np.isfinite(chi)) and np.all(chi >= 0)
    assert np.all(chi[:, kappa <= 0.9] > 0)


def test_brem_approaches_complete_screening(root):
    """At 10 GeV and k -> 0 chi is Tsai's complete-screening value, and near Seltzer-Berger's."""
    _, _, log_t, chi = read_brem(root / "brem_SB" / f"br{W}")
    t = math.exp(log_t[-1])
    beta2 = t * (t + 2 * tables.ELECTRON_MASS_MEV) / (t + tables.ELECTRON_MASS_MEV) ** 2
    l_rad, l_rad_inel = math.log(184.15 * W ** (-1 / 3)), math.log(1194 * W ** (-2 / 3))
    complete = tables.BREM_FACTOR_MB * beta2 * (
        l_rad - tables.coulomb_correction(W) + l_rad_inel / W + (1 + 1 / W) / 12)
    assert chi[-1, 0] == pytest.approx(complete, rel=2e-3)
    assert chi[-1, 0] == pytest.approx(11.07, rel=0.03)  # Seltzer & Berger (1986), W, 10 GeV, k/T = 0


def test_brem_energy_loss_matches_radiation_length(root):
    """The radiative dE/dx of the W table at 10 GeV is E/X0 (PDG X0 = 6.76 g/cm2) within 3 %."""
    _, kappa, log_t, chi = read_brem(root / "brem_SB" / f"br{W}")
    t = math.exp(log_t[-1])
    beta2 = t * (t + 2 * tables.ELECTRON_MASS_MEV) / (t + tables.ELECTRON_MASS_MEV) ** 2
    integral_mb = np.sum(0.5 * (chi[-1, 1:] + chi[-1, :-1]) * np.diff(kappa))  # of k dsigma/dk / E
    loss_over_e = AVOGADRO / W_MOLAR_MASS * W**2 * integral_mb / beta2 * 1e-27  # cm2/g
    assert loss_over_e * W_X0 == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("z", [1, 6, W])
def test_photo_format(root, z):
    phot = root / "epics2017" / "phot"
    high, low = read_fit(phot / f"pe-high-{z}.dat"), read_fit(phot / f"pe-low-{z}.dat")
    edge_min, edge_max, energies, values = read_physics_vector(phot / f"pe-cs-{z}.dat")
    for n_shells, n_used, _, rows in (high, low):
        assert (n_shells, n_used) == (1, 1)  # single shell: no pe-ss-cs / pe-le-cs files needed
        assert rows[0, 0] == edge_min  # binding energy = start of the table
    assert edge_min == energies[0] and edge_max == energies[-1]
    assert np.all(np.diff(energies) > 0) and np.all(values >= 0)
    assert edge_max < low[2] < high[2]


def test_photo_w_100kev_is_sandia(root):
    assert photo_cross_section(root, W, 0.1) == pytest.approx(1267.16, rel=1e-4)
    assert photo_cross_section(root, W, 0.0696) > 3 * photo_cross_section(root, W, 0.0694)  # K edge


@pytest.mark.parametrize("z", [1, 6, 26, W])
def test_photo_tables_reproduce_sandia(root, sandia, z):
    """From 10 eV to 10 GeV, away from the absorption edges, the files give Sandia within 0.3 %."""
    starts = sandia[z][:, 0]
    energies = np.geomspace(starts[0], 1e4, 400)
    energies = energies[np.min(np.abs(energies[:, None] / starts[None, :] - 1), axis=1) > 1e-4]
    ours = np.array([photo_cross_section(root, z, e) for e in energies])
    np.testing.assert_allclose(ours, tables.sandia_cross_section(sandia[z], energies), rtol=3e-3)


def test_rebuild_skipped_when_complete(root):
    marker = root / tables.MARKER
    before = marker.stat().st_mtime_ns
    assert build_em_tables(root, z_max=10)["z_max"] == Z_MAX
    assert marker.stat().st_mtime_ns == before


def test_replaces_older_build_with_identical_files(root, tmp_path):
    other = tmp_path / "em"
    other.mkdir()
    (other / tables.MARKER).write_text(json.dumps({"tables_version": "calofm-em-0", "z_max": 99}))
    (other / "stale").write_text("x")
    assert build_em_tables(other, z_max=2)["tables_version"] == TABLES_VERSION
    assert not (other / "stale").exists()
    for rel in ("brem_SB/br1", "brem_SB/br2", "epics2017/phot/pe-cs-2.dat", "epics2017/phot/pe-low-1.dat"):
        assert (other / rel).read_bytes() == (root / rel).read_bytes()  # deterministic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["em"]


def test_refuses_foreign_directory_and_bad_z(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_em_tables(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    for z_max in (0, tables.Z_LIMIT + 1):
        with pytest.raises(ValueError):
            build_em_tables(tmp_path / "em", z_max=z_max)


G4_APP = r"""
import json, sys
import geant4_pybind as g4
from geant4_pybind import MeV, keV, GeV, cm, cm2, g, barn

class Detector(g4.G4VUserDetectorConstruction):
    def Construct(self):
        nist = g4.G4NistManager.Instance()
        world = g4.G4LogicalVolume(g4.G4Box("world", 20 * cm, 20 * cm, 20 * cm),
                                   nist.FindOrBuildMaterial("G4_Galactic"), "world")
        block = g4.G4LogicalVolume(g4.G4Box("block", 10 * cm, 10 * cm, 10 * cm),
                                   nist.FindOrBuildMaterial("G4_W"), "block")
        g4.G4PVPlacement(None, g4.G4ThreeVector(), block, "block", world, False, 0)
        return g4.G4PVPlacement(None, g4.G4ThreeVector(), world, "world", None, False, 0)

class Physics(g4.G4VModularPhysicsList):
    def __init__(self):
        super().__init__()
        self.RegisterPhysics(g4.G4EmStandardPhysics_option1())

class Gun(g4.G4VUserPrimaryGeneratorAction):
    def __init__(self):
        super().__init__()
        self.gun = g4.G4ParticleGun(1)
        self.gun.SetParticleDefinition(g4.G4Electron.Electron())
        self.gun.SetParticleEnergy(10 * MeV)
        self.gun.SetParticlePosition(g4.G4ThreeVector(0, 0, -15 * cm))
        self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(0, 0, 1))

    def GeneratePrimaries(self, event):
        self.gun.GeneratePrimaryVertex(event)

class Deposit(g4.G4UserSteppingAction):
    total = 0.0

    def UserSteppingAction(self, step):
        self.total += step.GetTotalEnergyDeposit()

run = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.Serial)
run.SetUserInitialization(Detector())
run.SetUserInitialization(Physics())
gun, deposit = Gun(), Deposit()  # user actions after the physics list
run.SetUserAction(gun)
run.SetUserAction(deposit)
run.Initialize()
run.BeamOn(10)
tungsten = g4.G4Material.GetMaterial("G4_W")
calc = g4.G4EmCalculator()
print("RESULT", json.dumps({
    "deposit": deposit.total / (10 * 10 * MeV),
    "brem_x0_over_e": calc.ComputeDEDX(1 * GeV, "e-", "eBrem", "G4_W") * tungsten.GetRadlen() / GeV,
    "compton_cm2_g": calc.ComputeCrossSectionPerVolume(100 * keV, "gamma", "compt", "G4_W")
                     / tungsten.GetDensity() / (cm2 / g),
    "photo_barn": calc.ComputeCrossSectionPerVolume(100 * keV, "gamma", "phot", "G4_W")
                  / tungsten.GetTotNbOfAtomsPerVolume() / barn,
}))
del calc  # a G4EmCalculator left to interpreter shutdown can crash it
"""


def test_geant4_runs_on_the_tables(root):
    env = {**os.environ, **tables.geant4_env(root)}
    proc = subprocess.run([sys.executable, "-c", G4_APP], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert 0.5 < result["deposit"] <= 1.0
    assert result["brem_x0_over_e"] == pytest.approx(1.0, abs=0.03)
    assert result["compton_cm2_g"] == pytest.approx(0.102, rel=0.03)  # XCOM
    assert result["photo_barn"] == pytest.approx(1267.16, rel=1e-3)  # Sandia, as in the pe tables
