"""Detectors as GDML: a preset written out and read back by Geant4; bad GDML is one line."""

import hashlib
import json
import math
from dataclasses import astuple

import numpy as np
import pytest
import yaml

from calofm.cli.main import main
from calofm.core.errors import InputError
from calofm.data import open_showers
from calofm.inference.fastsim import FastSim
from calofm.simulate import runner
from calofm.simulate.detectors import Frame, get_detector, record_sampling_fraction
from calofm.simulate.gdml import read_gdml, write_gdml, write_sidecar
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.physics import Physics
from calofm.simulate.runner import Run, simulate


@pytest.fixture(scope="module")
def siw_gdml(tmp_path_factory):
    return write_gdml(get_detector("par04-siw"), tmp_path_factory.mktemp("gdml") / "siw.gdml")


def test_a_written_preset_reads_back_as_its_slabs(siw_gdml):
    detector = get_detector("par04-siw")
    geometry = read_gdml(siw_gdml)
    assert geometry.placements == len(detector.slabs)
    assert set(geometry.volumes.values()) == {"G4_Galactic", "G4_W", "G4_Si"}
    assert [geometry.volumes[v] for v in geometry.sensitive] == ["G4_Si"]  # the active layers, and only they
    half = detector.lateral_mm / 2
    world = [[-half - 10, half + 10]] * 2 + [[-detector.depth_mm - 50, detector.depth_mm + 50]]
    np.testing.assert_allclose(geometry.world_mm, world)
    assert geometry.bounds(Frame()) == pytest.approx(np.array([[-half, half], [-half, half], [0, detector.depth_mm]]))
    assert len(geometry.sha256) == 64


def test_a_preset_with_sections_through_gdml_gives_its_showers_bit_for_bit(tmp_path, monkeypatch, capsys):
    """ECAL + HCAL: the sidecar gives each section its depth, mesh and sampling fraction; a pion's
    shower is the preset's, bit for bit, and so is an electron's in the ECAL alone."""
    monkeypatch.chdir(tmp_path)
    assert main(["detectors", "ild-ecal-hcal", "--gdml"]) == 0
    assert "wrote ild-ecal-hcal.gdml and ild-ecal-hcal-gdml.yaml" in capsys.readouterr().out
    preset, gdml = get_detector("ild-ecal-hcal"), get_detector("ild-ecal-hcal-gdml.yaml")
    geometry = read_gdml(gdml.gdml.path)
    # one Si volume serves both ECAL blocks (same material and thickness), as in SlabCalorimeter
    assert sorted(geometry.volumes[v] for v in geometry.sensitive) == ["G4_POLYSTYRENE", "G4_Si"]
    assert geometry.placements == len(preset.slabs)
    np.testing.assert_allclose(gdml.section_ranges, preset.section_ranges)
    assert gdml.sampling_fractions == preset.sampling_fractions
    assert gdml.mesh_binning().z_edges == preset.mesh_binning().z_edges
    assert [s.mesh for s in gdml.sections] == [s.mesh for s in preset.sections]
    pion, electron = Gun("pi+", Spectrum.parse("10")), Gun("e-", Spectrum.parse("5"))
    for detector, out in ((preset, "preset"), (gdml, "gdml")):
        simulate(Run(detector, pion, 2, seed=3), tmp_path / f"{out}.h5", progress=False)
        simulate(Run(detector.section_detector(0), electron, 3, seed=3), tmp_path / f"{out}-ecal.h5", progress=False)
    for suffix in ("", "-ecal"):
        with open_showers(tmp_path / f"preset{suffix}.h5") as f, open_showers(tmp_path / f"gdml{suffix}.h5") as g:
            expected, got = f.read().showers, g.read().showers
        assert expected.sum() > 0
        np.testing.assert_array_equal(got, expected)


def _placed_volumes(gun) -> list[str]:
    """In a Geant4 worker: the volumes its session's world holds, depth first."""
    names, stack = [], [runner._session[0].construction.parser.GetWorldVolume().GetLogicalVolume()]
    while stack:
        lv = stack.pop()
        daughters = [lv.GetDaughter(i) for i in range(lv.GetNoDaughters())]
        names += [pv.GetName() for pv in daughters]
        stack += [pv.GetLogicalVolume() for pv in reversed(daughters)]
    return names


@pytest.mark.parametrize("turned", [False, True])
def test_a_gdml_section_alone_is_built_from_its_own_volumes(tmp_path, turned):
    """The HCAL alone (to measure its sampling fraction): Geant4 builds the slabs behind the ECAL only,
    their front face at calofm's z = 0, also from inside an envelope that holds both sections; its
    electrons deposit at the EM scale."""
    preset = get_detector("ild-ecal-hcal")
    frame = Frame((100.0, -50.0, 400.0), (0.5, 0.0, math.sqrt(0.75))) if turned else Frame()
    gdml = write_gdml(preset, tmp_path / "calo.gdml", frame)
    hcal = get_detector(str(write_sidecar(preset, gdml, tmp_path / "calo.yaml", frame))).section_detector(1)
    ecal_depth = preset.section_ranges[0][1]
    assert hcal.gdml.alone
    np.testing.assert_allclose(hcal.gdml.frame.front_mm, frame.to_geant4(np.array([0.0, 0.0, ecal_depth])))
    assert hcal.depth_mm == pytest.approx(preset.section_detector(1).depth_mm)
    assert hcal.mesh == preset.section_detector(1).mesh
    ecal_slabs = len(preset.section_detector(0).slabs)
    assert runner._in_worker(hcal, Gun(), Physics(), _placed_volumes) == ["calorimeter"] * turned + [
        f"slab{i}" for i in range(ecal_slabs, len(preset.slabs))]
    simulate(Run(hcal, Gun("e-", Spectrum.parse("5")), 4, seed=5), tmp_path / "hcal.h5", progress=False)
    with open_showers(tmp_path / "hcal.h5") as f:
        assert 0.8 * 5000 < f.read().showers.sum(1).mean() < 1.2 * 5000


@pytest.mark.parametrize("spoil, message", [
    (None, "no such GDML file"),
    (lambda text: text[:300], "is not well-formed XML"),
    (lambda text: text.replace("<gdml>", "<gdmx>").replace("</gdml>", "</gdmx>"), "is XML but not GDML"),
    (lambda text: text.replace('ref="G4_W"', 'ref="G4_Unobtainium"'),
     "Geant4 cannot build it: G4Exception : InvalidRead issued by : G4GDMLReadMaterials::GetMaterial() "
     "Referenced material 'G4_Unobtainium' was not found!"),
    (lambda text: text.replace('auxtype="SensDet"', 'auxtype="Colour"'), "no volume carries a SensDet auxiliary"),
])
def test_bad_gdml_is_one_line_naming_the_file(siw_gdml, tmp_path, capsys, spoil, message):
    bad = tmp_path / "bad.gdml"
    if spoil is not None:
        bad.write_text(spoil(siw_gdml.read_text()))
    with pytest.raises(InputError, match=f"^{bad}: "):
        get_detector(str(bad))
    assert main(["detectors", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_detectors_writes_a_preset_as_gdml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["detectors", "pbwo4", "--gdml"]) == 0
    assert "wrote pbwo4.gdml" in capsys.readouterr().out
    assert main(["detectors", "pbwo4.gdml"]) == 0
    assert '"active_volumes"' in capsys.readouterr().out


def test_a_preset_through_gdml_gives_its_showers_bit_for_bit(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["detectors", "par04-siw", "--gdml"]) == 0
    assert "wrote par04-siw.gdml and par04-siw-gdml.yaml" in capsys.readouterr().out
    for detector, out in (("par04-siw", "preset.h5"), ("par04-siw-gdml.yaml", "gdml.h5")):
        assert main(["simulate", "--detector", detector, "--energy", "loguniform:1:10", "--n", "4", "--seed", "7",
                     "--out", out]) == 0
    with open_showers(tmp_path / "preset.h5") as f:
        preset = f.read()
    with open_showers(tmp_path / "gdml.h5") as f:
        gdml, meta = f.read(), f.metadata
    np.testing.assert_array_equal(gdml.showers, preset.showers)
    assert gdml.showers.sum() > 0
    described = json.loads(meta["detector_description"])["gdml"]
    assert described["sha256"] == hashlib.sha256((tmp_path / "par04-siw.gdml").read_bytes()).hexdigest()
    assert json.loads(meta["settings"])["detector_fingerprint"] != get_detector("par04-siw").fingerprint


CRYSTALS = """<?xml version="1.0" encoding="UTF-8"?>
<gdml>
  <solids>
    <box name="world" x="400" y="400" z="700" lunit="mm"/>
    <box name="crystal" x="22" y="22" z="230" lunit="mm"/>
  </solids>
  <structure>
    <volume name="crystal">
      <materialref ref="G4_PbWO4"/>
      <solidref ref="crystal"/>
      <auxiliary auxtype="SensDet" auxvalue="crystal"/>
    </volume>
    <volume name="world">
      <materialref ref="G4_Galactic"/>
      <solidref ref="world"/>
{placements}
    </volume>
  </structure>
  <setup name="Default" version="1.0"><world ref="world"/></setup>
</gdml>
"""


def crystal_matrix(shift_mm: float = 0.0) -> str:
    """A 5 x 5 matrix of 22 x 22 x 230 mm PbWO4 crystals, front faces at z = shift_mm."""
    return CRYSTALS.format(placements="\n".join(
        f'      <physvol name="c{i}{j}" copynumber="{5 * i + j}"><volumeref ref="crystal"/>'
        f'<position name="p{i}{j}" x="{22 * (i - 2)}" y="{22 * (j - 2)}" z="{115 + shift_mm}" unit="mm"/></physvol>'
        for i in range(5) for j in range(5)))


def test_a_crystal_calorimeter_built_only_in_gdml(tmp_path):
    (tmp_path / "crystals.gdml").write_text(crystal_matrix())
    (tmp_path / "crystals.yaml").write_text("name: crystals\ngdml: crystals.gdml\nsampling_fraction: 1.0\n"
                                            "mesh: {n_r: 9, n_alpha: 16, n_z: 23, dr: 4.4}\n")
    detector = get_detector(str(tmp_path / "crystals.yaml"))
    assert detector.depth_mm == pytest.approx(230.0) and detector.active_materials == ["G4_PbWO4"]
    assert detector.mesh.dz == pytest.approx(10.0)  # the depth over n_z unless given
    out = tmp_path / "crystals.h5"
    assert main(["simulate", "--detector", str(tmp_path / "crystals.yaml"), "--energy", "5", "--n", "3",
                 "--out", str(out)]) == 0
    with open_showers(out) as f:
        showers = f.read()
    contained = showers.showers.sum(1) / showers.energy
    assert np.all((contained > 0.85) & (contained < 1.0))  # a homogeneous calorimeter: almost all of it, on the mesh


def test_the_front_face_is_found_and_a_frame_off_it_is_one_line(tmp_path, capsys):
    """Without a frame, particles aim at the centre of the calorimeter's front face wherever it lies;
    a front point off that face, or a world too small, is one line."""
    (tmp_path / "moved.gdml").write_text(crystal_matrix(30.0))
    (tmp_path / "moved.yaml").write_text("name: moved\ngdml: moved.gdml\nsampling_fraction: 1.0\n")
    detector = get_detector(str(tmp_path / "moved.yaml"))
    assert detector.gdml.frame == Frame((0.0, 0.0, 30.0)) and detector.depth_mm == pytest.approx(230.0)
    assert detector.lateral_mm == pytest.approx(110.0)
    for extra, gdml, message in (("frame: {front_mm: [0, 0, 0]}\n", crystal_matrix(30.0),
                                  "the calorimeter's front face is 30 mm from frame.front_mm [0.0, 0.0, 0.0]"),
                                 ("", crystal_matrix().replace('z="700"', 'z="300"'), "must hold the calorimeter")):
        (tmp_path / "moved.gdml").write_text(gdml)
        (tmp_path / "moved.yaml").write_text("name: moved\ngdml: moved.gdml\nsampling_fraction: 1.0\n" + extra)
        assert main(["simulate", "--detector", str(tmp_path / "moved.yaml"), "--n", "1",
                     "--out", str(tmp_path / "x.h5")]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "moved.gdml" in err and len(err.splitlines()) == 1


def test_active_volumes_named_in_the_sidecar(tmp_path, siw_gdml, capsys):
    """A file without SensDet auxiliaries (as DD4hep exports it): the sidecar's active patterns name the
    volumes that record, and override SensDet where the file has it."""
    (tmp_path / "bare.gdml").write_text(crystal_matrix().replace('<auxiliary auxtype="SensDet" auxvalue="crystal"/>',
                                                                 ""))
    (tmp_path / "bare.yaml").write_text("sampling_fraction: 1.0\nmesh: {n_z: 23, dr: 4.4}\nactive: ['cry*']\n")
    detector = get_detector(str(tmp_path / "bare.gdml"), str(tmp_path / "bare.yaml"))
    assert detector.gdml.active_volumes == ("crystal",) and detector.active_materials == ["G4_PbWO4"]
    out = tmp_path / "bare.h5"
    assert main(["simulate", "--detector", str(tmp_path / "bare.gdml"), "--calo-sidecar", str(tmp_path / "bare.yaml"),
                 "--energy", "5", "--n", "2", "--out", str(out)]) == 0
    with open_showers(out) as f:
        showers = f.read()
    assert np.all(showers.showers.sum(1) > 0.85 * showers.energy)
    (tmp_path / "w.yaml").write_text("sampling_fraction: 0.5\nactive: [slab0]\n")  # the tungsten, not the silicon
    assert get_detector(str(siw_gdml), str(tmp_path / "w.yaml")).active_materials == ["G4_W"]
    (tmp_path / "typo.yaml").write_text("sampling_fraction: 1.0\nactive: [Crystal]\n")
    assert main(["detectors", str(tmp_path / "bare.gdml"), "--calo-sidecar", str(tmp_path / "typo.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("typo.yaml: active: 'Crystal' names no volume of bare.gdml; its volumes: crystal, world")
    (tmp_path / "slabs.yaml").write_text("name: x\nactive: [a]\nlayers: [{slabs: [{material: G4_Si, thickness: 1}]}]\n")
    with pytest.raises(InputError, match="frame and active .volumes. go with a GDML file"):
        get_detector(str(tmp_path / "slabs.yaml"))


OWN_MATERIALS = """
  <materials>
    <element name="Lead" formula="Pb" Z="82"><atom value="207.2"/></element>
    <element name="Tungsten" formula="W" Z="74"><atom value="183.84"/></element>
    <element name="Oxygen" formula="O" Z="8"><atom value="16.0"/></element>
    <material name="MyPWO" state="solid">
      <D value="8.28"/>
      <composite n="1" ref="Lead"/><composite n="1" ref="Tungsten"/><composite n="4" ref="Oxygen"/>
    </material>
  </materials>"""


def test_a_gdml_file_with_its_own_materials_and_a_sidecar(tmp_path, capsys):
    """Elements and a mixture only the GDML file defines; the detector named by the .gdml file itself,
    its name, mesh and sampling fraction from a sidecar."""
    text = crystal_matrix().replace("<gdml>", "<gdml>" + OWN_MATERIALS).replace('ref="G4_PbWO4"', 'ref="MyPWO"')
    (tmp_path / "mine.gdml").write_text(text)
    (tmp_path / "side.yaml").write_text("name: my-crystals\nsampling_fraction: 1.0\n"
                                        "mesh: {n_r: 9, n_alpha: 16, n_z: 23, dr: 4.4}\n")
    detector = get_detector(str(tmp_path / "mine.gdml"), str(tmp_path / "side.yaml"))
    assert detector.name == "my-crystals" and detector.active_materials == ["MyPWO"]
    out = tmp_path / "mine.h5"
    assert main(["simulate", "--detector", str(tmp_path / "mine.gdml"), "--calo-sidecar", str(tmp_path / "side.yaml"),
                 "--energy", "5", "--n", "2", "--out", str(out)]) == 0
    with open_showers(out) as f:
        showers = f.read()
    contained = showers.showers.sum(1) / showers.energy
    assert np.all((contained > 0.85) & (contained < 1.0))
    # without a sidecar the sampling fraction is still to be measured: simulate says how
    assert main(["simulate", "--detector", str(tmp_path / "mine.gdml"), "--n", "1",
                 "--out", str(tmp_path / "y.h5")]) == 2
    assert "calofm detectors --measure" in capsys.readouterr().err
    assert main(["simulate", "--detector", "par04-siw", "--calo-sidecar", str(tmp_path / "side.yaml"), "--n", "1",
                 "--out", str(tmp_path / "z.h5")]) == 2
    assert "--calo-sidecar: goes with a GDML detector" in capsys.readouterr().err


# --- calofm's frame in a GDML file's coordinates ----------------------------------------------
def test_a_frame_is_an_orthonormal_right_handed_turn_and_its_inverse():
    frame = Frame.parse({"normal": [3, 0, 4], "beam": [1, 1, 0]}, lambda normal, beam: normal * 0 + 7, "side.yaml")
    assert frame.normal == pytest.approx((0.6, 0, 0.8)) and frame.front_mm == (7.0, 7.0, 7.0)
    r = frame.rotation
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-15)
    assert np.linalg.det(r) == pytest.approx(1.0) and r[:, 1] @ r[:, 2] == pytest.approx(0.0, abs=1e-15)
    points = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_allclose(frame.to_calofm(frame.to_geant4(points)), points, atol=1e-12)
    np.testing.assert_allclose(frame.to_geant4(np.array([0.0, 0.0, 2.0])), np.array([7, 7, 7]) + 2 * r[:, 2])
    assert Frame.parse({}, lambda normal, beam: np.zeros(3), "side.yaml").identity and not frame.identity
    for bad, message in (({"normal": [0, 2, 0]}, "frame.beam is parallel to frame.normal"),
                         ({"normal": [0, 0]}, "frame.normal: expected a non-zero vector"),
                         ({"front_mm": "here"}, "frame.front_mm: expected a point"),
                         ({"axis": [0, 0, 1]}, "frame.axis: unknown key")):
        with pytest.raises(InputError, match=f"^side.yaml: {message}"):
            Frame.parse(bad, lambda normal, beam: np.zeros(3), "side.yaml")
    with pytest.raises(InputError, match="frame and active .volumes. go with a GDML file"):
        get_detector("par04-siw").from_dict({**get_detector("par04-siw").to_dict(), "frame": {}}, "my.yaml")


def test_a_preset_written_in_any_frame_reads_back_in_calofms(tmp_path):
    """Slabs turned by a general rotation and moved: read with the frame they were written in, they are
    the preset's, front face at z = 0 and 1 m wide."""
    frame = Frame.parse({"front_mm": [-300, 20, 75], "normal": [1, 2, 3], "beam": [0, 0, 1]}, None, "any")
    preset = get_detector("par04-siw")
    gdml = write_gdml(preset, tmp_path / "any.gdml", frame)
    detector = get_detector(str(write_sidecar(preset, gdml, tmp_path / "any.yaml", frame)))
    np.testing.assert_allclose(np.array(astuple(detector.gdml.frame)), np.array(astuple(frame)), atol=1e-12)
    half = preset.lateral_mm / 2
    np.testing.assert_allclose(read_gdml(gdml).bounds(frame), [[-half, half], [-half, half], [0, preset.depth_mm]],
                               atol=1e-9)
    assert detector.mesh == preset.mesh and detector.sampling_fraction == preset.sampling_fraction


@pytest.fixture(scope="module")
def tilted_siw(tmp_path_factory):
    """par04-siw turned by 30 degrees about y and moved to (100, -50, 400) mm; its sidecar names the
    normal only, so the front point is found."""
    folder = tmp_path_factory.mktemp("tilted")
    frame = Frame((100.0, -50.0, 400.0), (math.sin(math.pi / 6), 0.0, math.cos(math.pi / 6)))
    gdml = write_gdml(get_detector("par04-siw"), folder / "tilted.gdml", frame)
    (folder / "tilted.yaml").write_text("name: par04-siw-tilted\nsampling_fraction: 0.02366\nmesh: {dz: 3.4}\n"
                                        f"frame: {{normal: {list(frame.normal)}}}\n")
    return get_detector(str(gdml), str(folder / "tilted.yaml"))


def test_a_tilted_moved_calorimeter_is_read_in_calofms_frame(tilted_siw, capsys):
    """Rotated volumes count with their rotation; the front point defaults to the front face's centre."""
    preset = get_detector("par04-siw")
    assert tilted_siw.gdml.frame.front_mm == pytest.approx((100.0, -50.0, 400.0))
    assert tilted_siw.depth_mm == pytest.approx(preset.depth_mm) and tilted_siw.lateral_mm == pytest.approx(1000.0)
    assert tilted_siw.mesh == preset.mesh
    assert main(["detectors", tilted_siw.gdml.path, "--calo-sidecar", tilted_siw.gdml.path[:-4] + "yaml"]) == 0
    listed = json.loads(capsys.readouterr().out)[0]
    assert listed["frame"]["normal"] == pytest.approx([0.5, 0, math.sqrt(0.75)])
    assert listed["depth_mm"] == pytest.approx(preset.depth_mm)


def test_the_fast_simulation_in_a_tilted_calorimeter_hands_off_in_calofms_frame(tilted_siw, tmp_path):
    """Inclined electrons fired at the tilted calorimeter enter it as they enter the preset: the model's
    showers land on the mesh exactly as there (gun, hand-off position and direction all turned)."""
    gun = Gun("e-", Spectrum.parse("loguniform:2:20"), Spectrum.parse("1.3"))
    for detector, out in ((get_detector("par04-siw"), "preset.h5"), (tilted_siw, "tilted.h5")):
        fast_sim = FastSim.open("fm-1-fast", detector, ("e-",), classes="par04-siw-e-")
        assert simulate(Run(detector, gun, 3, seed=4, fast_sim=fast_sim), tmp_path / out,
                        progress=False)["handed_off"] == 3
    with open_showers(tmp_path / "preset.h5") as f, open_showers(tmp_path / "tilted.h5") as g:
        preset, turned = f.read().showers, g.read().showers
    assert preset.sum() > 0
    np.testing.assert_allclose(turned, preset, rtol=1e-5, atol=1e-4)


def test_geant4_in_a_tilted_calorimeter_gives_the_presets_showers_in_distribution(tilted_siw, tmp_path):
    """Geant4 alone: the same physics, so the same energy on the mesh and the same longitudinal and
    radial centres of gravity within 4 standard errors (the showers differ event by event, as the
    navigation's rounding differs)."""
    gun = Gun("e-", Spectrum.parse("5"), Spectrum.parse("1.1"))
    stats = []
    for detector, out in ((get_detector("par04-siw"), "preset.h5"), (tilted_siw, "tilted.h5")):
        simulate(Run(detector, gun, 80, seed=9), tmp_path / out, progress=False, workers=2)
        with open_showers(tmp_path / out) as f:
            x = f.read().showers.reshape(80, 45, 16, 9).astype(np.float64)
        energy = x.sum((1, 2, 3))
        z = (x.sum((2, 3)) * np.arange(45)).sum(1) / energy
        r = (x.sum((1, 2)) * np.arange(9)).sum(1) / energy
        stats.append([(v.mean(), v.std(ddof=1) / math.sqrt(len(v))) for v in (energy, z, r)])
    assert stats[0][0][0] > 0.9 * 5000  # most of the 5 GeV on the mesh
    for (a, ea), (b, eb) in zip(*stats):
        assert abs(a - b) < 4 * math.hypot(ea, eb)


# --- recording a measured sampling fraction ------------------------------------------------------
def test_a_recorded_sampling_fraction_replaces_its_line_and_keeps_the_rest(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("# my detector\nname: mine  # named by me\nsampling_fraction: null\nmesh: {n_z: 20}\n")
    record_sampling_fraction(mine, 0.123456, 0.0011)
    assert mine.read_text() == ("# my detector\nname: mine  # named by me\nsampling_fraction: 0.12346  # measured by "
                                "calofm detectors --measure: 0.12346 +- 0.00110\nmesh: {n_z: 20}\n")
    side = tmp_path / "new" / "side.yaml"
    record_sampling_fraction(side, 0.5, 0.01)
    assert yaml.safe_load(side.read_text()) == {"sampling_fraction": 0.5}
    (tmp_path / "flow.yaml").write_text("{name: mine, sampling_fraction: 0.2}\n")
    with pytest.raises(InputError, match="flow.yaml: cannot record the sampling fraction: the file is not a block"):
        record_sampling_fraction(tmp_path / "flow.yaml", 0.3, 0.01)
    assert (tmp_path / "flow.yaml").read_text() == "{name: mine, sampling_fraction: 0.2}\n"  # left as it was


def test_measure_and_record_a_gdml_detectors_sampling_fraction(tmp_path, capsys):
    """A bare crystal matrix: --measure --record writes a new sidecar, and the detector then simulates."""
    gdml, side = tmp_path / "crystals.gdml", tmp_path / "crystals.yaml"
    gdml.write_text(crystal_matrix())
    for args, message in ((["--measure", "--record", str(gdml)], "crystals.gdml: --record writes into the GDML "
                                                                  "file's sidecar: give --calo-sidecar FILE"),
                          (["--measure", "--record", "par04-siw"], "par04-siw: is a preset"),
                          (["--record", "par04-siw"], "--record: records what --measure measures"),
                          (["--measure", "--record", "ild-ecal-hcal"], "ild-ecal-hcal: has sections")):
        assert main(["detectors", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
    assert main(["detectors", "--measure", "--record", str(gdml), "--calo-sidecar", str(side)]) == 0
    captured = capsys.readouterr()
    recorded = yaml.safe_load(side.read_text())["sampling_fraction"]
    assert 0.85 < recorded < 1.0  # a homogeneous calorimeter: what leaks out of 23 cm of PbWO4 is missing
    assert f"recorded sampling_fraction {recorded:.5f} of crystals in {side}" in captured.err
    assert json.loads(captured.out)[0]["measured_sampling_fraction"].startswith(f"{recorded:.5f} +- ")
    assert get_detector(str(gdml), str(side)).sampling_fraction == recorded
