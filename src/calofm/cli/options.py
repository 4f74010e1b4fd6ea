"""Argument types of the ``calofm`` commands: a value out of range is refused by the parser, in one
line naming the option, before any work starts."""

from __future__ import annotations

import argparse
import math


def _number(kind, text: str, ok, what: str):
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_int(text: str) -> int:
    return _number(int, text, lambda v: v > 0, "a positive integer")


def non_negative_int(text: str) -> int:
    return _number(int, text, lambda v: v >= 0, "a non-negative integer")


def positive_float(text: str) -> float:
    return _number(float, text, lambda v: v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    return _number(float, text, lambda v: v >= 0, "a non-negative number")


def fraction(text: str) -> float:
    """A fraction in [0, 1)."""
    return _number(float, text, lambda v: 0 <= v < 1, "a fraction in [0, 1)")


def probability(text: str) -> float:
    """A probability in (0, 1]."""
    return _number(float, text, lambda v: 0 < v <= 1, "a probability in (0, 1]")


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line like calofm's own errors (the usage is in --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def cluster_options(parser, tasks: str, how: str) -> None:
    """The ``--cluster`` options of a command whose ``tasks`` (shards, cells) run as Dask tasks."""
    group = parser.add_argument_group(
        "cluster (Dask; pip install 'calofm[cluster]'; README 'Beyond one machine')",
        f"{how}. A task that fails is retried; a finished one is never run again, so re-running the same "
        "command after a failure resumes. The progress bar counts finished tasks; the Dask dashboard's address "
        "is printed first.")
    group.add_argument("--cluster", nargs="?", const="local", metavar="SPEC",
                       help="local[:N] (a local Dask cluster of N worker processes; default the cores), slurm, "
                            "htcondor or pbs (worker jobs through dask-jobqueue, see --cluster-config), or "
                            "tcp://HOST:PORT (a running Dask scheduler). Without a value: local")
    group.add_argument("--cluster-config", metavar="YAML",
                       help="dask-jobqueue options for slurm/htcondor/pbs: queue, cores, memory, walltime, "
                            "job_extra_directives, ... (the keyword arguments of SLURMCluster and its siblings)")
    group.add_argument("--cluster-option", action="append", default=[], metavar="KEY=VALUE",
                       help="one dask-jobqueue option, over --cluster-config's (repeatable; VALUE is YAML), e.g. "
                            "--cluster-option queue=short --cluster-option walltime=04:00:00")
    group.add_argument("--cluster-jobs", type=positive_int, default=1, metavar="N",
                       help="batch jobs of workers to start for slurm/htcondor/pbs (default 1)")
    group.add_argument("--cluster-tasks", type=positive_int, metavar="K",
                       help=f"how many {tasks} to cut the work into (default: four per worker)")
    group.add_argument("--retries", type=non_negative_int, default=2,
                       help="retries of a task that raises (default 2); Dask also reschedules a task whose "
                            "worker died")


def cluster_spec(args):
    """The :class:`calofm.core.cluster.ClusterSpec` of parsed ``--cluster`` options."""
    import yaml

    from calofm.core.cluster import ClusterSpec, read_options
    from calofm.core.errors import InputError

    options = read_options(args.cluster_config)
    for item in args.cluster_option:
        key, sep, value = item.partition("=")
        if not (sep and key):
            raise InputError("--cluster-option", f"{item!r} is not KEY=VALUE")
        options[key] = yaml.safe_load(value)
    try:
        return ClusterSpec.parse(args.cluster, options, args.cluster_jobs)
    except ValueError as exc:
        raise InputError("--cluster", str(exc)) from None
