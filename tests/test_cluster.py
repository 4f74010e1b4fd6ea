"""`--cluster`: shards of a simulation as Dask tasks on a local cluster; batch-system job scripts."""

import json
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from calofm.cli.main import main
from calofm.core.cluster import ClusterSpec, run_tasks, task_count
from calofm.data import open_showers
from calofm.simulate.detectors import get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.runner import Run, _simulate_shard, merge_shards, parts_dir, simulate, simulate_on_cluster

RUN = Run(get_detector("par04-siw"), Gun("e-", Spectrum.parse("loguniform:1:4")), 12, seed=5)


def _read(path):
    with open_showers(path) as f:
        return f.read(), dict(f.metadata)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "ref.h5"
    simulate(RUN, out, workers=2, progress=False)
    return _read(out)


def test_a_local_cluster_gives_the_one_machine_run(tmp_path, reference):
    out = tmp_path / "cluster.h5"
    stats = simulate_on_cluster(RUN, out, ClusterSpec.parse("local:2"), tasks=3, progress=False)
    showers, meta = _read(out)
    assert stats["events"] == 12 and not stats["already_done"]
    np.testing.assert_array_equal(showers.showers, reference[0].showers)
    np.testing.assert_array_equal(showers.energy, reference[0].energy)
    assert meta["settings"] == reference[1]["settings"]  # the merged file is the whole run
    assert not (tmp_path / "cluster.h5.shards").exists()
    again = simulate_on_cluster(RUN, out, ClusterSpec.parse("local:2"), tasks=3, progress=False)
    assert again["already_done"]  # a finished run is not simulated again, on a cluster or not
    assert simulate(RUN, out, progress=False)["already_done"]


def _dies_mid_shard(marker: str, run: Run, out: str):
    """A shard task whose worker process dies once, after the shard wrote its first part."""
    if os.path.exists(marker):
        return _simulate_shard(run, out)
    Path(marker).touch()
    threading.Thread(target=_simulate_shard, args=(run, out), daemon=True).start()
    while not list(parts_dir(Path(out)).glob("events-*.h5")):
        time.sleep(0.05)
    os._exit(1)


def test_a_task_killed_mid_run_is_rerun_without_losing_or_duplicating_events(tmp_path, reference):
    files = [tmp_path / f"shard{i}.h5" for i in range(2)]
    tasks = [(str(tmp_path / f"died{i}"), replace(RUN, shard=(i, 2)), str(f)) for i, f in enumerate(files)]
    (tmp_path / "died1").touch()  # only the first shard's worker dies
    run_tasks(ClusterSpec.parse("local:2"), _dies_mid_shard, tasks, "shards", tmp_path / "logs", progress=False)
    merge_shards(files, tmp_path / "merged.h5", progress=False)
    merged, _ = _read(tmp_path / "merged.h5")
    np.testing.assert_array_equal(merged.event, np.arange(12))
    np.testing.assert_array_equal(merged.showers, reference[0].showers)


def _fails(i: int) -> int:
    if i == 1:
        raise RuntimeError("shard 1 cannot be simulated")
    return i


def test_a_task_that_keeps_failing_ends_the_run_with_its_log_kept(tmp_path):
    with pytest.raises(Exception, match=r"1 of 3 tasks failed after 1 retries \(first: RuntimeError: shard 1"):
        run_tasks(ClusterSpec.parse("local:1"), _fails, [(0,), (1,), (2,)], "tasks", tmp_path / "logs", retries=1,
                  progress=False)
    assert "shard 1 cannot be simulated" in (tmp_path / "logs" / "task-1.log").read_text()


@pytest.mark.parametrize("kind, expected", [
    ("slurm", ["#SBATCH -p short", "#SBATCH --account=calo", "#SBATCH -t 02:00:00", "--nworkers 4"]),
    ("htcondor", ["MY.DaskWorkerCores = 4", "RequestMemory"]),
    ("pbs", ["#PBS -q short", "#PBS -l walltime=02:00:00"]),
])
def test_batch_specs_build_their_job_scripts(kind, expected):
    options = {"cores": 4, "memory": "16GB", **({"disk": "10GB"} if kind == "htcondor" else
                                                 {"queue": "short", "walltime": "02:00:00"})}
    if kind == "slurm":
        options["job_extra_directives"] = ["--account=calo"]
    cluster = ClusterSpec.parse(kind, options, jobs=3).jobqueue_cluster()
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in expected + ["DASK_DISTRIBUTED__WORKER__DAEMON=False"]:
        assert line in script
    assert task_count(ClusterSpec.parse(kind, options, jobs=3), 1000) == 4 * 3 * 4


@pytest.mark.parametrize("args, message", [
    (["--cluster", "lokal"], "--cluster: 'lokal': use local, local:N, slurm, htcondor, pbs or tcp://HOST:PORT"),
    (["--cluster", "local:0"], "--cluster: 'local:0': local:N needs a positive number of workers"),
    (["--cluster", "--shard", "1/2"], "--shard: --cluster cuts the run into shards itself"),
    (["--cluster", "slurm", "--cluster-config", "missing.yaml"], "missing.yaml: no such file"),
    (["--cluster", "slurm", "--cluster-option", "queue"], "--cluster-option: 'queue' is not KEY=VALUE"),
])
def test_bad_cluster_options_are_one_line_errors(tmp_path, capsys, args, message):
    os.chdir(tmp_path)
    assert main(["simulate", "--detector", "par04-siw", "--n", "4", "--out", "x.h5", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_studys_cells_run_in_parallel_and_give_the_serial_table(toys, tmp_path, one_thread):
    """Four cells (two strategies x two seeds) on local:2, against the same study run serially."""
    def config(out):
        return {"out": str(out), "base": str(toys / "base"),
                "target": {"name": "c", "train": str(toys / "c.h5"), "test": str(toys / "c_test.h5")},
                "strategies": {"scratch": {}, "bitfit": {}}, "sizes": [20], "seeds": [0, 1],
                "train": {"steps": 4, "batch_size": 16, "device": "cpu", "log_every": 2},
                "evaluate": {"n": 100, "steps": 2, "classifier_epochs": 2}}
    summaries = []
    for name, extra in (("serial", []), ("parallel", ["--cluster", "local:2"])):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config(tmp_path / name)))
        assert main(["study", "--config", str(path), "--no-progress", *extra]) == 0
        summaries.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    serial, parallel = ({(c["label"], c["seed"]): {k: v for k, v in c.items() if k != "seconds"}
                         for c in s["cells"]} for s in summaries)
    assert serial.keys() == parallel.keys() and len(serial) == 4
    for key in serial:
        for metric in ("gm", "kl", "auc"):
            np.testing.assert_allclose(parallel[key][metric][0], serial[key][metric][0], rtol=1e-4)
    assert summaries[0]["rows"].keys() == summaries[1]["rows"].keys()


def test_cluster_options_come_from_the_yaml_file_and_the_flags(tmp_path):
    from calofm.cli.main import build_parser
    from calofm.cli.options import cluster_spec

    (tmp_path / "slurm.yaml").write_text("queue: long\ncores: 8\nmemory: 16GB\n")
    args = build_parser().parse_args(["simulate", "--detector", "par04-siw", "--n", "4", "--cluster", "slurm",
                                      "--cluster-config", str(tmp_path / "slurm.yaml"), "--cluster-option",
                                      "queue=short", "--cluster-option", "job_extra_directives=[--account=calo]",
                                      "--cluster-jobs", "5"])
    spec = cluster_spec(args)
    assert spec.options == {"queue": "short", "cores": 8, "memory": "16GB", "job_extra_directives": ["--account=calo"]}
    assert spec.jobs == 5 and spec.kind == "slurm"
