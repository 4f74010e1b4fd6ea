"""Detectors as GDML: a preset written out and read back by Geant4; bad GDML is one line."""

import pytest

from calofm.cli.main import main
from calofm.core.errors import InputError
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
