"""Every bad input and every fault ends in one clear line, with nothing lost and nothing left behind.

Each class of failure found by driving the CLI as a demanding user would: the command exits
non-zero with exactly one line on stderr naming the file or the argument, no traceback, no
partial file, and earlier outputs intact. Warnings (units that look wrong, a batch capped at the
data) are one line too, and the command goes on.
"""

import errno
import json
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

from calofm.cli.main import main
from calofm.core.files import partial_path
from calofm.data import open_showers, write_showers
from calofm.data.formats import CalofmFormat
from calofm.data.toy import toy_showers
from calofm.simulate.detectors import preset_names

DETECTOR = {"name": "tiny", "sampling_fraction": 0.02,
            "layers": [{"repeat": 3, "slabs": [{"material": "G4_W", "thickness": 1.4},
                                               {"material": "G4_Si", "thickness": 0.3, "active": True}]}]}


def run(argv, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``calofm argv``, argparse's exits included."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def fails(argv, capsys, *names: str) -> str:
    """Assert the one-line failure of ``calofm argv`` that names each of ``names``; return the line."""
    code, _, err = run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def warned(err: str, *words: str) -> None:
    """Assert exactly one calofm warning line in ``err`` holding every one of ``words``."""
    lines = [line for line in err.splitlines() if line.startswith("calofm: warning:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])


def no_partials(folder) -> None:
    left = [p.name for p in folder.rglob(".*.partial-*")]
    assert not left, left


@pytest.fixture(scope="module")
def files(tmp_path_factory, ds2):
    """Toy files: ``toy.h5`` (20 showers), ``empty.h5`` (none) and a tiny model trained on the first."""
    folder = tmp_path_factory.mktemp("reliability")
    write_showers(folder / "toy.h5", toy_showers(ds2, 20, seed=1, e_min=2e3, e_max=2e4), "calochallenge", ds2)
    with h5py.File(folder / "empty.h5", "w") as f:
        f["incident_energies"] = np.zeros((0, 1))
        f["showers"] = np.zeros((0, ds2.n_voxels), np.float32)
    return folder


@pytest.fixture(scope="module")
def model(files, tiny_run_config):
    config = tiny_run_config(files, "run", {"toy": str(files / "toy.h5")}, 2)
    assert main(["train", "--config", str(config), "--no-progress"]) == 0
    return files / "run"


def train_config(folder, files, **changes):
    config = {"out": str(folder / "out"), "data": {"detectors": {"toy": str(files / "toy.h5")}, "val_fraction": 0.0},
              "model": {"backbone": "dit", "args": {"patch": [3, 4, 5], "dim": 36, "depth": 1, "heads": 2,
                                                    "mlp_dim": 36}},
              "train": {"steps": 2, "batch_size": 8, "device": "cpu"}}
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        target = config
        for part in filter(None, section.split(".")):
            target = target.setdefault(part, {})
        target[name] = value
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def detector_yaml(folder, **changes) -> str:
    path = folder / "det.yaml"
    path.write_text(yaml.safe_dump({**DETECTOR, **changes}))
    return str(path)


# --- 1. a batch larger than the data -----------------------------------------------------------
def test_a_batch_larger_than_the_data_is_capped_at_it_with_a_warning(tmp_path, files, capsys, one_thread):
    config = train_config(tmp_path, files, **{"train.batch_size": 100_000})
    code, _, err = run(["train", "--config", config, "--no-progress"], capsys)
    assert code == 0
    warned(err, "train.batch_size 100000", "20 training rows", "batches of 20")
    assert (tmp_path / "out" / "model.safetensors").exists()


# --- 2. a full disk ----------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs, where this machine lets the tests mount one (root); the simulated ENOSPC
    tests below cover the same error path elsewhere."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


# calofm in its own process (a crash shows as its exit code, not as a dead test run); "blind" hides
# the free space from calofm's check before each batch, so that HDF5 itself meets the full disk
_CLI = "import sys; from calofm.cli.main import main; sys.exit(main(sys.argv[1:]))"
_BLIND = "import collections, shutil; shutil.disk_usage = lambda p: collections.namedtuple('u', 'free')(1 << 40); "


def _cli(*argv, blind: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", (_BLIND if blind else "") + _CLI, *map(str, argv)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("blind", [False, True], ids=["checked before the batch", "met by HDF5"])
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(small_disk, tmp_path, ds2, blind):
    big = tmp_path / "big.h5"  # about 3 MB compressed: more than the disk holds
    write_showers(big, toy_showers(ds2, 1000, seed=2), "calochallenge", ds2)
    earlier = small_disk / "out.h5"
    earlier.write_bytes(b"an earlier result")
    done = _cli("convert", big, earlier, "--to", "calofm", blind=blind)
    assert done.returncode == 2, done.stderr  # not 139: h5py used to crash on the full disk
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"calofm convert: error: {earlier}: cannot write (No space left "
                                                   "on device"), done.stderr
    assert lines[0].endswith("; the partial file is removed")
    assert earlier.read_bytes() == b"an earlier result" and os.listdir(small_disk) == ["out.h5"]


@pytest.mark.slow
def test_a_simulation_on_a_full_disk_stops_in_one_line_and_resumes(small_disk):
    out = small_disk / "run.h5"
    argv = ("simulate", "--detector", "par04-siw", "--energy", "20", "--n", "40", "--points", "--out", out)
    done = _cli(*argv, "--workers", "1")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "No space left on device" in done.stderr
    parts = small_disk / "run.h5.parts"
    json.loads((parts / "run.json").read_text())  # the resumable state stays readable
    no_partials(small_disk)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert _cli(*argv).returncode == 0
    with open_showers(out) as f:
        assert len(f) == 40 and sorted(f.read().event) == list(range(40))


def test_a_simulated_enospc_is_one_line_and_keeps_the_earlier_output(tmp_path, files, monkeypatch, capsys):
    """Where no small disk can be mounted: the same failure raised where HDF5 writes."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    out = tmp_path / "out.h5"
    assert run(["convert", files / "toy.h5", out, "--to", "calofm"], capsys)[0] == 0
    before = out.read_bytes()
    monkeypatch.setattr(CalofmFormat, "append", full)
    line = fails(["convert", files / "toy.h5", out, "--to", "calofm"], capsys, out, "No space left on device")
    assert line.endswith("the partial file is removed")
    assert out.read_bytes() == before
    no_partials(tmp_path)


# --- 3. outputs that cannot be written ------------------------------------------------------------
def _unwritable(tmp_path, kind):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    return {"under a file": tmp_path / "file.txt" / "out.h5", "in /proc": "/proc/calofm-out.h5",
            "onto a folder": tmp_path / "folder"}[kind]


@pytest.mark.parametrize("kind", ["under a file", "in /proc", "onto a folder"])
@pytest.mark.parametrize("command", ["convert", "generate", "simulate", "export", "merge"])
def test_an_output_that_cannot_be_written_is_refused_first(tmp_path, files, model, capsys, kind, command):
    out = _unwritable(tmp_path, kind)
    argv = {"convert": ["convert", files / "toy.h5", out, "--to", "calofm"],
            "generate": ["generate", "--model", model, "--n", "3", "--energy", "5", "--detector", "toy", "--out", out],
            "simulate": ["simulate", "--detector", "par04-siw", "--n", "3", "--out", out],
            "export": ["export", "--model", model, "--out", out],
            "merge": ["merge", out, files / "toy.h5"]}[command]
    fails(argv, capsys, out)
    no_partials(tmp_path)
    assert (tmp_path / "folder").is_dir() and not list((tmp_path / "folder").iterdir())


@pytest.mark.parametrize("kind", ["under a file", "in /proc"])
def test_a_run_or_report_folder_that_cannot_be_made_is_refused_first(tmp_path, files, model, capsys, kind):
    out = _unwritable(tmp_path, kind)
    fails(["evaluate", "--generated", files / "toy.h5", "--reference", files / "toy.h5", "--out", out], capsys, out)
    fails(["train", "--config", train_config(tmp_path, files), "--out", out, "--no-progress"], capsys, out)
    fails(["adapt", "--from", model, "--data", files / "toy.h5", "--detector", "toy", "--strategy", "full", "--out",
           out], capsys, out)
    fails(["evaluate", "--generated", files / "toy.h5", "--reference", files / "toy.h5", "--out",
           tmp_path / "file.txt"], capsys, "file.txt", "is a file")


# --- 4. one line where a traceback was ----------------------------------------------------------
@pytest.mark.parametrize("argv, named", [
    (["simulate", "--detector", "par04-siw", "--n", "0"], "--n"),
    (["simulate", "--detector", "par04-siw", "--n", "-5"], "--n"),
    (["simulate", "--detector", "par04-siw", "--n", "5", "--workers", "0"], "--workers"),
    (["simulate", "--detector", "par04-siw", "--n", "5", "--workers", "-2"], "--workers"),
    (["simulate", "--detector", "par04-siw", "--n", "5", "--energy", "uniform:1:inf"], "--energy"),
    (["simulate", "--detector", "par04-siw", "--n", "5", "--energy", "nan"], "--energy"),
    (["simulate", "--detector", "par04-siw", "--n", "2", "--shard", "0/3"], "--shard"),
    (["generate", "--model", "m", "--n", "3", "--energy", "5", "--detector", "d", "--out", "o.h5", "--steps", "0"],
     "--steps"),
])
def test_bad_arguments_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, argv, named):
    monkeypatch.chdir(tmp_path)
    fails(argv, capsys, named)
    assert not list(tmp_path.iterdir())  # no OUT.parts, no output


@pytest.mark.parametrize("change, named", [({"model.args.depht": 1}, "model.args.depht: unknown argument"),
                                           ({"process.args.sigma_dat": 1.0}, "process.args.sigma_dat"),
                                           ({"train.weight_decay": -1.0}, "train.weight_decay: must be >= 0")])
def test_a_bad_train_config_is_one_line_and_leaves_no_run_folder(tmp_path, files, capsys, change, named):
    fails(["train", "--config", train_config(tmp_path, files, **change), "--no-progress"], capsys, "train.yaml", named)
    assert not (tmp_path / "out").exists()


def test_a_file_without_showers_is_one_line_everywhere(tmp_path, files, capsys):
    empty = files / "empty.h5"
    fails(["inspect", empty], capsys, empty, "holds no showers")
    fails(["train", "--config", train_config(tmp_path, files, **{"data.detectors": {"toy": str(empty)}})], capsys,
          empty, "holds no showers")
    fails(["evaluate", "--generated", empty, "--reference", files / "toy.h5", "--out", tmp_path / "ev"], capsys,
          empty, "holds no showers")
    assert not (tmp_path / "ev").exists() and not (tmp_path / "out").exists()


def test_off_scale_model_output_is_refused_before_the_report(tmp_path, files, capsys, ds2):
    path = tmp_path / "gen.h5"
    write_showers(path, open_showers(files / "toy.h5").read(), "calochallenge", ds2,
                  {"generator": "calofm generate (dit + edm)"})
    with h5py.File(path, "a") as f:  # calofm refuses to write it: a diverged model's output, by hand
        f["showers"][...] = f["showers"][...] * np.float32(1e30)
    fails(["evaluate", "--generated", path, "--reference", files / "toy.h5", "--out", tmp_path / "ev"], capsys,
          path, "off-scale")
    assert not (tmp_path / "ev").exists()  # no empty plots folder either


# --- 5. validation before the expensive part ----------------------------------------------------
@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_a_detector_with_an_impossible_sampling_fraction_is_refused_before_geant4(tmp_path, monkeypatch, capsys,
                                                                                  fraction):
    monkeypatch.chdir(tmp_path)
    det = detector_yaml(tmp_path, sampling_fraction=fraction)
    fails(["simulate", "--detector", det, "--n", "5", "--out", "x.h5"], capsys, det, "sampling_fraction")
    assert not (tmp_path / "x.h5.parts").exists()


# --- 6. calofm never writes what it would reject ------------------------------------------------
@pytest.mark.parametrize("energy", ["-5", "nan", "0"])
def test_generate_refuses_energies_it_could_not_read_back(tmp_path, model, capsys, energy):
    out = tmp_path / "gen.h5"
    fails(["generate", "--model", model, "--n", "3", "--energy", energy, "--detector", "toy", "--out", out], capsys,
          "--energy")
    assert not out.exists()


# --- 7. units that look wrong -------------------------------------------------------------------
@pytest.fixture(scope="module")
def in_gev(files, ds2):
    """The toy showers with voxels in GeV (incident still MeV), and a whole file in GeV."""
    showers = open_showers(files / "toy.h5").read()
    write_showers(files / "voxels_gev.h5", showers.with_fields(showers=showers.showers / 1e3), "calochallenge", ds2)
    write_showers(files / "all_gev.h5", showers.with_fields(showers=showers.showers / 1e3, energy=showers.energy / 1e3),
                  "calochallenge", ds2)
    return files


@pytest.mark.parametrize("name, words", [("voxels_gev.h5", ["0.00095 x the incident energy", "voxel energies in GeV"]),
                                         ("all_gev.h5", ["below 1 GeV", "a file in GeV"])])
def test_energies_in_gev_are_a_warning_in_inspect_train_and_evaluate(tmp_path, in_gev, capsys, one_thread, name,
                                                                     words):
    path = in_gev / name
    code, _, err = run(["inspect", path], capsys)
    assert code == 0
    warned(err, str(path), *words)
    config = train_config(tmp_path, in_gev, **{"data.detectors": {"toy": str(path)}})
    code, _, err = run(["train", "--config", config, "--no-progress"], capsys)
    assert code == 0
    warned(err, str(path), *words)
    code, _, err = run(["evaluate", "--generated", path, "--reference", in_gev / "toy.h5", "--out", tmp_path / "ev",
                        "--protocol", "calochallenge", "--parts", "hist"], capsys)  # both protocols read alike
    assert code == 0
    warned(err, str(path), *words)


def test_showers_in_mev_raise_no_warning(files, capsys):
    code, _, err = run(["inspect", files / "toy.h5"], capsys)
    assert code == 0 and "warning" not in err


# --- 8. no more silent acceptances -------------------------------------------------------------
@pytest.mark.parametrize("change, named", [
    ({"mesh": {"n_r": 0}}, "needs at least one bin"),
    ({"mesh": {"nr": 9}}, "mesh.nr: unknown key"),
    ({"sampling_fracton": 0.02}, "sampling_fracton: unknown key"),
    ({"layers": [{"repeat": 3, "slabs": [{"material": "G4_Si", "thickness": 0.3, "active": True, "colour": 1}]}]},
     "layers[0].slabs[0].colour: unknown key"),
])
def test_a_detector_yaml_with_a_typo_or_an_empty_mesh_is_refused(tmp_path, capsys, change, named):
    det = detector_yaml(tmp_path, **change)
    fails(["detectors", det], capsys, det, named)


def test_energy_bins_must_increase(tmp_path, files, capsys):
    fails(["evaluate", "--generated", files / "toy.h5", "--reference", files / "toy.h5", "--out", tmp_path / "ev",
           "--energy-bins", "10,1"], capsys, "--energy-bins", "increasing")
    assert not (tmp_path / "ev").exists()


def test_a_detector_label_that_contradicts_the_file_is_refused(tmp_path, files, capsys, ds2):
    path = tmp_path / "siw.h5"
    write_showers(path, open_showers(files / "toy.h5").read(), "calochallenge", ds2, {"detector": "par04-siw"})
    config = train_config(tmp_path, files, **{"data.detectors": {"ild-w": str(path)}})
    fails(["train", "--config", config], capsys, path, "'par04-siw'", "'ild-w'")


@pytest.mark.parametrize("field, value, named", [("particle", 9999, "particle code 9999"),
                                                 ("event", 7, "event 7 appears 20 times")])
def test_impossible_particle_codes_and_duplicate_events_are_refused(tmp_path, files, capsys, field, value, named):
    path = tmp_path / "bad.h5"
    assert run(["convert", files / "toy.h5", path, "--to", "calofm"], capsys)[0] == 0
    with h5py.File(path, "a") as f:  # calofm refuses to write it: spoilt by hand
        f[field] = np.full(20, value)
    code, out, err = run(["inspect", path, "--json"], capsys)  # exit 1: a shower is invalid; 2: the file is
    assert code in (1, 2) and named in out + err
    fails(["convert", path, tmp_path / "out.h5", "--to", "calochallenge"], capsys, path, named)
    assert not (tmp_path / "out.h5").exists()


def test_simulate_does_not_replace_another_run_without_overwrite(tmp_path, files, capsys):
    out = tmp_path / "run.h5"
    out.write_bytes((files / "toy.h5").read_bytes())
    fails(["simulate", "--detector", "par04-siw", "--n", "3", "--out", out], capsys, out, "--overwrite")
    assert out.read_bytes() == (files / "toy.h5").read_bytes() and not (tmp_path / "run.h5.parts").exists()


# --- 9. paths ------------------------------------------------------------------------------------
def test_a_detector_name_cannot_lead_outside_the_working_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    det = detector_yaml(tmp_path, name="../../x")
    fails(["simulate", "--detector", det, "--n", "3"], capsys, det, "name '../../x'")
    assert list(tmp_path.iterdir()) == [tmp_path / "det.yaml"]


def test_the_next_write_removes_partial_files_of_dead_processes(tmp_path, files, capsys):
    out = tmp_path / "out.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out.with_name(f".out.h5.partial-{int(dead.stdout)}")
    live = out.with_name(f".out.h5.partial-{os.getppid()}")  # a process still writing it
    for path in (stale, live):
        path.write_bytes(b"half a file")
    assert run(["convert", files / "toy.h5", out, "--to", "calofm"], capsys)[0] == 0
    assert not stale.exists() and live.exists() and out.exists()
    assert not partial_path(out).exists()


def test_a_folder_given_as_input_is_called_a_folder(tmp_path, capsys):
    fails(["inspect", tmp_path], capsys, tmp_path, "is a directory")


def test_ctrl_c_is_one_line_and_leaves_no_partial_file(tmp_path, files, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(CalofmFormat, "append", interrupted)
    code, _, err = run(["convert", files / "toy.h5", tmp_path / "out.h5", "--to", "calofm"], capsys)
    assert code == 130 and err.strip().splitlines() == [
        "calofm convert: interrupted; outputs not yet complete were not written (simulate and train resume when the "
        "same command is run again)"]
    assert not list(tmp_path.iterdir())


# --- 10. listings ------------------------------------------------------------------------------
def test_detector_names_are_never_cut_when_piped(capsys):
    code, out, _ = run(["detectors"], capsys)
    assert code == 0
    for name in preset_names():
        assert f" {name} " in out
