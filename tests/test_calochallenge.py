"""The CaloChallenge protocol (`calofm evaluate --protocol calochallenge`) against the reference
evaluation's own numbers on the same files. The expected values come from running the reference
code once (tests/data/calochallenge/make_expected.py documents how); the files are rebuilt here from
the same seeds and their SHA-256 is checked first."""

import hashlib
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from calofm.cli.main import main
from calofm.evaluate.calochallenge import (
    DATASETS,
    ClassifierSettings,
    classifier_splits,
    dataset_of,
    evaluate_challenge,
)
from calofm.evaluate.classifier import ClassifierInputError, classifier_test
from calofm.geometry import CylindricalBinning, calochallenge_binning
from conftest import CALOCHALLENGE_PAIRS, calochallenge_classifier_pair, calochallenge_pair

_EXPECTED = json.loads((Path(__file__).parent / "data" / "calochallenge" / "expected.json").read_text())
EXPECTED, EXPECTED_CLASSIFIER = _EXPECTED["datasets"], _EXPECTED["classifier"]


def file_digest(path) -> str:
    with h5py.File(path, "r") as f:
        return hashlib.sha256(b"".join(f[k][:].tobytes() for k in ("incident_energies", "showers"))).hexdigest()


def check_digests(paths, expected: dict) -> None:
    for role, path in zip(("generated", "reference"), paths):
        assert file_digest(path) == expected[role], (
            f"the regenerated {role} file differs from the one the expected values were computed on; "
            "rerun tests/data/calochallenge/make_expected.py")


# dataset 3's 800 + 1200 showers of 40 500 voxels take 45 s: in the slow set
@pytest.fixture(scope="module", params=[pytest.param(d, marks=pytest.mark.slow) if d == "3" else d
                                        for d in sorted(EXPECTED)])
def pair(request, tmp_path_factory):
    dataset = request.param
    generated, reference = calochallenge_pair(dataset, tmp_path_factory.mktemp(f"cc{dataset}"))
    check_digests((generated, reference), EXPECTED[dataset]["sha256"])
    return dataset, generated, reference


def assert_relative(actual: float, expected: float, tolerance: float = 1e-6) -> None:
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        assert actual is None or math.isnan(actual)
    else:
        assert actual == pytest.approx(expected, rel=tolerance, abs=1e-15)


def test_separation_powers_and_prdc_match_the_reference(pair, tmp_path):
    dataset, generated, reference = pair
    metrics = evaluate_challenge(generated, reference, tmp_path, parts=("hist", "prdc"), log=lambda m: None)
    expected = EXPECTED[dataset]
    assert list(metrics["separation_powers"]) == list(expected["separation_powers"])  # labels, in order
    for label, value in expected["separation_powers"].items():
        assert_relative(metrics["separation_powers"][label], value)
    assert metrics["prdc"] == pytest.approx(expected["prdc"], rel=1e-12)
    written = (tmp_path / f"histogram_chi2_{dataset}.txt").read_text()
    assert written.startswith("List of chi2 of the plotted histograms")
    assert written.count(": \n") == len(expected["separation_powers"])
    assert (tmp_path / f"prdc_{dataset}.txt").read_text().splitlines()[0].startswith("precision: ")
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["protocol"] == "calochallenge" and saved["dataset"] == dataset
    assert (dataset, saved["n_generated"], saved["n_reference"]) == (dataset, *CALOCHALLENGE_PAIRS[dataset][1:])


def test_fpd_and_kpd_match_jetnet_on_the_reference_features(pair, tmp_path):
    dataset, generated, reference = pair
    if dataset != "1-photons":
        pytest.skip("one dataset in the default run (each takes 40 s to minutes): the others in the slow test below")
    check_fpd_kpd(dataset, generated, reference, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["1-pions", "2", "3"])
def test_fpd_and_kpd_match_jetnet_on_the_other_datasets(dataset, tmp_path):
    generated, reference = calochallenge_pair(dataset, tmp_path / "files")
    check_fpd_kpd(dataset, generated, reference, tmp_path)


def check_fpd_kpd(dataset, generated, reference, out):
    metrics = evaluate_challenge(generated, reference, out, parts=("fpd",), log=lambda m: None)
    # KPD in float64, as JetNet: each unbiased MMD is a small difference of sums of ~10^8 kernel values,
    # which JetNet sums sequentially (its values are off exact summation by ~1e-8, calofm's are not)
    for key in ("fpd", "kpd"):
        for value, expected in zip(metrics[key], EXPECTED[dataset][key]):
            assert_relative(value, expected)
    lines = (out / f"fpd_kpd_{dataset}.txt").read_text().splitlines()
    fpd, kpd = EXPECTED[dataset]["fpd"], EXPECTED[dataset]["kpd"]
    assert lines == [f"FPD (x10^3): {fpd[0] * 1e3:.4f} ± {fpd[1] * 1e3:.4f}",
                     f"KPD (x10^3): {kpd[0] * 1e3:.4f} ± {kpd[1] * 1e3:.4f}"]


def test_every_challenge_binning_is_recognised_and_others_are_refused():
    for name, dataset in DATASETS.items():
        assert dataset_of(calochallenge_binning(dataset.binning)).name == name
    with pytest.raises(ValueError, match="needs a CaloChallenge binning"):
        dataset_of(CylindricalBinning.regular(n_r=9, n_alpha=16, n_z=44, dr=4.65, dz=3.4))


def test_cli_protocol_calochallenge_writes_the_reference_files(tmp_path, capsys):
    generated, reference = calochallenge_pair("1-photons", tmp_path / "files")
    out = tmp_path / "out"
    assert main(["evaluate", "--protocol", "calochallenge", "--parts", "hist", "--generated", str(generated),
                 "--reference", str(reference), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["histogram_chi2_1-photons.txt", "metrics.json"]
    assert "CaloChallenge protocol, dataset 1-photons, 1000 generated against all 1500" in capsys.readouterr().out
    assert main(["evaluate", "--protocol", "calochallenge", "--parts", "hist,cls", "--generated", str(generated),
                 "--reference", str(reference), "--out", str(out)]) == 2
    assert "unknown cls" in capsys.readouterr().err


def test_threshold_keeps_the_threshold_itself_and_zeroes_below(tmp_path):
    from calofm.evaluate.calochallenge import threshold

    t = DATASETS["2"].min_energy
    showers = np.array([[t, np.nextafter(np.float32(t), 0), 1.0, -1.0]], np.float32)
    assert threshold(showers, DATASETS["2"]).tolist() == [[np.float32(t), 0.0, 1.0, 0.0]]


def test_leaderboard_places_the_model_by_fpd_among_the_published_submissions(tmp_path, capsys):
    from calofm.evaluate.calochallenge import leaderboard

    metrics = {"dataset": "2", "fpd": [0.050, 0.001], "kpd": [0.0001, 0.00001],
               "separation_powers": {"Etot / Einc": 0.01, "E layer 0": 0.02, "E layer 1": 0.04},
               "classifiers": {"cls-low": {"auc": 0.61}, "cls-high": {"auc": 0.57}}}
    table = leaderboard(metrics, name="mine")
    header = next(line for line in table.splitlines() if line.startswith("| submission")).split(" | ")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| ---",
                                                                                                   "| submission"))]
    names = [row.split(" | ")[0][2:] for row in rows]
    fpds = [float(row.split(" | ")[1]) for row in rows if row.split(" | ")[1] != "-"]
    assert names[0] == "GEANT4" and "**mine**" in names and fpds == sorted(fpds)
    mine = rows[names.index("**mine**")].split(" | ")
    assert mine[1:5] == ["50", "0.1", "0.01", "0.03"]  # FPD and KPD x 1e3, E total, mean of the E layers
    assert [mine[header.index(column)] for column in ("AUC low", "AUC high")] == ["0.61", "0.57"]
    assert names.index("**mine**") == sum(f < 50 for f in fpds)  # right after every smaller FPD
    with pytest.raises(ValueError, match="no table for dataset 1-pions"):
        leaderboard({**metrics, "dataset": "1-pions"})


def test_files_of_two_binnings_end_in_one_line(tmp_path):
    from calofm.core.errors import InputError

    photons, _ = calochallenge_pair("1-photons", tmp_path / "ds1")
    _, dataset_2 = calochallenge_pair("2", tmp_path / "ds2")
    with pytest.raises(InputError, match="368 voxels per shower, the reference .* has 6480"):
        evaluate_challenge(photons, dataset_2, tmp_path / "out", parts=("hist",), log=lambda m: None)
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.fixture(scope="module")
def classifier_pair(tmp_path_factory):
    paths = calochallenge_classifier_pair(tmp_path_factory.mktemp("cc-classifier"))
    check_digests(paths, EXPECTED_CLASSIFIER["sha256"])
    return paths


@pytest.mark.parametrize("precision, modes", [("float32", ("cls-low", "cls-high")),
                                              pytest.param("bfloat16", ("cls-low",), marks=pytest.mark.slow)])
def test_classifiers_match_the_reference_within_the_spread_of_trainings(classifier_pair, precision, modes, tmp_path,
                                                                        one_thread):
    """The reference's cls-low and cls-high (its own flags for a 3 x 64 network, 5 epochs), trained
    six times against calofm's three trainings: the means agree within three standard errors. In
    bfloat16 the voxel input, where its rounding could matter."""
    expected, repeats = EXPECTED_CLASSIFIER, 3
    settings = ClassifierSettings(hidden=expected["hidden"], epochs=expected["epochs"], repeats=repeats,
                                  precision=precision)
    metrics = evaluate_challenge(*classifier_pair, tmp_path, parts=modes, classifier=settings, log=lambda m: None)
    for mode in modes:
        ours = metrics["classifiers"][mode]
        assert ours["n_per_class"] == {"train": 80_000, "test": 20_000, "val": 2_000}  # the reference's split
        for key in ("auc", "jsd"):
            theirs = np.array(expected[mode][key])
            error = math.sqrt(theirs.var(ddof=1) / len(theirs) + ours[f"{key}_std"] ** 2 / repeats)
            assert abs(ours[key] - theirs.mean()) < 3 * error, (mode, key, ours[key], theirs.mean(), error)
        assert 0.6 < ours["auc"] < 0.75  # the regime where training shapes the result: neither 0.5 nor 1
        assert (tmp_path / f"classifier_{mode}_1-photons.txt").read_text() == (
            f"Final result of classifier test (AUC / JSD):\n{ours['auc']:.4f} / {ours['jsd']:.4f}\n\n")


def test_classifier_splits_are_the_reference_s_and_shrink_in_proportion_where_it_crashes():
    assert classifier_splits(DATASETS["1-photons"], 121_000) == (80_000, 20_000, 21_000)
    assert classifier_splits(DATASETS["2"], 100_000) == (60_000, 20_000, 20_000)
    assert classifier_splits(DATASETS["2"], 85_000) == (60_000, 20_000, 5_000)  # the rest, as ttv_split
    assert classifier_splits(DATASETS["2"], 10_000) == (6_000, 2_000, 2_000)
    assert classifier_splits(DATASETS["1-pions"], 1_000) == (662, 165, 173)
    rows = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    with pytest.raises(ClassifierInputError, match=r"splits of \(40, 10, 5\) events per class .* has 50"):
        classifier_test(rows, rows, sizes=(40, 10, 5), epochs=1)
