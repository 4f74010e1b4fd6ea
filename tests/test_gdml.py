"""Detectors as GDML: a preset written out and read back by Geant4; bad GDML is one line."""

import hashlib
import json

import numpy as np
import pytest

from calofm.cli.main import main
from calofm.core.errors import InputError
from calofm.data import open_showers
from calofm.simulate.detectors import get_detector
from calofm.simulate.gdml import read_gdml, write_gdml


@pytest.fixture(scope="module")
def siw_gdml(tmp_path_factory):
    return write_gdml(get_detector("par04-siw"), tmp_path_factory.mktemp("gdml") / "siw.gdml")


def test_a_written_preset_reads_back_as_its_slabs(siw_gdml):
    detector = get_detector("par04-siw")
    geometry = read_gdml(siw_gdml)
    assert geometry.placements == len(detector.slabs)
    assert set(geometry.volumes.values()) == {"G4_Galactic", "G4_W", "G4_Si"}
    assert [geometry.volumes[v] for v in geometry.sensitive] == ["G4_Si"]  # the active layers, and only they
    assert geometry.extent_mm == pytest.approx((detector.lateral_mm / 2 + 10,) * 2 + (detector.depth_mm + 50,))
    assert len(geometry.sha256) == 64


def test_every_section_of_a_preset_is_written(tmp_path):
    geometry = read_gdml(write_gdml(get_detector("ild-ecal-hcal"), tmp_path / "ecal-hcal.gdml"))
    # one Si volume serves both ECAL blocks (same material and thickness), as in SlabCalorimeter
    assert sorted(geometry.volumes[v] for v in geometry.sensitive) == ["G4_POLYSTYRENE", "G4_Si"]
    assert geometry.placements == len(get_detector("ild-ecal-hcal").slabs)


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
        read_gdml(bad)
    assert main(["detectors", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_detectors_writes_a_preset_as_gdml(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["detectors", "pbwo4", "--gdml"]) == 0
    assert "wrote pbwo4.gdml" in capsys.readouterr().out
    assert main(["detectors", "pbwo4.gdml"]) == 0
    assert '"sensitive"' in capsys.readouterr().out


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


@pytest.mark.parametrize("gdml, message", [
    (crystal_matrix(30.0), "the calorimeter's front face is at z = 30 mm"),
    (crystal_matrix().replace('z="700"', 'z="300"'), "must hold the calorimeter"),  # the crystals stick out
])
def test_a_calorimeter_out_of_place_is_one_line(tmp_path, capsys, gdml, message):
    (tmp_path / "moved.gdml").write_text(gdml)
    (tmp_path / "moved.yaml").write_text("name: moved\ngdml: moved.gdml\nsampling_fraction: 1.0\n")
    assert main(["simulate", "--detector", str(tmp_path / "moved.yaml"), "--n", "1",
                 "--out", str(tmp_path / "x.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "moved.gdml" in err and len(err.splitlines()) == 1


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
