"""`calofm simulate` end to end with real Geant4: determinism, workers, shards, resume, errors."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from calofm.cli.main import main
from calofm.core.errors import CalofmError, InputError
from calofm.data import open_showers
from calofm.geometry import project, readout_from_dict
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.physics import Physics
from calofm.simulate.runner import Run, merge_shards, parts_dir, simulate

SIW = get_detector("par04-siw")
GUN = Gun("e-", Spectrum.parse("loguniform:1:4"))


def _read(path):
    with open_showers(path) as f:
        return f.read(), f.metadata


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    simulate(Run(SIW, GUN, 12, seed=5), out, workers=1, progress=False)
    return _read(out)


def test_output_is_a_valid_calofm_file_with_provenance(reference):
    showers, meta = reference
    assert len(showers) == 12 and np.array_equal(showers.event, np.arange(12))
    assert showers.showers.shape == (12, 6480) and np.all(showers.particle == 11)
    assert np.all(showers.theta == pytest.approx(np.pi / 2))
    assert meta["detector"] == "par04-siw" and meta["sampling_fraction"] == SIW.sampling_fraction
    assert '"g4data": "calofm-built"' in meta["settings"] or '"g4data": "official"' in meta["settings"]
    ratio = showers.visible_energy() / showers.energy
    assert 0.8 < ratio.mean() < 1.1


def test_same_seed_same_showers_whatever_the_workers(tmp_path, reference):
    out = tmp_path / "two.h5"
    simulate(Run(SIW, GUN, 12, seed=5), out, workers=2, progress=False)
    again, _ = _read(out)
    np.testing.assert_array_equal(again.showers, reference[0].showers)
    np.testing.assert_array_equal(again.energy, reference[0].energy)
    other = tmp_path / "other.h5"
    simulate(Run(SIW, GUN, 3, seed=6), other, workers=1, progress=False)
    assert not np.array_equal(_read(other)[0].energy, reference[0].energy[:3])


def test_a_finished_run_is_not_simulated_again(tmp_path):
    out = tmp_path / "done.h5"
    first = simulate(Run(SIW, GUN, 2, seed=8), out, progress=False)
    written = out.stat().st_mtime_ns
    again = simulate(Run(SIW, GUN, 2, seed=8), out, progress=False)
    assert not first["already_done"] and again["already_done"] and out.stat().st_mtime_ns == written
    with pytest.raises(InputError, match="pass --overwrite to replace it"):  # another run: refused ...
        simulate(Run(SIW, GUN, 2, seed=9), out, progress=False)
    assert out.stat().st_mtime_ns == written
    simulate(Run(SIW, GUN, 2, seed=9), out, progress=False, overwrite=True)  # ... unless asked for
    assert out.stat().st_mtime_ns != written


def test_the_production_cut_is_the_one_asked_for(tmp_path, reference):
    """A 5 mm cut makes fewer, more energetic-threshold secondaries: less energy in the thin Si layers."""
    coarse = tmp_path / "coarse.h5"
    simulate(Run(SIW, GUN, 12, seed=5, physics=Physics("em", range_cut_mm=5.0)), coarse, workers=2, progress=False)
    showers, meta = _read(coarse)
    assert json.loads(meta["settings"])["physics"]["range_cut_mm"] == 5.0
    ratio = showers.visible_energy().sum() / reference[0].visible_energy().sum()
    assert ratio < 0.95  # 0.86 measured at 3 GeV; the default 1 mm run is the reference
    assert json.loads(reference[1]["settings"])["physics"]["range_cut_mm"] == 1.0


def test_shards_merge_into_the_full_run(tmp_path, reference):
    shards = []
    for i in range(3):
        shards.append(tmp_path / f"shard{i}.h5")
        simulate(Run(SIW, GUN, 12, seed=5, shard=(i, 3)), shards[-1], workers=1, progress=False)
    merged = tmp_path / "merged.h5"
    assert merge_shards(shards, merged, progress=False) == 12
    np.testing.assert_array_equal(_read(merged)[0].showers, reference[0].showers)
    with pytest.raises(InputError, match="events 4..7 are missing"):
        merge_shards([shards[0], shards[2]], tmp_path / "gap.h5", progress=False)
    with pytest.raises(CalofmError, match="events 8..11 of the run's 12 are missing"):
        merge_shards(shards[:2], tmp_path / "short.h5", progress=False)


def test_a_killed_run_resumes_with_every_event_exactly_once(tmp_path, reference):
    out = tmp_path / "killed.h5"
    cmd = [sys.executable, "-m", "calofm.cli.main", "simulate", "--detector", "par04-siw", "--energy",
           "loguniform:1:4", "--n", "12", "--seed", "5", "--workers", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not list(parts_dir(out).glob("events-*.h5")) and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the main process only: its Geant4 workers must die with it
    proc.wait()
    deadline = time.time() + 10
    while _workers_of(proc.pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _workers_of(proc.pid)
    done = list(parts_dir(out).glob("events-*.h5"))
    assert 0 < len(done) and not out.exists()
    assert main(["simulate", "--detector", "par04-siw", "--energy", "loguniform:1:4", "--n", "12", "--seed", "5",
                 "--workers", "2", "--out", str(out)]) == 0
    showers, _ = _read(out)
    assert sorted(showers.event) == list(range(12))
    np.testing.assert_array_equal(showers.showers, reference[0].showers)
    assert not parts_dir(out).exists()


def _workers_of(pgid: int) -> list[int]:
    """Live processes of the killed run's process group."""
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid:
                    alive.append(int(entry))
            except ProcessLookupError:
                pass
    return alive


def test_resuming_with_other_settings_is_refused(tmp_path):
    out = tmp_path / "x.h5"
    parts_dir(out).mkdir()
    (parts_dir(out) / "run.json").write_text('{"seed": 99}')
    with pytest.raises(InputError, match="holds parts of a run with other settings"):
        simulate(Run(SIW, GUN, 4), out, progress=False)


def test_point_clouds_project_back_onto_their_readout(tmp_path):
    for name in ("par04-siw", "ild-w"):
        out = tmp_path / f"{name}.h5"
        det = get_detector(name)
        simulate(Run(det, Gun("gamma", Spectrum.parse("3")), 3, points=True), out, progress=False)
        showers, meta = _read(out)
        readout = readout_from_dict(__import__("json").loads(meta["points_readout"]))
        cells = project(readout, showers.points.points, showers.points.offsets)
        np.testing.assert_allclose(cells.sum(1), showers.points.energy_sums(), rtol=1e-5)
        if name == "par04-siw":  # the readout is the mesh itself
            np.testing.assert_allclose(cells, showers.showers, rtol=1e-4, atol=1e-4)
        else:  # planar cells, per active layer: 30 layers of 5 mm cells
            assert readout.n_layers == 30 and readout.cell_x == 5.0
            assert np.count_nonzero(cells) > 10


def test_a_geant4_fatal_error_in_a_worker_is_a_clear_error(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    for var in ("G4LEDATA", "G4ENSDFSTATEDATA", "G4LEVELGAMMADATA"):
        (empty / var).mkdir(parents=True)
        monkeypatch.setenv(var, str(empty / var))
    out = tmp_path / "fatal.h5"
    with pytest.raises(CalofmError, match="a Geant4 worker died .*G4Exception|a Geant4 worker died .*issued by"):
        simulate(Run(SIW, GUN, 2), out, progress=False)
    assert not out.exists()


def test_detector_without_sampling_fraction_is_refused(tmp_path):
    with pytest.raises(CalofmError, match="has no sampling fraction"):
        simulate(Run(replace(SIW, sampling_fraction=None), GUN, 2), tmp_path / "x.h5", progress=False)


def test_the_mesh_follows_an_inclined_particle(tmp_path):
    """At theta = 1.0 rad (33 degrees off normal) the mesh axis is the particle direction, so the
    shower stays centred on it: its centre of energy in the mesh frame is near r = 0."""
    out = tmp_path / "inclined.h5"
    simulate(Run(SIW, Gun("e-", Spectrum.parse("10"), Spectrum.parse("1.0")), 4, seed=2), out, progress=False)
    showers, _ = _read(out)
    mesh = SIW.mesh_binning()
    r, alpha, _ = mesh.centres()
    x, y = r * np.cos(alpha), r * np.sin(alpha)
    for shower in showers.showers:
        assert abs(np.average(x, weights=shower)) < 2.0 and abs(np.average(y, weights=shower)) < 2.0
    assert np.all(showers.theta == 1.0)
    assert np.mean(showers.visible_energy() / showers.energy) > 0.85


def test_ild_point_clouds_convert_to_caloclouds_on_their_own_layers(tmp_path):
    out = tmp_path / "ild.h5"
    simulate(Run(get_detector("ild-w"), Gun("gamma", Spectrum.parse("5")), 2, points=True), out, progress=False)
    cc = tmp_path / "ild_caloclouds.h5"
    from calofm.data.convert import convert

    convert(out, cc, "caloclouds")
    import h5py

    with h5py.File(cc) as f:
        layers = f["events"][:, 1][f["events"][:, 3] > 0]
    assert layers.max() <= 29 and np.all(layers == np.round(layers))
    with open_showers(out) as a, open_showers(cc) as b:
        np.testing.assert_allclose(b.read().points.energy_sums(), a.read().points.energy_sums(), rtol=1e-5)
