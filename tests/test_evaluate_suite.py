"""The evaluation suite on deliberately distorted samples: every metric must move the right way."""

import json
import math

import numpy as np
import pytest

from calofm.cli.main import main
from calofm.data import write_showers
from calofm.data.toy import toy_showers
from calofm.evaluate.features import FeatureExtractor, high_level_vector
from calofm.evaluate.report import evaluate
from calofm.evaluate.samples import load_sample, sample_from_arrays
from calofm.evaluate.suite import FPD_EVIDENCE_SHOWERS, Settings, compare, fpd_evidence
from calofm.geometry import calochallenge_binning
from calofm.geometry.cylindrical import CylindricalBinning

N = 1500
QUICK = Settings(metrics=("distances", "fpd", "classifier"), classifiers=("high",), epochs=8, n_bootstrap=5,
                 classifier_kwargs={"model_kwargs": {"hidden": 128}, "lr": 1e-3},
                 fpd_kwargs={"min_samples": 1000, "max_samples": 3000, "num_batches": 5},
                 kpd_kwargs={"batch_size": 600, "num_batches": 5})


def _toy(binning, seed, **kw):
    return toy_showers(binning, N, seed=seed, e_min=5e3, e_max=5e4, **kw)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("suite")
    ds2 = calochallenge_binning("dataset_2")
    reference = _toy(ds2, 1)
    same = _toy(ds2, 2)
    cube = same.showers.reshape(N, 45, 16, 9)
    variants = {
        "same": same,
        "energy x1.05": same.with_fields(showers=same.showers * 1.05),
        "shifted one layer": same.with_fields(
            showers=np.roll(cube, 1, axis=1).reshape(N, -1) * (np.arange(45) > 0).repeat(144)),
        "width x1.2": _toy(ds2, 2, moliere_mm=9.3 * 1.2),
    }
    loaded = {}
    for name, showers in [("reference", reference), *variants.items()]:
        path = folder / f"{name.replace(' ', '_')}.h5"
        write_showers(path, showers, "calochallenge", ds2)
        loaded[name] = load_sample(path)[0]
    return ds2, loaded


@pytest.fixture(scope="module")
def results(samples):
    ds2, loaded = samples
    return {name: compare(loaded["reference"], sample, ds2, QUICK)
            for name, sample in loaded.items() if name != "reference"}


def _w1(result, name):
    return result["observables"][name]["wasserstein"]["value"]


@pytest.mark.parametrize("distortion, observables", [
    ("energy x1.05", ["energy_ratio", "visible_energy", "voxel_energy"]),
    ("shifted one layer", ["longitudinal_profile"]),
    ("width x1.2", ["radial_profile", "occupancy"]),
])
def test_distances_grow_where_the_distortion_acts(results, distortion, observables):
    for name in observables:
        assert _w1(results[distortion], name) > 2 * _w1(results["same"], name), name
    gm = "geometric_mean_wasserstein"
    assert results[distortion][gm]["value"] > results["same"][gm]["value"]


@pytest.mark.parametrize("distortion, strong", [
    ("energy x1.05", set()),                          # 5 % on log-energy features: subtle for all three
    ("shifted one layer", {"fpd", "kpd", "auc"}),
    ("width x1.2", {"fpd", "kpd"}),
])
def test_fpd_kpd_and_classifier_move_the_right_way(results, distortion, strong):
    same, bad = results["same"], results[distortion]
    values = {"fpd": (same["fpd"]["value"], bad["fpd"]["value"], same["fpd"]["error"]),
              "kpd": (same["kpd"]["value"], bad["kpd"]["value"], same["kpd"]["error"]),
              "auc": (same["classifier"]["high"]["auc"]["value"], bad["classifier"]["high"]["auc"]["value"], 0.05)}
    for name, (good, worse, error) in values.items():
        assert worse > good, (name, good, worse)
        if name in strong:
            assert worse > good + 3 * error, (name, good, worse, error)


def test_fpd_on_the_global_features_tells_a_5_percent_scale_where_the_challenge_features_cannot(results):
    """At 1500 showers (studies/fpd-small-samples): a 5 % energy scale is not evidence in FPD on the
    CaloChallenge features, and plain in FPD on the seven global features."""
    scaled, same = results["energy x1.05"], results["same"]
    evidence = fpd_evidence(scaled, same)  # "same" (a second Geant4-like sample) as the floor
    assert evidence["fpd"]["separates"] is None
    assert evidence["fpd"]["why"].startswith(f"not evidence at {N} showers: FPD on the CaloChallenge features")
    assert f"at any size up to {FPD_EVIDENCE_SHOWERS} showers per sample" in evidence["fpd"]["why"]
    assert evidence["fpd_global"]["separates"] is True, evidence["fpd_global"]["why"]
    assert evidence["fpd_global"]["why"].startswith("told from Geant4: ")
    assert fpd_evidence(same, same)["fpd_global"]["separates"] is False
    assert fpd_evidence(scaled, None)["fpd_global"] == {
        "separates": None, "shown": True, "why": "no Geant4 floor to compare with (reference too small to split)"}
    assert evidence["fpd"]["shown"] is False and evidence["fpd_global"]["shown"] is True


def test_the_report_shows_fpd_only_where_it_is_evidence_and_says_why(tmp_path):
    mesh = CylindricalBinning.regular(n_r=5, n_alpha=8, n_z=12, dr=8.0, dz=8.0)
    ref, gen = tmp_path / "ref.h5", tmp_path / "gen.h5"
    write_showers(ref, toy_showers(mesh, 1000, seed=5), "calofm", mesh)
    scaled = toy_showers(mesh, 500, seed=6)
    write_showers(gen, scaled.with_fields(showers=scaled.showers * 1.2), "calofm", mesh)
    settings = Settings(metrics=("fpd",), fpd_kwargs={"min_samples": 200, "max_samples": 500, "num_batches": 5},
                        kpd_kwargs={"batch_size": 200, "num_batches": 5})
    metrics = evaluate(gen, ref, tmp_path / "eval", settings)
    evidence = metrics["comparisons"]["model"]["fpd_evidence"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "| FPD x 10^3, CaloChallenge features | not shown (see FPD below) | not shown (see FPD below) |" in report
    assert "- FPD x 10^3, CaloChallenge features: not evidence at 500 showers" in report
    assert evidence["fpd_global"]["separates"] is True  # a 20 % scale, plain in the seven global features
    assert f"- FPD x 10^3, seven global features: {evidence['fpd_global']['why']}" in report
    assert all("fpd_evidence" in s["comparisons"]["model"] for s in metrics["slices"])
    assert "FPD x 10^3, global features (model)" in report  # the slices' FPD is the global one


def test_identical_distributions_look_identical(results):
    same = results["same"]
    assert abs(same["classifier"]["high"]["auc"]["value"] - 0.5) < 0.08
    assert same["kpd"]["value"] < 1e-3


def test_a_layer_shift_is_plain_to_the_classifier(results):
    assert results["shifted one layer"]["classifier"]["high"]["auc"]["value"] > 0.9


def null_auc_tolerance(n_val):
    """4 standard deviations of the AUC of a classifier that cannot tell two samples of n_val / 2 events apart
    (the Mann-Whitney statistic's null distribution)."""
    n = n_val / 2
    return 4 * math.sqrt((2 * n + 1) / (12 * n * n))


def expected_coverage(n_reference, n_generated, k=5):
    """Mean PRDC coverage of two independent samples of one continuous distribution: 1 minus the chance
    that the k nearest of the other n_reference - 1 + n_generated points are all reference points."""
    return 1 - math.comb(n_reference - 1, k) / math.comb(n_reference - 1 + n_generated, k)


def test_features_follow_the_calochallenge_definitions(samples):
    ds2, _ = samples
    showers = np.zeros((1, ds2.n_voxels), np.float32)
    showers[0, ds2.index(3, 0, 2)] = 2.0   # layer 3, alpha bin 0, r bin 2
    showers[0, ds2.index(3, 8, 2)] = 2.0   # the opposite alpha bin 8 is not opposite: alpha centres -pi+pi/16, pi/16
    f = FeatureExtractor(ds2)(showers, np.array([100.0]))
    r, alpha, _ = ds2.centres()
    x = r * np.cos(alpha)
    i, j = ds2.index(3, 0, 2), ds2.index(3, 8, 2)
    assert f.e_layer[0, 3] == 4.0 and f.e_tot[0] == 4.0 and f.n_hit[0] == 2
    assert f.ec_eta[0, 3] == pytest.approx((x[i] + x[j]) / 2)
    assert f.width_eta[0, 3] == pytest.approx(abs(x[i] - x[j]) / 2, rel=1e-5)
    assert f.ec_r[0, 3] == pytest.approx(11.625) and f.width_r[0, 3] == pytest.approx(0, abs=1e-3)
    assert f.sparsity[0, 3] == pytest.approx(1 - 2 / 144) and f.sparsity[0, 0] == 1.0
    assert high_level_vector(f).shape == (1, 362)


def test_irregular_dataset_1_features(tmp_path):
    b = calochallenge_binning("dataset_1_photons")
    f = FeatureExtractor(b)(np.ones((2, 368), np.float32), np.array([1e3, 2e3]))
    assert f.e_layer.shape == (2, 5) and f.ec_eta.shape == (2, 2)  # layers 1 and 2 are binned in alpha
    np.testing.assert_allclose(f.e_layer[0], [8, 160, 190, 5, 5])
    # the radial profile on the union of the layers' rings keeps every voxel's energy
    assert f.e_radial.shape == (2, len(b.radial_edges()) - 1)
    np.testing.assert_allclose(f.e_radial.sum(axis=1), 368, rtol=1e-5)


def test_evaluate_command_writes_metrics_report_and_plots(tmp_path):
    mesh = CylindricalBinning.regular(n_r=5, n_alpha=8, n_z=12, dr=8.0, dz=8.0)  # 12 layers: quick layer grids
    ref, gen = tmp_path / "ref.h5", tmp_path / "gen.h5"
    write_showers(ref, toy_showers(mesh, 500, seed=5), "calofm", mesh)  # records the particle
    write_showers(gen, toy_showers(mesh, 250, seed=6), "calochallenge", mesh)  # does not
    out = tmp_path / "eval"
    assert main(["evaluate", "--generated", str(gen), "--reference", str(ref), "--out", str(out),
                 "--metrics", "distances,prdc,classifier", "--classifiers", "high", "--epochs", "2",
                 "--bootstrap", "3"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schema"] == "calofm-metrics/1" and metrics["protocol"] == "calofm"
    model, floor = metrics["comparisons"]["model"], metrics["comparisons"]["geant4"]
    assert model["n_reference"] == 250 and floor["n_generated"] == 250  # reference split in halves
    assert set(model["observables"]) == {"voxel_energy", "energy_ratio", "visible_energy", "occupancy",
                                         "longitudinal_profile", "radial_profile", "z_centre"}
    assert {"value", "error"} <= set(model["geometric_mean_wasserstein"])
    # generated and reference are toy showers of one distribution: coverage near 1 - 2^-5, within 4.5 sigma
    # (sigma = sqrt(p (1 - p) / 250) = 0.011)
    assert model["prdc"]["coverage"]["value"] == pytest.approx(expected_coverage(250, 250), abs=0.05)
    assert metrics["slices"] and all(s["variable"] == "energy_MeV" for s in metrics["slices"])
    assert all("prdc" not in s["comparisons"]["model"] for s in metrics["slices"])  # voxel-level: whole sample only
    highs = [s["comparisons"]["model"]["classifier"]["high"] for s in metrics["slices"]]
    # one distribution on both sides: per slice an AUC compatible with 0.5, or why it cannot be computed
    assert all("skipped" in h or abs(h["auc"]["value"] - 0.5) < null_auc_tolerance(h["n_val"]) for h in highs)
    assert any("auc" in h for h in highs)
    report = (out / "report.md").read_text()
    assert "Geant4 vs Geant4" in report and "![energy_ratio](plots/energy_ratio.png)" in report
    assert "- protocol: calofm (the model against half A" in report
    assert metrics["particles"] == {"reference": {"e-": 500}, "generated": {}}
    assert "- particles: reference: e- (500); generated: not recorded" in report
    for name in ("energy_ratio", "e_layer", "ec_eta", "longitudinal_profile", "radial_profile"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 5000


def test_mismatched_binnings_are_refused(tmp_path):
    ds2, ds3 = calochallenge_binning("dataset_2"), calochallenge_binning("dataset_3")
    write_showers(tmp_path / "a.h5", toy_showers(ds2, 5), "calochallenge", ds2)
    write_showers(tmp_path / "b.h5", toy_showers(ds3, 5), "calochallenge", ds3)
    assert main(["evaluate", "--generated", str(tmp_path / "b.h5"), "--reference", str(tmp_path / "a.h5"),
                 "--out", str(tmp_path / "e")]) == 2


def test_the_z_centre_of_gravity_is_the_energy_weighted_mean_layer_depth(ds2):
    from calofm.evaluate.suite import observables

    showers = np.zeros((3, ds2.n_voxels), np.float32)
    per_layer = ds2.n_voxels // ds2.n_layers
    showers[0, 2 * per_layer] = 10.0  # layer 2 only
    showers[1, [0, 4 * per_layer + 7]] = [1.0, 3.0]  # layers 0 and 4, 1 : 3
    z = np.asarray(ds2.z_edges)
    centres = (z[:-1] + z[1:]) / 2
    got = observables(sample_from_arrays("s", showers, np.full(3, 1e3), ds2), ds2)["z_centre"]
    np.testing.assert_allclose(got, [centres[2], (centres[0] + 3 * centres[4]) / 4, 0.0], rtol=1e-6)
