import h5py
import numpy as np
import pytest

from calofm.data import (
    FORMATS,
    PointClouds,
    Showers,
    ShowerWriter,
    open_showers,
    write_showers,
)
from calofm.data.convert import convert
from calofm.geometry import calochallenge_binning, ild_ecal, reorder, smear


def test_calochallenge_file_layout_and_round_trip(tmp_path, toy, ds2):
    path = tmp_path / "cc.h5"
    dropped = write_showers(path, toy, "calochallenge", ds2)
    assert dropped == {"particle"}
    with h5py.File(path) as f:
        assert f["incident_energies"].shape == (40, 1) and f["showers"].shape == (40, 6480)
        assert f["incident_theta"].shape == (40,) and f["incident_phi"].shape == (40,)
        assert f["showers"].compression == "gzip"
        np.testing.assert_array_equal(f["incident_energies"][:, 0], toy.energy)  # MeV in the file
    with open_showers(path) as f:
        assert f.format.name == "calochallenge" and f.readout == ds2
        back = f.read()
    np.testing.assert_array_equal(back.showers, toy.showers)
    np.testing.assert_array_equal(back.energy, toy.energy)
    np.testing.assert_array_equal(back.theta, toy.theta)
    np.testing.assert_array_equal(back.phi, toy.phi)


def test_lemurs_layout_units_and_round_trip(tmp_path, toy, ds2):
    path = tmp_path / "lemurs.h5"
    assert write_showers(path, toy, "lemurs", ds2) == {"particle"}
    with h5py.File(path) as f:
        assert f["showers"].shape == (40, 9, 16, 45)
        np.testing.assert_allclose(f["incident_energy"][:], toy.energy / 1000)  # GeV in the file
        np.testing.assert_array_equal(f["showers"][:], reorder(toy.showers, "calochallenge", "lemurs", (45, 16, 9)))
    with open_showers(path) as f:
        back = f.read()
    np.testing.assert_array_equal(back.showers, toy.showers)
    np.testing.assert_allclose(back.energy, toy.energy, rtol=1e-12)
    np.testing.assert_array_equal(back.theta, toy.theta)
    np.testing.assert_array_equal(back.phi, toy.phi)


def test_caloclouds_layout_units_and_round_trip(tmp_path):
    grid = ild_ecal()
    rng = np.random.default_rng(0)
    centres = grid.layer_centres()
    clouds = []
    for n in (5, 0, 12):
        layer = rng.integers(0, 30, n)
        clouds.append(np.stack([rng.normal(0, 20, n), rng.normal(0, 20, n), centres[layer],
                                rng.uniform(0.1, 5, n)], axis=1).astype(np.float32))
    showers = Showers(energy=np.array([1e4, 2e4, 9e4]), points=PointClouds.from_list(clouds))
    path = tmp_path / "cc.h5"
    write_showers(path, showers, "caloclouds", grid)
    with h5py.File(path) as f:
        events = f["events"][:]
        assert events.shape == (3, 4, 12) and np.all(events[1] == 0)
        np.testing.assert_allclose(f["energy"][:, 0], [10, 20, 90])  # GeV
        x, layer, z, e = events[0, :, :5]
        np.testing.assert_array_equal(x, clouds[0][:, 0])
        np.testing.assert_array_equal(z, clouds[0][:, 1])  # calofm y is CaloClouds z
        np.testing.assert_array_equal(centres[layer.astype(int)].astype(np.float32), clouds[0][:, 2])
        np.testing.assert_allclose(e, clouds[0][:, 3] / 1000, rtol=1e-6)
    with open_showers(path) as f:
        back = f.read()
    np.testing.assert_array_equal(back.points.counts, [5, 0, 12])
    for a, b in zip(clouds, (back.points[i] for i in range(3))):
        np.testing.assert_allclose(b, a, rtol=1e-6)


def test_caloclouds_width_grows_across_appends(tmp_path):
    grid = ild_ecal()
    small = Showers(energy=np.array([1e4]), points=PointClouds.from_list([np.array([[0, 0, 1.3, 1.0]], np.float32)]))
    big = Showers(energy=np.array([2e4]),
                  points=PointClouds.from_list([np.tile([[1, 2, 1.3, 2.0]], (7, 1)).astype(np.float32)]))
    with ShowerWriter(tmp_path / "g.h5", "caloclouds", grid) as w:
        w.append(small)
        w.append(big)
        w.append(small)
    with open_showers(tmp_path / "g.h5") as f:
        assert np.array_equal(f.read().points.counts, [1, 7, 1])


def test_calofm_format_keeps_everything_and_stores_points_ragged(tmp_path, toy, ds2):
    rng = np.random.default_rng(1)
    points = PointClouds(*smear(ds2, toy.showers, rng))
    full = toy.with_fields(points=points)
    path = tmp_path / "own.h5"
    meta = {"simulator": "geant4 11.4", "data_version": "test", "seed": 7, "detector": "par04-siw"}
    assert write_showers(path, full, "calofm", ds2, meta) == set()
    with h5py.File(path) as f:
        assert f["points/data"].shape == (int(points.counts.sum()), 4)  # no padding to the maximum
        assert f.attrs["energy_unit"] == "MeV" and f.attrs["seed"] == 7
    with open_showers(path) as f:
        assert f.readout == ds2 and f.metadata["detector"] == "par04-siw"
        back = f.read()
        some = f.read([7, 2, 2, 30])
    for name in ("energy", "showers", "theta", "phi", "particle"):
        np.testing.assert_array_equal(getattr(back, name), getattr(toy, name))
    np.testing.assert_array_equal(back.points.points, points.points)
    np.testing.assert_array_equal(back.points.offsets, points.offsets)
    np.testing.assert_array_equal(some.energy, toy.energy[[7, 2, 2, 30]])
    np.testing.assert_array_equal(some.points[0], points[7])


def test_calofm_format_appends_in_batches(tmp_path, toy, ds2):
    rng = np.random.default_rng(2)
    full = toy.with_fields(points=PointClouds(*smear(ds2, toy.showers, rng)))
    with ShowerWriter(tmp_path / "b.h5", "calofm", ds2) as w:
        for start in range(0, 40, 15):
            w.append(full.take(slice(start, start + 15)))
    with open_showers(tmp_path / "b.h5") as f:
        back = f.read()
    np.testing.assert_array_equal(back.points.offsets, full.points.offsets)
    np.testing.assert_array_equal(back.showers, full.showers)


def test_streaming_chunks_equal_the_full_read(ds2_file):
    with open_showers(ds2_file) as f:
        full = f.read()
        chunks = list(f.iter_chunks(chunk_size=16))
    assert [len(c) for c in chunks] == [16, 16, 8]
    np.testing.assert_array_equal(Showers.concat(chunks).showers, full.showers)


def test_an_interrupted_write_leaves_no_file_and_keeps_the_old_one(tmp_path, toy, ds2):
    path = tmp_path / "out.h5"
    path.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        with ShowerWriter(path, "calochallenge", ds2) as w:
            w.append(toy)
            raise RuntimeError("killed")
    assert path.read_bytes() == b"previous result"
    assert list(tmp_path.iterdir()) == [path]


def test_convert_chain_between_all_formats(tmp_path, ds2_file, toy, ds2):
    for fmt in FORMATS:
        report = convert(ds2_file, tmp_path / f"{fmt}.h5", fmt)
        assert report["smeared"] == (fmt == "caloclouds")
    # points -> mesh: projection onto the mesh recovers the voxels (to float32 GeV rounding)
    report = convert(tmp_path / "caloclouds.h5", tmp_path / "back.h5", "calochallenge", target=ds2)
    assert report["projected"]
    with open_showers(tmp_path / "back.h5") as f:
        np.testing.assert_allclose(f.read().showers, toy.showers, rtol=1e-6)
    with open_showers(tmp_path / "lemurs.h5") as f:
        np.testing.assert_array_equal(f.read().showers, toy.showers)


def test_convert_points_onto_another_readout(tmp_path, ds2_file):
    convert(ds2_file, tmp_path / "pc.h5", "caloclouds")
    ds3 = calochallenge_binning("dataset_3")
    convert(tmp_path / "pc.h5", tmp_path / "ds3.h5", "calofm", target=ds3)
    with open_showers(tmp_path / "ds3.h5") as f, open_showers(ds2_file) as g:
        assert f.readout == ds3
        np.testing.assert_allclose(f.read().visible_energy(), g.read().visible_energy(), rtol=1e-5)


def test_provenance_travels_but_format_attributes_do_not(tmp_path, toy, ds2):
    own = tmp_path / "own.h5"
    write_showers(own, toy, "calofm", ds2, {"simulator": "test", "seed": 3})
    for fmt in ("calochallenge", "lemurs"):
        convert(own, tmp_path / f"{fmt}.h5", fmt)
        with open_showers(tmp_path / f"{fmt}.h5") as f:
            assert f.format.name == fmt and f.metadata["simulator"] == "test" and f.metadata["seed"] == 3
        with h5py.File(tmp_path / f"{fmt}.h5") as f:
            assert "energy_unit" not in f.attrs and "calofm_format_version" not in f.attrs
