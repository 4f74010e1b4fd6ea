"""`calofm simulate --fast-sim`: the model inside the Geant4 run (trigger, placement, end to end)."""

import math

import numpy as np
import pytest
import torch

from calofm.cli.main import main
from calofm.core.errors import InputError
from calofm.data import open_showers
from calofm.export import ExportGraph, export
from calofm.geometry import CylindricalBinning
from calofm.geometry.orders import reorder
from calofm.inference import load_model
from calofm.inference.fastsim import FastSim
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, Spectrum, direction
from calofm.simulate.handoff import Trigger, incidence_theta, mesh_axes, place
from calofm.simulate.runner import Run, simulate
from calofm.simulate.scoring import score_mesh, to_mesh_frame

SIW = get_detector("par04-siw")
MESH = CylindricalBinning.regular(9, 16, 45, 4.65, 3.4)


def _read(path):
    with open_showers(path) as f:
        return f.read(), dict(f.metadata)


def _replay(fast_sim: FastSim, energies_mev, theta: float, run_seed: int, part_start: int = 0) -> np.ndarray:
    """The showers a one-part fast-simulated run of primaries entering at the origin must hold: the
    model's, drawn with the seed the run derives for the part, scored on the detector's mesh."""
    n = len(energies_mev)
    rows = np.column_stack([np.full(n, 11), energies_mev, np.zeros((n, 3)), np.tile(direction(theta), (n, 1))])
    seed = int(np.random.default_rng([run_seed, part_start]).integers(2**31))
    deposits, owner = fast_sim.deposits(rows, np.zeros(n), seed)
    return np.stack([score_mesh(to_mesh_frame(deposits[owner == i], theta), SIW.mesh_binning()) for i in range(n)])


@pytest.fixture(scope="module")
def fm1_fast():
    return FastSim.open("fm-1-fast", SIW, ("e-",))


@pytest.fixture(scope="module")
def toy_par04(toys, tmp_path_factory):
    """The toy CD model, its output lifted to about 1 MeV per voxel so that its showers are not
    empty, and its par04-contract ONNX file."""
    model = load_model(toys / "base_cd")
    with torch.no_grad():
        one_mev = (0.0 - model.voxels.mean) / model.voxels.std
        model.process.net.final.linear.bias.add_(one_mev / model.process.sigma_data)
    return model, export(model, "onnx", tmp_path_factory.mktemp("onnx") / "toy.onnx", contract="par04")


# --- the geometry of the hand-off, without Geant4 ----------------------------------------
@pytest.mark.parametrize("theta", [1.1, math.pi / 2, 2.0])
def test_mesh_axes_are_the_training_showers_frame(theta):
    """For the gun's directions (tilted towards +y: theta < pi/2), the mesh frame is the one the
    training showers were scored in; every frame is orthonormal, right-handed, z' = the direction."""
    d = direction(theta)
    axes = mesh_axes(d[None])[0]
    np.testing.assert_allclose(axes @ axes.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(axes) == pytest.approx(1.0) and np.allclose(axes[2], d)
    points = np.random.default_rng(0).normal(size=(50, 4))
    local = to_mesh_frame(points, theta)[:, :3]
    if theta <= math.pi / 2:
        np.testing.assert_allclose(points[:, :3] @ axes.T, local, atol=1e-12)
    else:  # folded onto theta' = pi - theta: the same frame turned by pi about the direction
        np.testing.assert_allclose(points[:, :3] @ axes.T, local * [-1, -1, 1], atol=1e-12)
    assert incidence_theta(d[None])[0] == pytest.approx(min(theta, math.pi - theta))


def test_a_placed_shower_scores_back_onto_its_own_mesh():
    rng = np.random.default_rng(1)
    shower = rng.exponential(1.0, (1, MESH.n_voxels)) * (rng.random((1, MESH.n_voxels)) < 0.3)
    for theta in (1.2, math.pi / 2):
        deposits, owner = place(shower, MESH, np.zeros((1, 3)), direction(theta)[None])
        assert np.all(owner == 0) and len(deposits) == np.count_nonzero(shower)
        np.testing.assert_allclose(score_mesh(to_mesh_frame(deposits, theta), MESH), shower[0], rtol=1e-6)
    theta = math.pi - 1.2  # folded: the same layers, the azimuthal bins half a turn round
    deposits, _ = place(shower, MESH, np.zeros((1, 3)), direction(theta)[None])
    back = score_mesh(to_mesh_frame(deposits, theta), MESH).reshape(45, 16, 9)
    np.testing.assert_allclose(np.roll(back, 8, axis=1), shower[0].reshape(45, 16, 9), rtol=1e-6)


def test_a_shower_born_inside_starts_where_its_particle_is_born():
    shower = np.zeros((1, MESH.n_voxels))
    shower[0, MESH.index(0, 0, 0)] = 5.0  # first layer, innermost ring
    deposits, _ = place(shower, MESH, np.array([[10.0, -20.0, 300.0]]), np.array([[0.0, 0.0, -1.0]]))
    x, y, z, e = deposits[0]
    assert e == 5.0 and z == pytest.approx(300.0 - 1.7) and math.hypot(x - 10, y + 20) < 4.65


def test_the_trigger_takes_what_it_names_and_nothing_else():
    trigger = Trigger((11, 22), e_min=1000.0, e_max=50_000.0, z_range=(0.0, 200.0), max_angle=math.radians(30))
    assert trigger.accepts(22, 5000.0, 10.0, 1.0) and trigger.accepts(11, 5000.0, 10.0, -0.9)
    assert not trigger.accepts(-11, 5000.0, 10.0, 1.0)           # particle
    assert not trigger.accepts(22, 900.0, 10.0, 1.0)             # below the range
    assert not trigger.accepts(22, 60_000.0, 10.0, 1.0)          # above it
    assert not trigger.accepts(22, 5000.0, 250.0, 1.0)           # outside the section
    assert not trigger.accepts(22, 5000.0, 10.0, math.cos(math.radians(40)))  # too steep
    for bad in ({"pdgs": ()}, {"e_min": 5.0, "e_max": 1.0}, {"max_angle": 2.0}):
        with pytest.raises(ValueError):
            Trigger(**{"pdgs": (11,), "e_min": 1.0, **bad})


def test_each_particle_gets_its_class_in_this_detector(fm1_fast):
    both = FastSim.open("fm-1-fast", SIW, ("e-", "e+", "gamma"))
    assert both.classes == {11: "par04-siw-e-", -11: "par04-siw-e-", 22: "par04-siw-gamma"}
    assert fm1_fast.trigger.e_min == 1000.0 and fm1_fast.trigger.e_max == pytest.approx(99_945.4, abs=1)
    chosen = FastSim.open("fm-1-fast", get_detector("ild-ecal-hcal"), ("gamma", "e-"),
                          classes="gamma=ild-w-gamma,e-=ild-w-e-", section="ecal")
    assert chosen.classes == {22: "ild-w-gamma", 11: "ild-w-e-"}
    assert chosen.trigger.z_range == pytest.approx((0.0, 20 * 2.6 + 10 * 4.7))  # the ECAL's 30 layers
    with pytest.raises(InputError, match="no class for gamma in ild-ecal-hcal"):
        FastSim.open("fm-1-fast", get_detector("ild-ecal-hcal"), ("gamma",))
    with pytest.raises(InputError, match="no class 'nope'"):
        FastSim.open("fm-1-fast", SIW, ("e-",), classes="nope")
    with pytest.raises(InputError, match="has no section 'hcal'"):
        FastSim.open("fm-1-fast", SIW, ("e-",), section="hcal")


def test_the_onnx_backend_is_the_export_graph_after_par04s_post_processing(toy_par04):
    """The par04 graph through ONNX Runtime, fed the latent the backend draws, gives the torch
    graph's fractions times the energy, back in calofm's voxel order."""
    model, path = toy_par04
    backend = FastSim.open(str(path), SIW, ("e-",), classes="a").backend
    energy, theta = np.array([3000.0, 20_000.0]), np.array([1.4, math.pi / 2])
    ours = backend.showers("a", energy, theta, np.zeros(2), 7, None)
    graph = ExportGraph(model, contract="par04")
    latent = np.random.default_rng(7).standard_normal((2, graph.n_latent), dtype=np.float32)
    onehot = np.zeros((2, model.conditions.n_slots), np.float32)
    onehot[:, model.conditions.slot("a")] = 1
    x = np.column_stack([latent, energy / 1_024_000, np.degrees(theta) / 90, onehot]).astype(np.float32)
    with torch.no_grad():
        fractions = graph(torch.from_numpy(x)).numpy()
    expected = reorder(fractions * energy[:, None], "par04", "calochallenge", (45, 16, 9))
    assert ours.max() > 0
    np.testing.assert_allclose(ours, expected, rtol=2e-4, atol=1e-4)


# --- end to end, with Geant4 -----------------------------------------------------------------
def test_the_model_shower_is_deposited_where_the_particle_enters(tmp_path, fm1_fast):
    """An inclined electron entering par04-siw is killed before it deposits anything: the event
    holds exactly the model's shower, placed at the entry point along its direction."""
    theta, gun = 1.3, Gun("e-", Spectrum.parse("loguniform:2:20"), Spectrum.parse("1.3"))
    stats = simulate(Run(SIW, gun, 3, seed=4, fast_sim=fm1_fast), tmp_path / "fast.h5", progress=False)
    showers, meta = _read(tmp_path / "fast.h5")
    assert stats["handed_off"] == 3 and stats["handed_off_gev"] == pytest.approx(showers.energy.sum() / 1000)
    assert meta["fast_sim_handed_off"] == 3 and "fast simulation by fm-1-fast" in meta["simulator"]
    assert '"fast_sim"' in meta["settings"] and '"par04-siw-e-"' in meta["settings"]
    expected = _replay(fm1_fast, showers.energy, theta, run_seed=4)
    assert expected.sum(1).min() > 0.3 * showers.energy.min()
    np.testing.assert_allclose(showers.showers, expected, rtol=1e-5, atol=1e-4)


def test_a_trigger_that_never_fires_leaves_geant4_unchanged(tmp_path):
    """The calorimeter's own region and the two hooks change nothing when no particle is handed off."""
    gun = Gun("e-", Spectrum.parse("3"))
    above = FastSim.open("fm-1-fast", SIW, ("e-",), min_energy_gev=50.0)
    simulate(Run(SIW, gun, 3, seed=2), tmp_path / "full.h5", progress=False)
    stats = simulate(Run(SIW, gun, 3, seed=2, fast_sim=above), tmp_path / "fast.h5", progress=False)
    assert stats["handed_off"] == 0
    np.testing.assert_array_equal(_read(tmp_path / "fast.h5")[0].showers, _read(tmp_path / "full.h5")[0].showers)


def test_pi0_photons_of_a_hadronic_shower_go_to_the_model(tmp_path, capsys):
    """The hybrid: pi+ in ild-ecal-hcal, whose photons born in the ECAL above 1 GeV are the model's."""
    out = tmp_path / "hybrid.h5"
    assert main(["simulate", "--detector", "ild-ecal-hcal", "--particle", "pi+", "--energy", "30", "--n", "8",
                 "--seed", "3", "--fast-sim", "fm-1-fast", "--fast-sim-particles", "gamma",
                 "--fast-sim-class", "ild-w-gamma", "--fast-sim-section", "ecal", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    showers, meta = _read(out)
    assert "fast simulation:" in printed and meta["fast_sim_handed_off"] >= 4
    assert 5.0 < meta["fast_sim_handed_off_gev"] < 0.5 * showers.energy.sum() / 1000  # photons, not the pions
    assert np.all(showers.showers.sum(1) > 0)


def test_an_exported_onnx_file_runs_inside_geant4(toy_par04, tmp_path):
    path = toy_par04[1]
    out = tmp_path / "onnx.h5"
    assert main(["simulate", "--detector", "par04-siw", "--energy", "5", "--n", "2", "--fast-sim", str(path),
                 "--fast-sim-particles", "e-", "--fast-sim-class", "a", "--out", str(out)]) == 0
    showers, meta = _read(out)
    assert meta["fast_sim_handed_off"] == 2 and "ONNX Runtime, par04 contract" in meta["settings"]
    expected = _replay(FastSim.open(str(path), SIW, ("e-",), classes="a"), showers.energy, math.pi / 2, run_seed=0)
    np.testing.assert_allclose(showers.showers, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("extra, message", [
    (["--points"], "--points: a fast-simulated run has no point clouds"),
    (["--fast-sim-section", "ecal"], "--fast-sim-section: par04-siw has no section 'ecal'"),
    (["--fast-sim-particles", "e-,kaon"], "--fast-sim-particles: unknown particle 'kaon'"),
    (["--fast-sim-min-energy", "200", "--fast-sim-max-energy", "100"], "--fast-sim: fast-simulation energy range"),
])
def test_bad_fast_simulation_options_are_one_line_errors(tmp_path, capsys, extra, message):
    assert main(["simulate", "--detector", "par04-siw", "--n", "2", "--fast-sim", "fm-1-fast",
                 "--out", str(tmp_path / "x.h5"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())
