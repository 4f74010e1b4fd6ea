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
from calofm.evaluate.calochallenge import DATASETS, dataset_of, evaluate_challenge
from calofm.geometry import CylindricalBinning, calochallenge_binning
from conftest import calochallenge_pair

EXPECTED = json.loads((Path(__file__).parent / "data" / "calochallenge" / "expected.json").read_text())["datasets"]


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def pair(request, tmp_path_factory):
    dataset = request.param
    generated, reference = calochallenge_pair(dataset, tmp_path_factory.mktemp(f"cc{dataset}"))
    for role, path in (("generated", generated), ("reference", reference)):
        with h5py.File(path, "r") as f:
            digest = hashlib.sha256(b"".join(f[k][:].tobytes() for k in ("incident_energies", "showers")))
        assert digest.hexdigest() == EXPECTED[dataset]["sha256"][role], (
            f"the regenerated {role} file differs from the one the expected values were computed on; "
            "rerun tests/data/calochallenge/make_expected.py")
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
    assert saved["n_generated"] == 1000 and saved["n_reference"] == 1500


def test_fpd_and_kpd_match_jetnet_on_the_reference_features(pair, tmp_path):
    dataset, generated, reference = pair
    if dataset == "2":
        pytest.skip("dataset 2's 362-feature FPD takes minutes: covered by the slow test below")
    check_fpd_kpd(dataset, generated, reference, tmp_path)


@pytest.mark.slow
def test_fpd_and_kpd_match_jetnet_on_dataset_2(tmp_path):
    generated, reference = calochallenge_pair("2", tmp_path / "files")
    check_fpd_kpd("2", generated, reference, tmp_path)


def check_fpd_kpd(dataset, generated, reference, out):
    metrics = evaluate_challenge(generated, reference, out, parts=("fpd",), log=lambda m: None)
    for key in ("fpd", "kpd"):
        assert_relative(metrics[key][0], EXPECTED[dataset][key][0])
    assert_relative(metrics["fpd"][1], EXPECTED[dataset]["fpd"][1])
    # KPD's spread (half the 16-84 % range of 10 batch values): each unbiased MMD is a difference of
    # sums of ~10^8 kernel values, summed in another order than JetNet's numba loops
    assert_relative(metrics["kpd"][1], EXPECTED[dataset]["kpd"][1], tolerance=1e-5)
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
               "separation_powers": {"Etot / Einc": 0.01, "E layer 0": 0.02, "E layer 1": 0.04}}
    table = leaderboard(metrics, name="mine")
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith(("| ---",
                                                                                                   "| submission"))]
    names = [row.split(" | ")[0][2:] for row in rows]
    fpds = [float(row.split(" | ")[1]) for row in rows if row.split(" | ")[1] != "-"]
    assert names[0] == "GEANT4" and "**mine**" in names and fpds == sorted(fpds)
    mine = rows[names.index("**mine**")].split(" | ")
    assert mine[1:5] == ["50", "0.1", "0.01", "0.03"]  # FPD and KPD x 1e3, E total, mean of the E layers
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
