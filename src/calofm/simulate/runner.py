"""Run a simulation: worker processes, shards, resumable parts, progress, and the final file.

A run of ``n`` events is cut into shards (``--shard i/k``: contiguous event ranges, one per
machine of an array job). A shard is simulated in small parts, each written complete to
``OUT.parts/`` by a worker process; re-running the same command skips the parts that exist, so a
killed run resumes with no lost or duplicated showers. When all parts exist they are merged
into ``OUT`` (written under a temporary name, then renamed) and the parts are removed. Re-running
a finished command leaves ``OUT`` as it is.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import get_context, parent_process
from pathlib import Path

import numpy as np

from calofm import __version__
from calofm.core.cluster import ClusterSpec, run_tasks, task_count
from calofm.core.errors import CalofmError, InputError
from calofm.core.files import atomic_path, check_output
from calofm.core.units import GeV
from calofm.data import PointClouds, ShowerFile, Showers, ShowerWriter
from calofm.simulate.detectors import Block, Detector, Mesh, Slab
from calofm.simulate.g4env import last_exception
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.handoff import ShowerModel
from calofm.simulate.materials import material as material_properties
from calofm.simulate.physics import Physics, default_physics


@dataclass(frozen=True)
class Run:
    """Everything that determines the showers of a run (and so must match when resuming)."""

    detector: Detector
    gun: Gun
    n: int
    seed: int = 0
    shard: tuple[int, int] = (0, 1)
    points: bool = False
    physics: Physics | None = None  # None: default_physics of the particle, Birks' default constants
    fast_sim: ShowerModel | None = None  # the model the particles its trigger accepts are handed to

    def __post_init__(self):
        if self.physics is None:
            object.__setattr__(self, "physics", Physics(default_physics(self.gun.particle)))
        i, k = self.shard
        if not (k >= 1 and 0 <= i < k):
            raise ValueError(f"shard {i}/{k}: need 0 <= i < k")
        if self.n < 1:
            raise ValueError("need at least one event")
        if k > self.n:
            raise ValueError(f"shard {i}/{k}: {k} shards for {self.n} events leave some empty")
        if self.fast_sim is not None and self.points:
            raise ValueError("a fast-simulated run has no point clouds: the model's deposits are voxel centres")

    @property
    def events(self) -> range:
        """The global event indices of this shard."""
        i, k = self.shard
        bounds = np.linspace(0, self.n, k + 1).round().astype(int)
        return range(int(bounds[i]), int(bounds[i + 1]))

    def settings(self) -> dict:
        """JSON-able description, stored in every part and output file."""
        return {"detector": self.detector.name, "detector_fingerprint": self.detector.fingerprint,
                "gun": self.gun.describe(), "n_events": self.n, "seed": self.seed, "shard": list(self.shard),
                "points": self.points, **({"fast_sim": self.fast_sim.describe()} if self.fast_sim else {}),
                "sampling_fraction": self.detector.sampling_fraction if not self.detector.sections
                else dict(zip([sec.name for sec in self.detector.sections], self.detector.sampling_fractions))}


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def _part_name(a: int, b: int) -> str:
    return f"events-{a:09d}-{b:09d}.h5"


def _existing_parts(folder: Path) -> list[tuple[int, int]]:
    ranges = []
    for path in folder.glob("events-*-*.h5"):
        _, a, b = path.stem.split("-")
        ranges.append((int(a), int(b)))
    return sorted(ranges)


def plan(events: range, done: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Ranges of at most ``size`` events covering ``events`` minus the ``done`` ranges."""
    todo = np.ones(len(events), dtype=bool)
    for a, b in done:
        todo[max(a, events.start) - events.start:max(min(b, events.stop) - events.start, 0)] = False
    chunks = []
    i = 0
    while i < len(events):
        if not todo[i]:
            i += 1
            continue
        j = i
        while j < len(events) and todo[j] and j - i < size:
            j += 1
        chunks.append((events.start + i, events.start + j))
        i = j
    return chunks


# --- worker side ---------------------------------------------------------------------
_session = None


def _init_worker(detector: Detector, particle: str, physics: Physics, log: str,
                 fast_sim: ShowerModel | None = None) -> None:
    """Start Geant4 (and load the fast-simulation model) once per worker; its console output goes to
    ``log`` (read when a worker dies)."""
    global _session
    _die_with_parent()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from calofm.simulate import g4env

    official = g4env.configure(physics.hadronic)["g4data"] == "official"
    from calofm.simulate.g4app import Session

    _session = (Session(detector, particle, physics, official, fast_sim and fast_sim.trigger), detector, fast_sim)
    if fast_sim is not None:
        fast_sim.load()


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when the run's main process dies (e.g. kill -9),
    instead of leaving a Geant4 process behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        parent = parent_process()
        if parent is not None and os.getppid() != parent.pid:  # it died before the request was made
            os._exit(1)


def _queue(conditions: list[tuple[float, float, float, int]]) -> list[tuple[float, float, int]]:
    """What the Geant4 session fires, (energy MeV, theta, Geant4 seed), from Gun.event conditions."""
    return [(energy, theta, g4_seed) for energy, theta, _, g4_seed in conditions]


def _simulate_part(gun: Gun, seed: int, a: int, b: int, points: bool, folder: str, metadata: dict) -> dict:
    """Simulate events [a, b) and write them as one complete part file; returns its statistics
    (events, seconds, GeV; and for a fast simulation handed_off, handed_off_gev, model_seconds)."""
    from calofm.simulate.scoring import cluster, score_mesh, to_mesh_frame

    session, detector, fast_sim = _session
    t0 = time.perf_counter()
    conditions = [gun.event(seed, i) for i in range(a, b)]
    all_steps = session.simulate(_queue(conditions))
    for steps in all_steps:
        steps[:, 3] *= detector.energy_scale(steps[:, 2])
    stats = {}
    if fast_sim is not None:
        all_steps, stats = _add_model_showers(fast_sim, all_steps, session.collector.handoffs,
                                              np.array([c[2] for c in conditions]), [seed, a])
        metadata = {**metadata, **{f"fast_sim_{k}": v for k, v in stats.items() if k != "model_seconds"}}
    mesh, readout = detector.mesh_binning(), detector.readout()
    showers, clouds = [], []
    for (energy, theta, phi, _), steps in zip(conditions, all_steps):
        in_mesh_frame = to_mesh_frame(steps, theta)
        showers.append(score_mesh(in_mesh_frame, mesh))
        if points:
            clouds.append(cluster(in_mesh_frame if detector.cell_mm is None else steps, readout))
    batch = Showers(energy=np.array([c[0] for c in conditions]), showers=np.stack(showers),
                    theta=np.array([c[1] for c in conditions]), phi=np.array([c[2] for c in conditions]),
                    particle=np.full(b - a, gun.pdg), event=np.arange(a, b),
                    points=PointClouds.from_list(clouds) if points else None)
    with ShowerWriter(Path(folder) / _part_name(a, b), "calofm", mesh,
                      {**metadata, "event_start": a, "event_stop": b}) as w:
        w.append(batch)
    return {"events": b - a, "seconds": time.perf_counter() - t0, "gev": float(batch.energy.sum() / GeV), **stats}


def _add_model_showers(fast_sim: ShowerModel, all_steps: list[np.ndarray], handoffs: list[np.ndarray],
                       phi: np.ndarray, seed: list[int]) -> tuple[list[np.ndarray], dict]:
    """Each event's steps with the model's showers of the particles it handed off (one model call
    for the whole part), and how many particles, how much energy and model time that was."""
    t0 = time.perf_counter()
    rows = np.concatenate(handoffs)
    event = np.repeat(np.arange(len(handoffs)), [len(h) for h in handoffs])
    deposits, owner = fast_sim.deposits(rows, phi[event], int(np.random.default_rng(seed).integers(2**31)))
    by_event = np.bincount(event[owner], minlength=len(all_steps))
    parts = np.split(deposits[np.argsort(event[owner], kind="stable")], np.cumsum(by_event)[:-1])
    steps = [np.concatenate([s, d]) for s, d in zip(all_steps, parts)]
    return steps, {"handed_off": len(rows), "handed_off_gev": float(rows[:, 1].sum() / GeV),
                   "model_seconds": time.perf_counter() - t0}


# --- orchestration ---------------------------------------------------------------------
def simulate(run: Run, out: Path, workers: int = 1, progress: bool = True, overwrite: bool = False) -> dict:
    """Simulate ``run`` into ``out`` (calofm format), resuming from ``OUT.parts`` if present; an ``out``
    that already holds this run (same settings) is left as it is, one that holds anything else is
    replaced only with ``overwrite``.

    Returns statistics: events, resumed (events found done), seconds (wall), worker_seconds
    (summed time inside workers, without start-up), gev (incident energy simulated now) and
    already_done (``out`` held the run); with a fast simulation also handed_off (particles given
    to the model now), handed_off_gev and model_seconds (summed time generating and placing their
    showers, part of worker_seconds).
    """
    if None in run.detector.sampling_fractions:
        raise CalofmError(f"detector {run.detector.name!r} has no sampling fraction; measure and record it with "
                          "`calofm detectors --measure --record FILE` (a GDML file: add --calo-sidecar YAML)")
    out = Path(out)
    settings = _full_settings(run)
    if _finished(out, settings):
        return _already_done(run)
    _check_replace(out, overwrite)
    folder = check_output(parts_dir(out), folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    _check_or_write_settings(folder, settings)
    for stale in folder.glob(".*.partial-*"):
        stale.unlink()
    events = run.events
    size = max(5, min(200, math.ceil(len(events) / (8 * workers))))
    todo = plan(events, _existing_parts(folder), size)
    metadata = _metadata(run, settings)
    stats = {"events": len(events), "resumed": len(events) - sum(b - a for a, b in todo), "seconds": 0.0,
             "worker_seconds": 0.0, "gev": 0.0, "already_done": False,
             **({"handed_off": 0, "handed_off_gev": 0.0, "model_seconds": 0.0} if run.fast_sim else {})}
    t0 = time.perf_counter()
    if todo:
        _run_parts(run, todo, folder, workers, metadata, stats, progress)
    stats["seconds"] = time.perf_counter() - t0
    _merge_parts(folder, out, events, metadata)
    shutil.rmtree(folder)
    return stats


def simulate_on_cluster(run: Run, out: Path, cluster: ClusterSpec, tasks: int | None = None, retries: int = 2,
                        progress: bool = True, overwrite: bool = False) -> dict:
    """Simulate ``run`` into ``out`` as ``tasks`` shards on a Dask cluster (:mod:`calofm.core.cluster`),
    one task each, then merge them: the same showers as :func:`simulate` of the same run.

    A shard resumes like any run, a finished one is not simulated again, and a re-run of the same
    command picks up where a failed one stopped (the shards live in ``OUT.shards/`` until merged).
    Returns :func:`simulate`'s statistics, summed over the shards simulated now.
    """
    if run.shard != (0, 1):
        raise InputError("--shard", "--cluster cuts the run into shards itself; drop --shard")
    out = Path(out)
    if _finished(out, _full_settings(run)):
        return _already_done(run)
    _check_replace(out, overwrite)
    k = tasks or task_count(cluster, run.n)
    if k > run.n:
        raise InputError("--cluster-tasks", f"{k} tasks for {run.n} events leave some empty")
    folder = check_output(out.with_name(out.name + ".shards"), folder=True)
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"shard-{i:05d}-of-{k:05d}.h5" for i in range(k)]
    t0 = time.perf_counter()
    results = run_tasks(cluster, _simulate_shard, [(replace(run, shard=(i, k)), str(f)) for i, f in enumerate(files)],
                        "simulating shards", folder / "logs", retries, progress)
    stats = {key: sum(r[key] for r in results) for key in results[0] if key != "already_done"}
    stats.update(seconds=time.perf_counter() - t0, already_done=False)
    merge_shards(files, out, progress=False)
    shutil.rmtree(folder)
    return stats


def _simulate_shard(run: Run, out: str) -> dict:
    """One cluster task: one shard, simulated by one Geant4 worker process of the Dask worker."""
    return simulate(run, Path(out), workers=1, progress=False, overwrite=True)


def _full_settings(run: Run) -> dict:
    """The settings a run's file records: the run's, calofm's version and the physics' provenance."""
    from calofm.simulate import g4env

    provenance = g4env.configure(run.physics.hadronic)  # builds the tables once, before the workers start
    return {**run.settings(), "calofm_version": __version__,
            "physics": run.physics.describe(provenance["g4data"] == "official", run.detector.active_materials),
            "geant4": f"geant4-pybind {_package_version('geant4_pybind')}", "g4data": provenance}


def _already_done(run: Run) -> dict:
    return {"events": len(run.events), "resumed": len(run.events), "seconds": 0.0, "worker_seconds": 0.0,
            "gev": 0.0, "already_done": True}


def _check_replace(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise InputError(out, "exists and holds another run (or another file); choose another output, or "
                              "pass --overwrite to replace it")


def _metadata(run: Run, settings: dict) -> dict:
    simulator = f"calofm simulate (Geant4 + fast simulation by {run.fast_sim.model})" if run.fast_sim \
        else "calofm simulate (Geant4)"
    meta = {"simulator": simulator, "settings": json.dumps(settings), "detector": run.detector.name,
            "detector_description": json.dumps(run.detector.to_dict()), "seed": run.seed,
            "energy_scale": "visible energy in active material / sampling fraction (of its section)"}
    if run.detector.sections:
        meta["sampling_fractions"] = json.dumps(settings["sampling_fraction"])  # by section
    else:
        meta["sampling_fraction"] = run.detector.sampling_fraction
    if run.points:
        meta["points_readout"] = json.dumps(run.detector.readout().to_dict())
    return meta


def _finished(out: Path, settings: dict) -> bool:
    """Whether ``out`` already holds this very run (same settings): then there is nothing to do."""
    if not out.is_file():
        return False
    try:
        with ShowerFile(out) as f:
            return json.loads(f.metadata.get("settings", "null")) == json.loads(json.dumps(settings))
    except (CalofmError, OSError, ValueError):
        return False


def _check_or_write_settings(folder: Path, settings: dict) -> None:
    path = folder / "run.json"
    if path.exists():
        try:
            previous = json.loads(path.read_text())
        except ValueError:
            raise InputError(path, f"is not readable JSON (cut short by an older calofm); delete {folder} "
                                   "to start afresh") from None
        if previous != json.loads(json.dumps(settings)):
            raise InputError(folder, "holds parts of a run with other settings; re-run the same command, "
                                     "or delete this folder to start afresh")
    else:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(settings, indent=1))


def _run_parts(run: Run, todo, folder: Path, workers: int, metadata: dict, stats: dict, progress: bool) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    logs = folder / "worker.log"
    columns = [TextColumn("[bold]simulating"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} showers/s"), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar, \
            ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=get_context("spawn"),
                                initializer=_init_worker,
                                initargs=(run.detector, run.gun.particle, run.physics, str(logs),
                                          run.fast_sim)) as pool:
        task = bar.add_task("", total=len(run.events), completed=stats["resumed"], rate="-")
        futures = [pool.submit(_simulate_part, run.gun, run.seed, a, b, run.points, str(folder), metadata)
                   for a, b in todo]
        start, done = time.perf_counter(), 0
        try:
            for future in as_completed(futures):
                part = future.result()
                done += part["events"]
                stats["worker_seconds"] += part.pop("seconds")
                for key, value in part.items():
                    if key != "events":
                        stats[key] += value
                bar.update(task, advance=part["events"], rate=f"{done / (time.perf_counter() - start):.1f}")
        except BrokenProcessPool:
            raise CalofmError(f"a Geant4 worker died ({last_exception(logs)}); the parts written so far are kept "
                              f"in {folder}: re-run the same command to resume") from None


def _merge_parts(folder: Path, out: Path, events: range, metadata: dict) -> None:
    ranges = _existing_parts(folder)
    covered = np.zeros(len(events), dtype=int)
    for a, b in ranges:
        covered[a - events.start:b - events.start] += 1
    if np.any(covered != 1):
        raise CalofmError(f"{folder}: parts do not cover events {events.start}..{events.stop - 1} exactly once")
    with ShowerFile(folder / _part_name(*ranges[0])) as first:
        mesh = first.readout
    metadata = {**metadata, **_handoff_totals([folder / _part_name(a, b) for a, b in ranges]),
                "event_start": events.start, "event_stop": events.stop}
    with ShowerWriter(out, "calofm", mesh, metadata) as w:
        for a, b in ranges:
            with ShowerFile(folder / _part_name(a, b)) as part:
                w.append(part.read())


def _handoff_totals(files: list[Path]) -> dict:
    """The particles (and GeV) the files' events handed to a fast simulation, summed; {} for a full one."""
    totals = {}
    for path in files:
        with ShowerFile(path) as f:
            for key in ("fast_sim_handed_off", "fast_sim_handed_off_gev"):
                if key in f.metadata:
                    totals[key] = totals.get(key, 0) + f.metadata[key]
    return totals


def _visible_fractions(gun: Gun, seed: int, n: int) -> list[float]:
    session = _session[0]
    conditions = [gun.event(seed, i) for i in range(n)]
    steps = session.simulate(_queue(conditions))
    return [float(s[:, 3].sum(dtype=np.float64) / c[0]) for s, c in zip(steps, conditions)]


def _primary_ends(gun: Gun, seed: int, n: int) -> list[tuple[float, str]]:
    session = _session[0]
    conditions = [gun.event(seed, i) for i in range(n)]
    return session.primary_ends(_queue(conditions))


def _in_worker(detector: Detector, gun: Gun, physics: Physics, job, *args):
    """Run ``job(gun, *args)`` in a fresh Geant4 worker process; a dead worker is a clear error."""
    from calofm.simulate import g4env

    g4env.configure(physics.hadronic)
    with tempfile.TemporaryDirectory() as tmp, \
            ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"), initializer=_init_worker,
                                initargs=(detector, gun.particle, physics, str(Path(tmp) / "worker.log"))) as pool:
        try:
            return pool.submit(job, gun, *args).result()
        except BrokenProcessPool:
            raise CalofmError(f"the Geant4 worker died ({last_exception(Path(tmp) / 'worker.log')})") from None


def measure_sampling_fraction(detector: Detector, n: int = 50, energy_gev: float = 10.0,
                              physics: Physics = Physics()) -> tuple[float, float]:
    """Mean and error of (visible energy in active material) / (incident energy) for ``n``
    electrons of ``energy_gev`` at normal incidence: the sampling fraction, leakage included."""
    gun = Gun("e-", Spectrum("fixed", energy_gev, energy_gev))
    fractions = np.array(_in_worker(detector, gun, physics, _visible_fractions, 12345, n))
    return float(fractions.mean()), float(fractions.std(ddof=1) / math.sqrt(n))


def measure_interaction_length(material: str, particle: str, energy_gev: float, n: int = 4000,
                               seed: int = 0) -> tuple[float, float]:
    """Mean free path (mm) and its error before the first inelastic interaction of ``particle`` in a
    block of ``material``, from ``n`` primaries with their secondaries killed (FTFP_BERT).

    The block is 30 nominal interaction lengths deep, so escapes are negligible and the mean
    interaction depth is the mean free path.
    """
    depth = 30 * material_properties(material).lambda_i_mm
    block = Detector(f"{material}-block", "interaction-length probe",
                     (Block((Slab(material, depth), Slab("G4_Si", 1.0, True))),), Mesh(), lateral_mm=depth,
                     sampling_fraction=1.0)
    gun = Gun(particle, Spectrum("fixed", energy_gev, energy_gev))
    ends = _in_worker(block, gun, Physics("ftfp_bert"), _primary_ends, seed, n)
    z = np.array([z for z, process in ends if process.endswith("Inelastic")])  # depth from the front face
    if len(z) < 0.99 * n:
        raise CalofmError(f"only {len(z)} of {n} {particle} interacted inelastically in {material}")
    return float(z.mean()), float(z.std(ddof=1) / math.sqrt(len(z)))


def merge_shards(inputs: list[Path], out: Path, progress: bool = True) -> int:
    """Merge shard files of one run into ``out``; refuses gaps, overlaps and mixed runs."""
    shards = []
    for path in inputs:
        with ShowerFile(path) as f:
            if "settings" not in f.metadata:
                raise InputError(path, "not a file written by `calofm simulate` (no run settings)")
            settings = json.loads(f.metadata["settings"])
            shards.append((int(f.metadata["event_start"]), int(f.metadata["event_stop"]), Path(path), settings))
    shards.sort(key=lambda s: s[0])
    reference = {k: v for k, v in shards[0][3].items() if k != "shard"}
    for a, b, path, settings in shards:
        if {k: v for k, v in settings.items() if k != "shard"} != reference:
            raise InputError(path, f"comes from a different run than {shards[0][2]} (settings differ)")
    expected, n = 0, reference["n_events"]
    for a, b, path, _ in shards:
        if a != expected:
            raise InputError(path, f"events {expected}..{a - 1} are missing" if a > expected else
                                   f"events {a}..{min(b, expected) - 1} appear twice")
        expected = b
    if expected != n:
        raise CalofmError(f"events {expected}..{n - 1} of the run's {n} are missing from the inputs")
    with ShowerFile(shards[0][2]) as first:
        mesh, metadata = first.readout, dict(first.metadata)
    whole = {**shards[0][3], "shard": [0, 1]}  # the merged file is the whole run, as one machine writes it
    metadata.update(event_start=0, event_stop=n, settings=json.dumps(whole),
                    **_handoff_totals([path for _, _, path, _ in shards]))
    with ShowerWriter(out, "calofm", mesh, metadata) as w:
        for _, _, path, _ in shards:
            with ShowerFile(path) as f:
                for batch in f.iter_chunks(progress=progress):
                    w.append(batch)
    return n


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"
