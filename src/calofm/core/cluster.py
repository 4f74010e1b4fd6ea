"""Running independent tasks on a Dask cluster: a local one, a batch system's, or a running scheduler.

calofm writes no scheduler: ``--cluster SPEC`` names a Dask cluster and each task (a shard of a
simulation, a cell of a study) is one Dask task. SPEC is

- ``local`` or ``local:N``: a :class:`distributed.LocalCluster` of N worker processes (default: the
  machine's cores), one thread each;
- ``slurm``, ``htcondor`` or ``pbs``: worker jobs submitted through dask-jobqueue, with its options
  (queue, cores, memory, walltime, job_extra_directives, ...) from a YAML file and the number of
  jobs to start;
- ``tcp://HOST:PORT``: the scheduler of a cluster the user started.

A task that raises is retried ``retries`` times; one whose worker dies is rescheduled by Dask. Tasks
must be idempotent (calofm's write complete files under temporary names, so a rerun task resumes).
Workers are not daemonic processes, so a task may start processes of its own (Geant4 workers).
Needs the optional dependencies: ``pip install 'calofm[cluster]'``.
"""

from __future__ import annotations

import math
import os
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from calofm.core.errors import CalofmError
from calofm.core.files import read_yaml_mapping

JOBQUEUE = {"slurm": "SLURMCluster", "htcondor": "HTCondorCluster", "pbs": "PBSCluster"}
NOT_DAEMONIC = "DASK_DISTRIBUTED__WORKER__DAEMON=False"  # lets a task start processes (Geant4 workers)


@dataclass(frozen=True)
class ClusterSpec:
    """What ``--cluster SPEC`` (with ``--cluster-config`` options and ``--cluster-jobs``) names."""

    kind: str                  # local, slurm, htcondor, pbs or address
    workers: int | None = None  # local: worker processes
    address: str | None = None  # address: the scheduler's
    options: dict = field(default_factory=dict)  # jobqueue: the cluster class's keyword arguments
    jobs: int = 1               # jobqueue: batch jobs to start

    @classmethod
    def parse(cls, spec: str, options: dict | None = None, jobs: int = 1) -> "ClusterSpec":
        """A spec from its text; a ``ValueError`` says what is wrong with it."""
        if spec.startswith("tcp://"):
            return cls("address", address=spec)
        kind, _, count = spec.partition(":")
        if kind == "local":
            if count and not (count.isdigit() and int(count) > 0):
                raise ValueError(f"{spec!r}: local:N needs a positive number of workers")
            return cls("local", workers=int(count) if count else os.cpu_count() or 1)
        if kind in JOBQUEUE and not count:
            return cls(kind, options=dict(options or {}), jobs=jobs)
        raise ValueError(f"{spec!r}: use local, local:N, slurm, htcondor, pbs or tcp://HOST:PORT")

    def jobqueue_cluster(self):
        """The dask-jobqueue cluster of a batch-system spec (submits nothing until scaled)."""
        import dask_jobqueue

        options = dict(self.options)
        options["job_script_prologue"] = [f"export {NOT_DAEMONIC}", *options.get("job_script_prologue", [])]
        try:
            return getattr(dask_jobqueue, JOBQUEUE[self.kind])(**options)
        except (TypeError, ValueError) as exc:
            raise CalofmError(f"--cluster {self.kind}: {str(exc).splitlines()[0]}") from None

    def describe(self) -> str:
        if self.kind == "local":
            return f"a local Dask cluster of {self.workers} worker processes"
        if self.kind == "address":
            return f"the Dask scheduler at {self.address}"
        return f"{self.jobs} {self.kind} job(s) of Dask workers"


@contextmanager
def dask_client(spec: ClusterSpec) -> Iterator:
    """A connected :class:`distributed.Client` for ``spec``; its cluster is closed afterwards."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise CalofmError("--cluster needs Dask: pip install 'calofm[cluster]'") from None
    with dask.config.set({"distributed.worker.daemon": False}):
        if spec.kind == "address":
            cluster = None
            try:
                client = Client(spec.address, timeout="20s")
            except OSError as exc:
                raise CalofmError(f"--cluster {spec.address}: no Dask scheduler answers ({exc})") from None
        elif spec.kind == "local":
            cluster = LocalCluster(n_workers=spec.workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0")
            client = Client(cluster)
        else:
            cluster = spec.jobqueue_cluster()
            cluster.scale(jobs=spec.jobs)
            client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def run_tasks(spec: ClusterSpec, fn: Callable, tasks: list[tuple], what: str, logs: Path, retries: int = 2,
              progress: bool = True) -> list:
    """``fn(*task)`` for every task on the cluster, results in task order. Shows a progress bar of
    finished tasks and the dashboard address; a task still failing after ``retries`` retries has its
    traceback kept in ``logs`` and ends the run with a one-line error once the others are done."""
    from distributed import as_completed
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results, failed = [None] * len(tasks), []
    with dask_client(spec) as client:
        if progress:
            print(f"{what} on {spec.describe()}; dashboard: {client.dashboard_link}")
        futures = {client.submit(fn, *task, retries=retries, pure=False): i for i, task in enumerate(tasks)}
        columns = [TextColumn(f"[bold]{what}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, disable=not progress) as bar:
            task_bar = bar.add_task("", total=len(tasks))
            for future in as_completed(futures):
                i = futures[future]
                if future.status == "finished":
                    results[i] = future.result()
                else:
                    failed.append((i, future.exception(), future.traceback()))
                bar.advance(task_bar)
    if failed:
        logs.mkdir(parents=True, exist_ok=True)
        for i, exc, tb in failed:
            (logs / f"task-{i}.log").write_text(f"task {i}: {tasks[i]!r}\n" + "".join(traceback.format_tb(tb))
                                                + f"{type(exc).__name__}: {exc}\n")
        first = failed[0][1]
        raise CalofmError(f"{len(failed)} of {len(tasks)} tasks failed after {retries} retries (first: "
                          f"{type(first).__name__}: {first}); tracebacks in {logs}; re-run the same command: "
                          "finished tasks are not run again")
    return results


def read_options(path: str | Path | None) -> dict:
    """The dask-jobqueue options of a YAML file (a mapping), or {}."""
    if path is None:
        return {}
    return read_yaml_mapping(path, "dask-jobqueue options YAML", "queue, cores, memory, walltime, ...")


def task_count(spec: ClusterSpec, n_items: int, per_worker: int = 4) -> int:
    """How many tasks to cut ``n_items`` into: a few per worker, so a slow task does not hold the end."""
    workers = spec.workers or (spec.jobs * int(spec.options.get("processes", spec.options.get("cores", 1))))
    return max(1, min(n_items, per_worker * max(workers, 1), math.ceil(n_items / 5)))
