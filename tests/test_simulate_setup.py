"""The parts of `calofm simulate` that need no Geant4: detectors, gun, planning, scoring."""

import math

import numpy as np
import pytest

from calofm.core.errors import InputError
from calofm.geometry import calochallenge_binning, ild_ecal, project
from calofm.simulate.detectors import get_detector, preset_names
from calofm.simulate.gun import Gun, Spectrum, direction
from calofm.simulate.materials import material
from calofm.simulate.runner import Run, plan
from calofm.simulate.scoring import cluster, to_mesh_frame


def test_all_presets_exist_and_load():
    assert {"par04-siw", "par04-scipb", "ild-w", "ild-ta", "ild-pb", "pbwo4", "lar-pb"} <= set(preset_names())
    for name in preset_names():
        det = get_detector(name)
        assert det.name == name and det.depth_x0 > 14 and len(det.active_layers) >= 1


def test_material_constants_match_the_pdg_figures():
    assert material("G4_W").moliere_mm == pytest.approx(9.3, rel=0.01)
    assert material("G4_Pb").moliere_mm == pytest.approx(16.0, rel=0.01)


def test_par04_siw_is_the_calochallenge_geometry():
    det = get_detector("par04-siw")
    assert len(det.slabs) == 180 and det.depth_mm == pytest.approx(153.0)
    assert det.mesh_binning() == calochallenge_binning("dataset_2")
    assert det.with_mesh("dataset_3").mesh_binning() == calochallenge_binning("dataset_3")
    # each 3.4 mm z bin holds two W/Si pairs of 0.4 X0
    assert 2 * (1.4 / 3.504 + 0.3 / 93.7) == pytest.approx(0.8, abs=0.01)


def test_ild_presets_share_the_stack_and_differ_in_absorber():
    w, ta, pb = (get_detector(n) for n in ("ild-w", "ild-ta", "ild-pb"))
    assert [s.thickness for s in w.slabs] == [s.thickness for s in pb.slabs]
    assert w.depth_x0 > ta.depth_x0 > pb.depth_x0
    assert w.readout().z_edges == pytest.approx(ild_ecal(n_cells=200).z_edges)
    assert w.readout().cell_x == 5.0


def test_user_detector_from_yaml(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nlayers:\n  - repeat: 10\n    slabs:\n      - {material: G4_Fe, thickness: 5}\n"
                    "      - {material: G4_POLYSTYRENE, thickness: 3, active: true}\nsampling_fraction: 0.05\n")
    det = get_detector(str(path))
    assert det.depth_mm == 80 and det.mesh.dz == pytest.approx(80 / 45, abs=1e-4) and det.sampling_fraction == 0.05


@pytest.mark.parametrize("text, problem", [
    ("name: x\nlayers:\n  - slabs:\n      - {material: G4_Unobtainium, thickness: 1, active: true}\n",
     "unknown material"),
    ("name: x\nlayers:\n  - slabs:\n      - {material: G4_W, thickness: 1}\n", "no active slab"),
    ("name: x\nlayers:\n  - slabs:\n      - {material: G4_Si, thickness: -1, active: true}\n", "positive"),
    ("name: x\n", "not a valid detector description"),
    ("- a\n- b\n", "must hold a mapping"),
])
def test_bad_detector_yaml(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=problem) as info:
        get_detector(str(path))
    assert str(info.value).startswith(str(path))


def test_unknown_preset():
    with pytest.raises(InputError, match="unknown detector; presets: "):
        get_detector("cms-hgcal")


def test_spectra():
    rng = np.random.default_rng(0)
    assert Spectrum.parse("10").draw(rng) == 10 and Spectrum.parse("fixed:3").draw(rng) == 3
    draws = np.array([Spectrum.parse("loguniform:1:100").draw(rng) for _ in range(4000)])
    assert draws.min() >= 1 and draws.max() <= 100
    assert np.mean(np.log10(draws) < 1) == pytest.approx(0.5, abs=0.03)  # log-uniform: half below 10
    for bad in ("uniform:5:1", "loguniform:0:3", "gauss:1:2", "x"):
        with pytest.raises(ValueError, match="bad spectrum"):
            Spectrum.parse(bad)


def test_gun_events_depend_only_on_seed_and_index():
    gun = Gun("gamma", Spectrum.parse("uniform:1:50"), Spectrum.parse("uniform:1.2:1.9"))
    assert gun.event(3, 17) == gun.event(3, 17)
    assert gun.event(3, 17) != gun.event(3, 18) and gun.event(3, 17) != gun.event(4, 17)
    energy, theta, phi, seed = gun.event(3, 17)
    assert 1e3 <= energy <= 5e4 and 1.2 <= theta <= 1.9 and seed > 0 and gun.pdg == 22


def test_shards_and_resume_planning_cover_every_event_once():
    det = get_detector("par04-siw")
    shards = [Run(det, Gun(), 103, shard=(i, 4)).events for i in range(4)]
    assert sum(len(s) for s in shards) == 103 and shards[0].start == 0 and shards[-1].stop == 103
    assert all(a.stop == b.start for a, b in zip(shards, shards[1:]))
    events = range(10, 60)
    todo = plan(events, [(10, 20), (35, 40)], size=8)
    assert todo == [(20, 28), (28, 35), (40, 48), (48, 56), (56, 60)]
    assert plan(events, [(10, 60)], size=8) == []


def test_mesh_frame_follows_the_particle():
    d = direction(1.0)
    steps = np.array([[0.0, *(d[1:] * 7.0), 1.0]], np.float32)  # 7 mm along the particle direction
    moved = to_mesh_frame(steps, 1.0)
    np.testing.assert_allclose(moved[0, :3], [0, 0, 7], atol=1e-5)
    normal = to_mesh_frame(np.array([[1.0, 2.0, 3.0, 1.0]], np.float32), math.pi / 2)
    np.testing.assert_allclose(normal[0], [1, 2, 3, 1], atol=1e-6)


@pytest.mark.parametrize("readout", [calochallenge_binning("dataset_2"), ild_ecal()])
def test_clustering_keeps_every_cell_energy(readout):
    rng = np.random.default_rng(0)
    n = 20_000
    steps = np.stack([rng.normal(0, 8, n), rng.normal(0, 8, n), rng.uniform(0, 99, n),
                      rng.exponential(0.1, n)], 1).astype(np.float32)
    points = cluster(steps, readout)
    assert len(points) < n
    np.testing.assert_allclose(project(readout, points, [0, len(points)]), project(readout, steps, [0, n]),
                               rtol=1e-5, atol=1e-6)
    fine = readout.refined(6)
    assert len(np.unique(fine.voxel_ids(*points[:, :3].T))) == len(points)  # one point per fine cell


def test_official_data_sets_are_found_in_geant4_data_dir_and_calofm_tables_are_not(tmp_path, monkeypatch):
    from calofm.simulate import g4env
    from calofm.simulate.tables import MARKER

    for var in (*g4env.OFFICIAL_HADRONIC, "GEANT4_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    base = tmp_path / "geant4-data"
    for name in ("G4EMLOW8.6.1", "G4ENSDFSTATE3.0", "PhotonEvaporation6.1"):
        (base / name).mkdir(parents=True)
    monkeypatch.setenv("GEANT4_DATA_DIR", str(base))
    assert g4env.official_data(hadronic=False) == {"G4LEDATA": str(base / "G4EMLOW8.6.1"),
                                                    "G4ENSDFSTATEDATA": str(base / "G4ENSDFSTATE3.0"),
                                                    "G4LEVELGAMMADATA": str(base / "PhotonEvaporation6.1")}
    assert g4env.official_data(hadronic=True) is None  # no G4PARTICLEXS: calofm's tables and modular list
    (base / "G4PARTICLEXS4.1").mkdir()
    assert g4env.official_data(hadronic=True)["G4PARTICLEXSDATA"] == str(base / "G4PARTICLEXS4.1")
    ours = tmp_path / "calofm-em-1"  # what a parent process exports for its workers is not "official"
    (ours / "LEVELGAMMA").mkdir(parents=True)
    (ours / MARKER).write_text('{"tables_version": "calofm-em-1"}')
    monkeypatch.setenv("GEANT4_DATA_DIR", str(ours))
    for var in ("G4LEDATA", "G4ENSDFSTATEDATA"):
        monkeypatch.setenv(var, str(ours))
    monkeypatch.setenv("G4LEVELGAMMADATA", str(ours / "LEVELGAMMA"))
    assert g4env.official_data(hadronic=False) is None


def test_physics_choice_per_particle_and_its_record():
    from calofm.simulate.physics import MODULAR_FTFP_BERT, Physics, default_physics

    assert [default_physics(p) for p in ("e-", "gamma", "pi+", "proton", "mu-")] == ["em", "em"] + ["ftfp_bert"] * 3
    hadronic = Physics("ftfp_bert")
    assert hadronic.constructors(official=True) == ("FTFP_BERT",)
    assert hadronic.constructors(official=False) == MODULAR_FTFP_BERT
    assert hadronic.birks("G4_POLYSTYRENE") == 0.07943 and hadronic.birks("G4_Si") == 0.0
    assert Physics("em", birks_kb=0.126).birks("G4_POLYSTYRENE") == 0.126
    assert Physics("em", birks_kb=0.126).birks("G4_lAr") == 0.0  # only scintillators are quenched
    record = hadronic.describe(False, ["G4_Si", "G4_POLYSTYRENE", "G4_Si"])
    assert record["birks_mm_per_MeV"] == {"G4_POLYSTYRENE": 0.07943, "G4_Si": 0.0}
    for bad in ({"name": "qgsp"}, {"birks_kb": -1.0}, {"range_cut_mm": 0.0}):
        with pytest.raises(ValueError):
            Physics(**bad)


def test_detector_sections_score_each_part_on_its_mesh(tmp_path):
    det = get_detector("ild-ecal-hcal")
    assert [s.name for s in det.sections] == ["ecal", "hcal"] and det.sampling_fractions == (0.02333, 0.0216)
    assert det.section_ranges == [(0.0, 99.0), (99.0, 1203.0)]
    np.testing.assert_allclose(det.energy_scale(np.array([0.5, 98.9, 99.1, 1200.0])),
                               [1 / 0.02333, 1 / 0.02333, 1 / 0.0216, 1 / 0.0216])
    hcal = det.section_detector(1)
    assert hcal.depth_mm == pytest.approx(1104.0) and hcal.mesh.n_z == 24 and not hcal.sections
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nlayers:\n  - slabs:\n      - {material: G4_Si, thickness: 1, active: true}\n"
                   "sections:\n  - {name: a, blocks: 2, mesh: {n_z: 2}}\n")
    with pytest.raises(InputError, match="must cover"):
        get_detector(str(bad))


def test_birks_law_per_step_follows_g4emsaturation():
    from calofm.simulate.physics import CHARGED, NEUTRAL, PHOTON, birks_tables, birks_visible

    energies = np.geomspace(1e-6, 1e4, 201)
    proton_range, electron_range = 0.02 * energies**1.75, 2.0 * energies  # mm: stand-in range tables
    # polystyrene: C and H, one atom each per CH unit
    tables = birks_tables(energies, proton_range, electron_range, np.array([6.0, 1.0]), np.array([1.0, 1.0]),
                          np.array([12.011, 1.008]))
    ratio, charge2 = tables[3], tables[4]
    assert ratio == pytest.approx(938.272 / 931.494 * (36 / 12.011 + 1 / 1.008) / 37, rel=1e-4)
    assert charge2 == pytest.approx((36 * 36 + 1) / 37, rel=1e-6)
    kb = 0.1
    edep, length, niel = np.array([0.2, 0.2, 1.0, 0.05, 0.3]), np.array([1.0, 1.0, 0.5, 0.0, 2.0]), \
        np.array([0.0, 0.02, 0.0, 0.0, 0.0])
    kind = np.array([CHARGED, CHARGED, NEUTRAL, PHOTON, CHARGED])
    visible = birks_visible(edep, length, niel, kind, kb, tables)
    assert visible[0] == pytest.approx(0.2 / (1 + kb * 0.2 / 1.0))  # a MIP-like step: 2 % quenched
    recoil = 0.02 / (1 + kb * 0.02 / (0.02 * (0.02 * ratio) ** 1.75 / charge2))
    assert visible[1] == pytest.approx(0.18 / (1 + kb * 0.18) + recoil, rel=1e-3)
    assert visible[2] == pytest.approx(1.0 / (1 + kb * 1.0 / (0.02 * ratio**1.75 / charge2)), rel=1e-3)  # all NIEL
    assert visible[3] == pytest.approx(0.05 / (1 + kb * 0.05 / (2.0 * 0.05)), rel=1e-3)  # electron range
    assert np.all(visible <= edep) and visible[4] > 0.98 * edep[4]
