"""Point clouds for the point-cloud family: from Geant4 points or smeared voxels, to model rows and back."""

import json

import numpy as np
import pytest
import torch

from calofm.data import open_showers
from calofm.data.points import PointCloudTransform, layer_counts, point_clouds
from calofm.data.showers import PointClouds
from calofm.data.toy import toy_showers
from calofm.geometry import project, readout_from_dict
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, simulate


@pytest.fixture(scope="module")
def ild_points(tmp_path_factory):
    """Five Geant4 photons of 5 GeV in ild-w, with their pre-clustered points and planar readout."""
    out = tmp_path_factory.mktemp("points") / "ild.h5"
    simulate(Run(get_detector("ild-w"), Gun("gamma", Spectrum.parse("5")), 5, points=True), out, progress=False)
    with open_showers(out) as f:
        return f.read(), readout_from_dict(json.loads(f.metadata["points_readout"]))


def test_geant4_points_round_trip_through_the_model_rows(ild_points):
    showers, readout = ild_points
    clouds = point_clouds(showers, readout, np.random.default_rng(0))
    tf = PointCloudTransform.fit([clouds], readout.z_edges)
    x, owner = tf.encode(clouds)
    assert x.shape == (len(clouds.points), 4) and torch.equal(owner.bincount(), torch.from_numpy(clouds.counts))
    assert x[:, :3].abs().max() <= 1 and abs(float(x[:, 3].mean())) < 1e-4
    back = tf.decode(x)
    np.testing.assert_allclose(back[:, [0, 1, 3]], clouds.points[:, [0, 1, 3]], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(back[:, 2], clouds.points[:, 2], atol=1e-4)  # points sit at layer centres
    cells, again = project(readout, clouds.points, clouds.offsets), project(readout, back, clouds.offsets)
    np.testing.assert_allclose(again, cells, rtol=1e-5, atol=1e-6)  # cell by cell
    counts = layer_counts(clouds, readout.z_edges)
    assert counts.shape == (5, readout.n_layers) and np.array_equal(counts.sum(1), clouds.counts)


def test_voxel_files_become_one_point_per_voxel(ds2):
    showers = toy_showers(ds2, 6, seed=2, e_min=2e3, e_max=2e4)
    clouds = point_clouds(showers.with_fields(points=None), ds2, np.random.default_rng(1))
    np.testing.assert_allclose(project(ds2, clouds.points, clouds.offsets), showers.showers, rtol=1e-5, atol=1e-6)
    per_layer = (showers.showers.reshape(6, 45, -1) > 0).sum(2)
    assert np.array_equal(layer_counts(clouds, ds2.z_edges), per_layer)
    raw = point_clouds(showers.with_fields(points=None), ds2, np.random.default_rng(1), energy_scale=0.033)
    np.testing.assert_allclose(raw.points[:, 3], clouds.points[:, 3] * 0.033, rtol=1e-6)  # sampling fraction back


def test_bad_points_are_refused(ds2):
    tf = PointCloudTransform([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="zero, negative or NaN energy"):
        tf.encode(PointClouds.from_list([np.array([[0, 0, 0.5, 0.0]], np.float32)]))
    with pytest.raises(ValueError, match="neither points nor voxels"):
        point_clouds(toy_showers(ds2, 1, seed=0).with_fields(showers=None, points=None), ds2, np.random.default_rng(0))
    decoded = tf.decode(torch.tensor([[0.0, 0.0, 7.0, 0.0], [0.0, 0.0, -7.0, 0.0]]))  # beyond the stack: clipped
    np.testing.assert_allclose(decoded[:, 2], [1.5, 0.5])
