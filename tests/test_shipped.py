"""Models shipped inside the package, loaded by name wherever a run folder is taken."""

import json
import shutil

import pytest

from calofm.cli.main import main
from calofm.core.errors import InputError
from calofm.data import open_showers
from calofm.inference import load_model
from calofm.train import saved
from calofm.train.saved import resolve, shipped_names


@pytest.fixture
def shelf(toys, tmp_path, monkeypatch):
    """A package shelf holding the toy EDM base as 'toy-fm' and its CD student as 'toy-cd'."""
    shelf = tmp_path / "shipped"
    for run, name in (("base", "toy-fm"), ("base_cd", "toy-cd")):
        (shelf / name).mkdir(parents=True)
        for file in ("model.safetensors", "model.json"):
            shutil.copyfile(toys / run / file, shelf / name / file)
    (shelf / "not-a-model").mkdir()
    monkeypatch.setattr(saved, "SHIPPED", shelf)
    return shelf


def test_a_name_loads_the_shipped_model_and_a_path_wins(shelf, toys, tmp_path, monkeypatch):
    assert shipped_names() == ["toy-cd", "toy-fm"]
    named = load_model("toy-fm")
    assert named.describe == load_model(toys / "base").describe and named.path == shelf / "toy-fm" / "model.safetensors"
    (tmp_path / "toy-fm").mkdir()  # a folder of that name here is what the user means
    monkeypatch.chdir(tmp_path)
    assert resolve("toy-fm") == tmp_path.joinpath("toy-fm").relative_to(tmp_path)


def test_an_unknown_name_lists_the_shipped_ones(shelf):
    with pytest.raises(InputError, match=r"fm-9: no such run folder or model file, and no shipped model of that "
                                         r"name \(shipped: toy-cd, toy-fm\)"):
        load_model("fm-9")


def test_generate_adapt_and_export_take_a_shipped_name(shelf, toys, tmp_path, one_thread):
    out = tmp_path / "gen.h5"
    assert main(["generate", "--model", "toy-fm", "--n", "4", "--energy", "5", "--detector", "a", "--steps", "2",
                 "--out", str(out)]) == 0
    with open_showers(out) as f:
        assert len(f.read()) == 4 and f.metadata["model"] == str(shelf / "toy-fm" / "model.safetensors")
    assert main(["adapt", "--from", "toy-fm", "--data", str(toys / "c.h5"), "--strategy", "bitfit", "--steps", "2",
                 "--batch-size", "8", "--out", str(tmp_path / "adapted"), "--no-progress"]) == 0
    adapted = json.loads((tmp_path / "adapted" / "model.json").read_text())
    assert adapted["adapted"]["from"] == str(shelf / "toy-fm" / "model.safetensors")
    assert adapted["conditions"]["detectors"] == ["a", "b", "c"]
    assert main(["export", "--model", "toy-cd", "--out", str(tmp_path / "toy.onnx")]) == 0
    assert (tmp_path / "toy.onnx").stat().st_size > 0


def test_adapting_a_name_that_is_neither_a_folder_nor_shipped_is_one_line(shelf, toys, tmp_path, capsys):
    assert main(["adapt", "--from", "fm-9", "--data", str(toys / "c.h5"), "--steps", "2",
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "fm-9: no such run folder or model file" in err
    assert not (tmp_path / "x").exists()  # nothing written before the error


def test_only_a_bare_name_reaches_the_shelf(shelf):
    for name in ("../toy-fm", str(shelf.parent / "nowhere" / "toy-fm"), "sub/toy-fm"):
        with pytest.raises(InputError, match="no such run folder or model file"):
            resolve(name)


def test_a_shipped_model_distils_by_name(shelf, tmp_path, tiny_run_config, one_thread):
    config = tiny_run_config(tmp_path, "cd", {}, 2, process={"name": "cd", "teacher": "toy-fm"})
    assert main(["train", "--config", str(config), "--no-progress"]) == 0
    student = load_model(tmp_path / "cd")
    assert student.describe["process"] == "consistency"
    assert student.conditions.detectors == load_model("toy-fm").conditions.detectors == ["a", "b"]
