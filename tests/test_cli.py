import json

import numpy as np
import pytest

from calofm.cli.main import build_parser, main
from calofm.data import open_showers, write_showers
from calofm.data.toy import toy_showers


def _inspect(path, capsys, *extra):
    assert main(["inspect", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_dataset_2_file(ds2_file, capsys):
    info = _inspect(ds2_file, capsys)
    assert info["format"] == "calochallenge" and info["showers"] == 40 and info["valid"]
    assert info["n_voxels"] == 6480 and "45 x 16 x 9" in info["binning"]
    assert 1 <= info["incident_energy_GeV"][0] < info["incident_energy_GeV"][1] <= 100
    assert 0.5 < info["mean_sparsity"] < 1


def test_inspect_dataset_1_photon_file(tmp_path, ds1_photons, capsys):
    path = tmp_path / "photons.h5"
    showers = toy_showers(ds1_photons, 10, seed=0)
    write_showers(path, showers, "calochallenge", ds1_photons)
    info = _inspect(path, capsys)
    assert info["n_voxels"] == 368 and info["binning"].startswith("dataset_1_photons: 368 voxels")
    expected = np.mean(showers.showers == 0)
    assert info["mean_sparsity"] == pytest.approx(expected)


def test_inspect_human_readable(ds2_file, capsys):
    assert main(["inspect", str(ds2_file)]) == 0
    out = capsys.readouterr().out
    assert "6480 voxels = 45 x 16 x 9" in out and "calochallenge" in out


def test_convert_command(tmp_path, ds2_file, capsys):
    out = tmp_path / "pc.h5"
    assert main(["convert", str(ds2_file), str(out), "--to", "caloclouds", "--seed", "3"]) == 0
    assert "smeared" in capsys.readouterr().out
    back = tmp_path / "back.h5"
    assert main(["convert", str(out), str(back), "--to", "lemurs", "--target-binning", "dataset_2"]) == 0
    with open_showers(back) as f, open_showers(ds2_file) as g:
        np.testing.assert_allclose(f.read().showers, g.read().showers, rtol=1e-6)


def test_unknown_binning_file_is_a_one_line_error(ds2_file, capsys):
    assert main(["inspect", str(ds2_file), "--binning", "nope.xml"]) == 2
    assert "nope.xml: no such binning file" in capsys.readouterr().err


def test_every_subcommand_and_option_explains_itself(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    one_line = {a.dest: a.help for a in sub._choices_actions}
    for name, sub_parser in sub.choices.items():
        assert one_line[name] and sub_parser.description, name
        assert len(sub_parser.description) > len(one_line[name]), name  # --help says more than the list
        undocumented = [a.option_strings or a.dest for a in sub_parser._actions if not a.help]
        assert not undocumented, (name, undocumented)
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0 and f"usage: calofm {name}" in capsys.readouterr().out


@pytest.mark.slow
def test_pretrain_demo_runs_the_whole_chain_and_reports_every_strategy(tmp_path, capsys, one_thread):
    assert main(["demo", "--pretrain", "--scale", "smoke", "--out", str(tmp_path), "--workers", "2", "--no-progress",
                 "--families", "dit,vit"]) == 0
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert list(summary["rows"]) == ["scratch", "full", "bitfit", "lora", "vit-scratch", "vit-full", "vit-reinit"]
    assert set(summary["gain_over_scratch"]) == {"full", "bitfit", "lora", "vit-full", "vit-reinit"}
    for row in summary["rows"].values():
        gm = row["sizes"]["40"]["gm"]
        assert gm["value"] > 0 and gm["error"] > 0
    assert summary["rows"]["bitfit"]["percent"] < summary["rows"]["lora"]["percent"] < 100
    report = (tmp_path / "report.md").read_text()
    assert "| bitfit |" in report and "Gain over scratch" in report and "(study_gm.png)" in report
    assert "report:" in capsys.readouterr().out


def test_demo_refuses_an_unknown_family(tmp_path, capsys):
    assert main(["demo", "--families", "dit,gan", "--out", str(tmp_path / "x")]) == 2
    assert "--families: unknown family 'gan'; known: dit, vit" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
