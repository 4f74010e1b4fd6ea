import math

import numpy as np
import pytest

from calofm.geometry import (
    ORDERS,
    CylindricalBinning,
    Layer,
    PlanarGrid,
    calochallenge_binning,
    ild_ecal,
    project,
    reorder,
    smear,
)


@pytest.mark.parametrize("name, n_voxels, shape", [
    ("dataset_1_photons", 368, None), ("dataset_1_pions", 533, None),
    ("dataset_2", 6480, (45, 16, 9)), ("dataset_3", 40500, (45, 50, 18)),
])
def test_calochallenge_binnings(name, n_voxels, shape):
    b = calochallenge_binning(name)
    assert b.n_voxels == n_voxels
    assert b.is_regular == (shape is not None)
    if shape:
        assert b.shape == shape


def test_dataset_1_irregular_layers(ds1_photons):
    b = ds1_photons
    assert b.n_layers == 24
    assert [b.layers[i].n_voxels for i in (0, 1, 2, 3, 12)] == [8, 160, 190, 5, 5]
    assert b.layers[4].n_voxels == 0 and b.layers[1].n_alpha == 10
    with pytest.raises(ValueError, match="irregular"):
        b.shape


def test_regular_construction_matches_xml(ds2):
    made = CylindricalBinning.regular(n_r=9, n_alpha=16, n_z=45, dr=4.65, dz=3.4, name="dataset_2")
    assert made == ds2


def test_voxel_indices_and_centres_follow_calochallenge_convention(ds2, ds1_photons):
    layer, alpha, r = ds2.voxel_indices
    idx = np.arange(ds2.n_voxels)
    assert np.array_equal(layer, idx // 144) and np.array_equal(alpha, idx // 9 % 16) and np.array_equal(r, idx % 9)
    assert np.array_equal(ds2.index(layer, alpha, r), idx)
    rc, ac, zc = ds2.centres()
    assert rc[0] == pytest.approx(2.325) and ac[0] == pytest.approx(-math.pi + math.pi / 16)
    assert zc[144] == pytest.approx(3 * 1.7)
    # irregular: layer 1 of dataset 1 starts after the 8 voxels of layer 0, 16 r bins per alpha bin
    layer, alpha, r = ds1_photons.voxel_indices
    assert (layer[8], alpha[8], r[8]) == (1, 0, 0) and (layer[8 + 17], alpha[8 + 17], r[8 + 17]) == (1, 1, 1)
    assert np.array_equal(ds1_photons.index(layer, alpha, r), np.arange(368))
    rc, ac, _ = ds1_photons.centres()
    assert rc[0] == pytest.approx(2.5) and ac[0] == pytest.approx(0.0)  # one alpha bin: centre 0


@pytest.mark.parametrize("src", ORDERS)
@pytest.mark.parametrize("dst", ORDERS)
def test_voxel_order_round_trips(src, dst):
    shape = (45, 16, 9)
    x = np.random.default_rng(0).random((3, 6480)).astype(np.float32)
    x = reorder(x, "calochallenge", src, shape)
    assert np.array_equal(reorder(reorder(x, src, dst, shape), dst, src, shape), x)


def test_voxel_orders_place_a_voxel_where_each_convention_says():
    shape = (45, 16, 9)
    z, a, r = 7, 3, 5
    cc = np.zeros((1, 6480))
    cc[0, (z * 16 + a) * 9 + r] = 1
    assert reorder(cc, "calochallenge", "lemurs", shape)[0, r, a, z] == 1
    assert reorder(cc, "calochallenge", "par04", shape)[0, (r * 16 + a) * 45 + z] == 1


def _random_points(rng, n, scale=15.0, depth=160.0):
    return np.stack([rng.normal(0, scale, n), rng.normal(0, scale, n), rng.uniform(-5, depth, n),
                     rng.exponential(1.0, n)], axis=1).astype(np.float32)


@pytest.mark.parametrize("name", ["dataset_1_photons", "dataset_2", "dataset_3"])
def test_projection_conserves_energy_inside_the_readout(name):
    b = calochallenge_binning(name)
    rng = np.random.default_rng(1)
    points = _random_points(rng, 200_000, depth=b.z_edges[-1])
    offsets = np.array([0, 50_000, 50_000, 200_000])  # includes an empty shower
    cells = project(b, points, offsets)
    ids = b.voxel_ids(points[:, 0], points[:, 1], points[:, 2])
    inside = ids < b.n_voxels
    for i in range(3):
        sl = slice(offsets[i], offsets[i + 1])
        expected = points[sl, 3][inside[sl]].astype(np.float64).sum()
        assert cells[i].sum(dtype=np.float64) == pytest.approx(expected, rel=1e-6, abs=0)
    assert cells[1].sum() == 0 and 0 < inside.mean() < 1


def test_points_land_in_the_voxel_that_contains_them(ds2):
    # r = 10 mm (third r bin), alpha just above 0 (bin 8), z = 5 mm (second layer)
    x, y = 10 * np.cos(0.1), 10 * np.sin(0.1)
    ids = ds2.voxel_ids(np.array([x, 50.0, 1.0], np.float32), np.array([y, 0, 0], np.float32),
                        np.array([5.0, 5.0, -1.0], np.float32))
    assert ids[0] == ds2.index(1, 8, 2)
    assert ids[1] == ds2.n_voxels and ids[2] == ds2.n_voxels  # beyond the last r edge / before the front


def test_regular_fast_path_equals_general_path(ds2):
    irregular = CylindricalBinning(ds2.layers + (Layer((), 1),), ds2.z_edges + (200.0,))
    assert not irregular.is_regular and irregular.n_voxels == ds2.n_voxels
    points = _random_points(np.random.default_rng(2), 100_000)
    fast = ds2.voxel_ids(points[:, 0], points[:, 1], points[:, 2])
    general = irregular.voxel_ids(points[:, 0], points[:, 1], points[:, 2])
    assert np.array_equal(fast, general)


def test_planar_grid_projection():
    grid = ild_ecal()
    assert grid.n_layers == 30 and grid.z_edges[20] == pytest.approx(20 * 2.6)
    assert grid.z_edges[-1] == pytest.approx(20 * 2.6 + 10 * 4.7)
    points = np.array([[0.1, 0.1, 1.0, 2.0], [-74.9, 74.9, 98.9, 3.0], [80.0, 0.0, 1.0, 5.0]], np.float32)
    cells = project(grid, points, [0, 3])[0].reshape(grid.shape)
    assert cells[0, 15, 15] == 2.0 and cells[29, 29, 0] == 3.0 and cells.sum() == 5.0


@pytest.mark.parametrize("name", ["dataset_1_photons", "dataset_1_pions", "dataset_2", "dataset_3"])
def test_smearing_then_projection_returns_the_voxels_exactly(name):
    b = calochallenge_binning(name)
    rng = np.random.default_rng(5)
    showers = (rng.exponential(1.0, (4, b.n_voxels)) * (rng.random((4, b.n_voxels)) < 0.5)).astype(np.float32)
    points, offsets = smear(b, showers, rng)
    assert len(points) == np.count_nonzero(showers)
    assert np.array_equal(project(b, points, offsets), showers)
    # several points per voxel: energy per voxel conserved to float32 rounding
    points, offsets = smear(b, showers, rng, points_per_voxel=4)
    assert len(points) == 4 * np.count_nonzero(showers)
    np.testing.assert_allclose(project(b, points, offsets), showers, rtol=1e-6)


def test_smeared_points_spread_over_the_voxel_area(ds2):
    showers = np.zeros((1, ds2.n_voxels), np.float32)
    showers[0, ds2.index(0, 0, 4)] = 1.0
    points, _ = smear(ds2, showers, np.random.default_rng(0), points_per_voxel=20_000)
    r = np.hypot(points[:, 0], points[:, 1])
    assert r.min() > 4 * 4.65 and r.max() < 5 * 4.65
    # uniform in area: the median radius splits the annulus area in two
    assert np.median(r) == pytest.approx(np.sqrt((18.6**2 + 23.25**2) / 2), rel=5e-3)
    assert np.all(points[:, 2] == pytest.approx(1.7))


def test_bad_geometry_definitions(tmp_path):
    with pytest.raises(ValueError, match="increase"):
        CylindricalBinning((Layer((0.0, 2.0, 1.0), 1),), (0.0, 1.0))
    with pytest.raises(ValueError, match="z edges"):
        CylindricalBinning((Layer((0.0, 1.0), 1),), (0.0, 1.0, 2.0))
    bad = tmp_path / "bad.xml"
    bad.write_text("<Bins><Bin")
    with pytest.raises(Exception, match="bad.xml: not a readable binning XML"):
        CylindricalBinning.from_xml(bad)


def test_readouts_survive_a_dict_round_trip(ds1_photons):
    from calofm.geometry import readout_from_dict

    for readout in (ds1_photons, ild_ecal(), PlanarGrid(3, 4, 1.0, 2.0, (0.0, 1.0))):
        assert readout_from_dict(readout.to_dict()) == readout


@pytest.mark.parametrize("edges", [
    [0, 4.65, 9.3, 13.95, 18.6],                                  # equal bins
    [0, 5, 10, 30, 50, 100, 200, 400, 600],                       # dataset-1 radial edges
    list(np.cumsum([0] + [2.6] * 20 + [4.7] * 10)),               # ILD layer depths
    [-3.0, -2.999, 0.0, 1e3],                                     # very unequal: binary search
])
def test_axis_binning_agrees_with_binary_search(edges):
    from calofm.geometry.axis import Axis

    axis = Axis(edges)
    e = np.asarray(edges, dtype=np.float32)
    rng = np.random.default_rng(0)
    span = e[-1] - e[0]
    values = np.concatenate([rng.uniform(e[0] - 0.1 * span, e[-1] + 0.1 * span, 100_000),
                             e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf)]).astype(np.float32)
    expected = np.searchsorted(e, values, side="right") - 1
    got = axis.bin(values)
    if axis.uniform:  # arithmetic binning may differ from the search exactly at an edge (float32 rounding)
        assert np.mean(got != expected) < 1e-3 and np.all(np.abs(got - expected) <= 1)
    else:
        np.testing.assert_array_equal(got, expected)


def test_radial_profile_weights_of_an_irregular_mesh_conserve_energy_and_follow_ring_areas():
    from calofm.geometry.cylindrical import Layer

    fine, coarse = Layer((0.0, 1.0, 2.0), 2), Layer((0.0, 2.0), 1)
    mesh = CylindricalBinning((fine, coarse, Layer((), 1)), (0.0, 1.0, 2.0, 3.0))
    np.testing.assert_array_equal(mesh.radial_edges(), [0.0, 1.0, 2.0])
    weights = mesh.radial_weights()
    assert weights.shape == (mesh.n_voxels, 2)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    np.testing.assert_allclose(weights[:4], [[1, 0], [0, 1], [1, 0], [0, 1]])  # fine layer: one bin each
    np.testing.assert_allclose(weights[4], [0.25, 0.75])  # the coarse ring split by area: 1 : 3
    regular = CylindricalBinning.regular(n_r=3, n_alpha=2, n_z=2, dr=1.0, dz=1.0)
    assert np.all(np.isin(regular.radial_weights(), [0.0, 1.0]))
