"""Every kind of bad input gets a one-line error that names the file and the problem."""

import h5py
import numpy as np
import pytest

from calofm.cli.main import main
from calofm.core.errors import InputError
from calofm.data import open_showers
from calofm.geometry import calochallenge_binning


def _write(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    return path


def _cc(tmp_path, showers, energies=None, name="bad.h5"):
    energies = np.full((len(showers), 1), 1e4) if energies is None else energies
    return _write(tmp_path / name, incident_energies=energies, showers=showers)


def _showers(n=3, n_vox=6480):
    return np.random.default_rng(0).exponential(0.1, (n, n_vox)).astype(np.float32)


def _error(path, readout=None):
    with pytest.raises(InputError) as info:
        with open_showers(path, readout) as f:
            f.read()
    message = str(info.value)
    assert message.startswith(str(path) + ": ") and "\n" not in message
    return message


def test_missing_key(tmp_path):
    path = _write(tmp_path / "k.h5", showers=_showers())
    assert "missing dataset 'incident_energies'" in _error(path)


def test_shape_that_does_not_match_the_binning(tmp_path):
    assert "533 voxels but binning 'dataset_2' has 6480" in _error(
        _cc(tmp_path, _showers(n_vox=533)), calochallenge_binning("dataset_2"))
    assert "1234 voxels match no CaloChallenge binning" in _error(_cc(tmp_path, _showers(n_vox=1234), name="u.h5"))
    assert "2 incident energies for 3 showers" in _error(_cc(tmp_path, _showers(), np.ones((2, 1)) * 1e4, "m.h5"))


@pytest.mark.parametrize("value, problem", [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"),
                                            (-1.0, "negative")])
def test_bad_voxel_energies(tmp_path, value, problem):
    showers = _showers()
    showers[2, 100] = value
    assert _error(_cc(tmp_path, showers)).endswith(f"shower 2: a voxel energy is {problem}")


@pytest.mark.parametrize("value, problem", [(np.nan, "NaN or infinite"), (0.0, "not positive"), (-5.0, "not positive")])
def test_bad_incident_energies(tmp_path, value, problem):
    energies = np.full((3, 1), 1e4)
    energies[1] = value
    assert _error(_cc(tmp_path, _showers(), energies)).endswith(f"shower 1: incident energy is {problem}")


def test_incident_energies_in_gev_where_mev_is_expected(tmp_path):
    energies = np.full((3, 1), 50.0)  # 50 GeV written as GeV, read as 50 MeV
    showers = _showers() * 0 + 50e3 / 6480
    message = _error(_cc(tmp_path, showers, energies))
    assert "shower 0: visible energy is 1e+03 x the incident energy" in message
    assert "GeV where MeV is expected" in message


def test_model_output_is_not_mistaken_for_a_units_error(tmp_path):
    """A model that deposits more than it was given is a result to measure, not a GeV/MeV mix-up."""
    path = _cc(tmp_path, _showers() * 0 + 20e3 / 6480, np.full((3, 1), 1e3))  # 20 x the incident energy
    assert "visible energy is 20 x the incident energy" in _error(path)
    with h5py.File(path, "a") as f:
        f.attrs["generator"] = "calofm generate (dit + edm)"
    with open_showers(path) as f:
        assert f.read().visible_energy() == pytest.approx(np.full(3, 2e4))


def test_error_names_the_shower_in_a_later_chunk(tmp_path):
    showers = _showers(n=25)
    showers[23, 0] = -1
    path = _cc(tmp_path, showers)
    with pytest.raises(InputError, match="shower 23: a voxel energy is negative"):
        with open_showers(path) as f:
            list(f.iter_chunks(chunk_size=10))


def test_truncated_file(tmp_path, ds2_file):
    data = ds2_file.read_bytes()
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(data[: len(data) // 2])
    assert "not an HDF5 file, or truncated" in _error(truncated)


def test_not_hdf5_and_missing_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("energy,shower\n1,2\n")
    assert "not an HDF5 file, or truncated" in _error(text)
    assert _error(tmp_path / "nowhere.h5").endswith("no such file")


def test_hdf5_that_holds_no_showers(tmp_path):
    path = _write(tmp_path / "other.h5", weights=np.zeros(3))
    assert "not a shower file in any known format (holds: weights)" in _error(path)


def test_lemurs_shape_mismatch(tmp_path):
    path = _write(tmp_path / "l.h5", showers=np.zeros((2, 9, 16, 44), np.float32), incident_energy=np.ones(2),
                  incident_theta=np.ones(2), incident_phi=np.ones(2))
    assert "no known mesh of shape (44, 16, 9)" in _error(path)
    assert "does not match the showers' (44, 16, 9)" in _error(path, calochallenge_binning("dataset_2"))


def test_caloclouds_layer_out_of_range(tmp_path):
    events = np.zeros((1, 4, 2), np.float32)
    events[0, :, 0] = [1.0, 31.0, 2.0, 0.01]
    path = _write(tmp_path / "c.h5", events=events, energy=np.array([[10.0]]))
    assert "layer indices outside 0..29" in _error(path)


def test_cli_prints_one_line_without_traceback_and_debug_shows_it(tmp_path, capsys):
    path = _cc(tmp_path, _showers(n_vox=533))
    assert main(["inspect", str(path), "--binning", "dataset_2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"calofm inspect: error: {path}: showers have 533 voxels")
    with pytest.raises(InputError):
        main(["--debug", "inspect", str(path), "--binning", "dataset_2"])


def test_inspect_reports_invalid_files_with_status_1(tmp_path, capsys):
    showers = _showers()
    showers[1, 5] = np.nan
    assert main(["inspect", str(_cc(tmp_path, showers)), "--json"]) == 1
    out = capsys.readouterr().out
    assert '"valid": false' in out and "shower 1: a voxel energy is NaN or infinite" in out


def test_converting_an_irregular_binning_to_lemurs_is_refused(tmp_path, ds1_photons):
    from calofm.data import write_showers
    from calofm.data.toy import toy_showers

    src = tmp_path / "photons.h5"
    write_showers(src, toy_showers(ds1_photons, 3), "calochallenge", ds1_photons)
    out = tmp_path / "out.h5"
    with pytest.raises(InputError, match="out.h5: needs a regular cylindrical mesh"):
        main(["--debug", "convert", str(src), str(out), "--to", "lemurs"])
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["photons.h5"]
