"""``calofm simulate``, ``calofm detectors`` and ``calofm merge``."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from calofm.cli.options import (
    cluster_options,
    cluster_spec,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from calofm.core.errors import CalofmError, InputError
from calofm.core.files import check_output
from calofm.core.particles import PARTICLES
from calofm.inference.fastsim import DEFAULT_MIN_ENERGY_GEV
from calofm.simulate.detectors import get_detector, preset_names, record_sampling_fraction
from calofm.simulate.gun import Gun, parse_conditions
from calofm.simulate.physics import PHYSICS_LISTS, Physics, default_physics


def add_parsers(sub) -> None:
    p = sub.add_parser("simulate", help="simulate showers with Geant4 (offline)",
                       description="Simulate electromagnetic or hadronic showers with real Geant4, offline, in a "
                                   "preset or YAML detector and score them on the detector's universal cylindrical "
                                   "mesh (energies divided by the sampling fraction, as in the CaloChallenge), "
                                   "optionally also as pre-clustered point clouds. Runs one Geant4 per worker "
                                   "process; a killed run resumes when the same command is run again, and a "
                                   "finished one is not run twice. Output: calofm format (see `calofm convert`); "
                                   "the physics, its data and their formulas: docs/hadronic.md.")
    p.add_argument("--detector", required=True,
                   help=f"preset ({', '.join(preset_names())}), a detector YAML file, or a GDML file")
    p.add_argument("--calo-sidecar", metavar="YAML",
                   help="for a GDML detector: its name, active volumes (names or patterns; default: those "
                        "carrying a SensDet auxiliary), mesh and sampling_fraction, or its sections (name, "
                        "depth_mm, mesh, sampling_fraction each), and its frame (front_mm: the point of the front "
                        "face particles aim at; normal: the face's inward normal; beam: the axis theta is measured "
                        "from). Defaults: the file's stem, the universal mesh over the depth, the front face's "
                        "centre seen along +z, and a sampling fraction to measure with "
                        "`calofm detectors --measure --record FILE.gdml --calo-sidecar YAML`")
    p.add_argument("--particle", default="e-", choices=list(PARTICLES), help="particle (default e-)")
    p.add_argument("--physics", choices=PHYSICS_LISTS,
                   help="Geant4 physics: em (G4EmStandardPhysics_option1) or ftfp_bert (FTFP_BERT: the reference "
                        "list with the official data sets when G4LEDATA, G4PARTICLEXSDATA, ... or GEANT4_DATA_DIR "
                        "hold them, else its modular constructors on calofm's offline tables). Default: em for "
                        "e-, e+ and gamma, ftfp_bert for hadrons and muons")
    p.add_argument("--birks-kb", type=non_negative_float, metavar="MM_PER_MEV",
                   help="Birks' constant of the scintillator layers in mm/MeV (default: the material's, 0.07943 "
                        "for polystyrene as in Geant4; 0 turns the quenching off). Silicon and liquid argon are "
                        "not quenched")
    p.add_argument("--energy", default="loguniform:1:100",
                   help="incident energy in GeV: X, fixed:X, uniform:A:B or loguniform:A:B (default loguniform:1:100)")
    p.add_argument("--theta", default="1.5707963267948966",
                   help="polar angle to the beam axis in rad, same forms as --energy (default pi/2: normal incidence)")
    p.add_argument("--phi", default="0", help="azimuth around the beam axis in rad (default 0)")
    p.add_argument("--n", type=positive_int, required=True, help="number of showers in the whole run (all shards)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="run seed: the same seed gives the same showers (default 0)")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="worker processes, one Geant4 each (default 1; with --cluster, the cluster's workers instead)")
    p.add_argument("--shard", default="0/1", metavar="I/K", help="simulate only shard I of K (default 0/1: all)")
    p.add_argument("--points", action="store_true", help="also store point clouds pre-clustered on the readout "
                                                         "refined 6 times in each transverse direction")
    p.add_argument("--mesh", help="an alternative mesh of the detector (e.g. dataset_3 for par04-siw)")
    p.add_argument("--range-cut", type=positive_float, default=1.0,
                   help="Geant4 production cut in mm (default 1, the cut the presets' sampling fractions were "
                        "measured with)")
    p.add_argument("--out", help="output file (calofm format; default DETECTOR-PARTICLE-nN-sSEED[-shardIofK].h5 "
                                 "in the current directory)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output that holds another run (default: refuse)")
    cluster_options(p, "shards", "Each shard of the run is one task: `--shard` is set for you, and the shards "
                                  "are merged into OUT, with the same showers as a one-machine run of the same seed")
    fast = p.add_argument_group(
        "fast simulation (the model inside the Geant4 run; README 'Fast simulation inside Geant4')",
        "A particle of --fast-sim-particles that enters the calorimeter, or is born in it (a pi0 photon of a "
        "hadronic shower), with an energy in the range below, is killed and the model's shower for its energy, "
        "direction and entry point is deposited instead, on the model's mesh turned to its direction (as Par04 "
        "does). Everything else is Geant4. The output records the model and how many particles it took.")
    fast.add_argument("--fast-sim", metavar="MODEL",
                      help="a calofm run folder, a shipped model (fm-1, fm-1-fast) or an ONNX file of `calofm export`")
    fast.add_argument("--fast-sim-particles", default="e-,e+,gamma",
                      help="comma-separated particles handed to the model (default e-,e+,gamma)")
    fast.add_argument("--fast-sim-min-energy", type=non_negative_float, default=DEFAULT_MIN_ENERGY_GEV, metavar="GEV",
                      help=f"lowest energy handed to the model, GeV (default {DEFAULT_MIN_ENERGY_GEV:g})")
    fast.add_argument("--fast-sim-max-energy", type=positive_float, metavar="GEV",
                      help="highest energy handed to the model, GeV (default: the highest the model was trained on, "
                           "when it records it; above it Geant4 simulates)")
    fast.add_argument("--fast-sim-class", metavar="CLASS|P=CLASS,...",
                      help="the model class (detector slot) to generate with: one for all particles or one per "
                           "particle (default DETECTOR-PARTICLE, e.g. par04-siw-gamma; e+ falls back on DETECTOR-e-)")
    fast.add_argument("--fast-sim-section", metavar="NAME",
                      help="hand off only in this section of the detector (e.g. ecal of ild-ecal-hcal; default all)")
    fast.add_argument("--fast-sim-max-angle", type=positive_float, default=90.0, metavar="DEG",
                      help="hand off only particles within this angle of the layer normal (default 90: all)")
    fast.add_argument("--fast-sim-steps", type=positive_int, metavar="N",
                      help="sampling steps of a calofm model (default: the model's own)")
    p.set_defaults(run=simulate)

    p = sub.add_parser("detectors", help="list the detector presets",
                       description="List the detector presets with their depth in X0, effective Moliere radius, "
                                   "sampling fraction and scoring mesh (one per section, e.g. ECAL + HCAL). "
                                   "--measure re-measures sampling fractions with Geant4 (50 electrons of 10 GeV "
                                   "each, on each section alone).")
    p.add_argument("names", nargs="*", help="presets or YAML files (default: all presets)")
    p.add_argument("--measure", action="store_true", help="measure the sampling fraction with Geant4")
    p.add_argument("--record", action="store_true",
                   help="with --measure: write the measured sampling fraction into the detector's YAML file, or "
                        "into the --calo-sidecar of a GDML file (created if missing), keeping the rest of the file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--calo-sidecar", metavar="YAML", help="the sidecar YAML of a GDML file named (see calofm simulate)")
    p.add_argument("--gdml", action="store_true",
                   help="write each named detector as NAME.gdml in the current directory (the same world, boxes, "
                        "NIST materials and placements Geant4 builds from the preset, active volumes marked with a "
                        "SensDet auxiliary) and NAME-gdml.yaml, the detector YAML that simulates it: the preset's "
                        "showers, bit for bit. Naming a .gdml file instead reads it with Geant4 (validation off, "
                        "in a child process) and prints what calofm finds in it: world, volumes, materials, "
                        "sensitive volumes, extent")
    p.set_defaults(run=detectors)

    p = sub.add_parser("merge", help="merge the shard files of one simulation run",
                       description="Merge the outputs of `calofm simulate --shard i/K` into one file, checking "
                                   "that they come from the same run and cover every event exactly once.")
    p.add_argument("output", help="merged output file")
    p.add_argument("inputs", nargs="+", help="shard files")
    p.set_defaults(run=merge)


def _shard(spec: str) -> tuple[int, int]:
    try:
        i, k = (int(v) for v in spec.split("/"))
    except ValueError:
        raise InputError("--shard", f"{spec!r} is not of the form I/K") from None
    if not 0 <= i < k:
        raise InputError("--shard", f"{spec!r}: need 0 <= I < K")
    return i, k


def simulate(args) -> int:

    from calofm.simulate.runner import Run
    from calofm.simulate.runner import simulate as run_simulation

    try:
        gun = Gun(args.particle, *parse_conditions(args.energy, args.theta, args.phi))
    except ValueError as exc:
        raise CalofmError(str(exc)) from None
    detector = get_detector(args.detector, args.calo_sidecar)
    try:
        detector = detector.with_mesh(args.mesh)
    except KeyError as exc:
        raise InputError(args.detector, exc.args[0]) from None
    try:
        physics = Physics(args.physics or default_physics(args.particle), args.birks_kb, args.range_cut)
    except ValueError as exc:
        raise InputError("physics", str(exc)) from None
    fast_sim = _fast_sim(args, detector) if args.fast_sim else None
    try:
        run = Run(detector, gun, args.n, args.seed, _shard(args.shard), args.points, physics, fast_sim)
    except ValueError as exc:
        raise InputError("--points" if "point clouds" in str(exc) else "--shard", str(exc)) from None
    if args.out is None:
        shard = "" if run.shard == (0, 1) else f"-shard{run.shard[0]}of{run.shard[1]}"
        args.out = f"{detector.name}-{args.particle}-n{args.n}-s{args.seed}{shard}.h5"
    if args.cluster:
        from calofm.simulate.runner import simulate_on_cluster

        stats = simulate_on_cluster(run, check_output(args.out), cluster_spec(args), args.cluster_tasks,
                                    args.retries, overwrite=args.overwrite)
    else:
        stats = run_simulation(run, check_output(args.out), workers=args.workers, overwrite=args.overwrite)
    if stats["already_done"]:
        print(f"{args.out} already holds these {stats['events']} showers (same settings): nothing to do")
        return 0
    new = stats["events"] - stats["resumed"]
    rate = new / max(stats["seconds"], 1e-9)
    print(f"wrote {stats['events']} showers to {args.out} ({stats['resumed']} from an earlier run; "
          f"{rate:.1f} showers/s, {1e3 * stats['worker_seconds'] / max(new, 1):.1f} ms per event per core, "
          f"{1e3 * stats['worker_seconds'] / max(stats['gev'], 1e-9):.2f} ms per GeV per core)")
    if fast_sim and new:
        print(f"fast simulation: {stats['handed_off']} particles ({stats['handed_off_gev']:.1f} GeV of the "
              f"{stats['gev']:.1f} GeV incident) went to {args.fast_sim}; the model took "
              f"{1e3 * stats['model_seconds'] / new:.1f} ms per event per core")
    return 0


def _fast_sim(args, detector):
    from calofm.inference.fastsim import FastSim

    particles = tuple(p.strip() for p in args.fast_sim_particles.split(",") if p.strip())
    return FastSim.open(args.fast_sim, detector, particles, args.fast_sim_class, args.fast_sim_min_energy,
                        args.fast_sim_max_energy, args.fast_sim_section, args.fast_sim_max_angle, args.fast_sim_steps)


def _sidecar(name: str, args) -> str | None:
    """The sidecar to read for detector ``name``: none but for a GDML file, nor one that --record creates."""
    if not name.endswith(".gdml") or (args.record and args.calo_sidecar and not Path(args.calo_sidecar).exists()):
        return None
    return args.calo_sidecar


def _record_target(name: str, detector, args) -> str:
    """The file --record writes ``detector``'s measured sampling fraction into; refused before measuring."""
    if detector.sections:
        raise InputError(name, "has sections: write each section's measured value into its "
                               "sections[i].sampling_fraction yourself")
    if name.endswith(".gdml"):
        if not args.calo_sidecar:
            raise InputError(name, "--record writes into the GDML file's sidecar: give --calo-sidecar FILE "
                                   "(created if missing)")
        return args.calo_sidecar
    if not Path(name).is_file():
        raise InputError(name, "is a preset: its sampling fraction is part of calofm; record your own in a "
                               "copy of its YAML file")
    return name


def detectors(args) -> int:
    from calofm.simulate.gdml import read_gdml, write_gdml, write_sidecar
    from calofm.simulate.runner import measure_sampling_fraction

    if args.gdml:
        for name in args.names or preset_names():
            det = get_detector(name)
            gdml = write_gdml(det, check_output(f"{det.name}.gdml"))
            print(f"wrote {gdml} and {write_sidecar(det, gdml, check_output(f'{det.name}-gdml.yaml'))} "
                  f"(calofm simulate --detector {det.name}-gdml.yaml)")
        return 0
    names = args.names or preset_names()
    if args.record and not args.measure:
        raise InputError("--record", "records what --measure measures: give both")
    named = [get_detector(name, _sidecar(name, args)) for name in names]
    targets = [_record_target(name, det, args) for name, det in zip(names, named)] if args.record else []
    measured = {}  # name -> (mean, error) of each section (of the whole detector without sections)
    if args.measure:
        for det in named:
            parts = [det.section_detector(i) for i in range(len(det.sections))] or [det]
            measured[det.name] = [measure_sampling_fraction(replace(p, sampling_fraction=1.0)) for p in parts]
    for det, target in zip(named, targets):
        record_sampling_fraction(target, *measured[det.name][0])
        print(f"recorded sampling_fraction {measured[det.name][0][0]:.5f} of {det.name} in {target}",
              file=sys.stderr)
    shown = {det.name: " + ".join(f"{mean:.5f} +- {err:.5f}" for mean, err in measured[det.name])
             for det in named if det.name in measured}
    gdml = [det for det in named if det.gdml]
    if gdml:  # what Geant4 reads from each file
        print(json.dumps([{"name": det.name, **read_gdml(det.gdml.path).describe(det.gdml),
                           "sampling_fraction": dict(zip([s.name for s in det.sections], det.sampling_fractions))
                           if det.sections else det.sampling_fraction,
                           **({"measured_sampling_fraction": shown[det.name]} if det.name in shown else {})}
                          for det in gdml], indent=2))
    rows = []
    for det in named:
        if det.gdml:
            continue
        parts = [det.section_detector(i) for i in range(len(det.sections))] or [det]
        row = {"name": det.name, "depth_mm": det.depth_mm, "depth_X0": det.depth_x0, "depth_lambda": det.depth_lambda,
               "moliere_mm": det.moliere_mm,
               "sampling_fraction": list(det.sampling_fractions), "active_layers": len(det.active_layers),
               "mesh": " + ".join(f"{p.mesh.n_r}x{p.mesh.n_alpha}x{p.mesh.n_z}, {p.mesh.dr:g} x {p.mesh.dz:.3g} mm"
                                  for p in parts),
               "readout": "the mesh" if det.cell_mm is None else f"{det.cell_mm:g} mm cells",
               "description": det.description}
        if det.name in shown:
            row["measured_sampling_fraction"] = shown[det.name]
        rows.append(row)
    if not rows:
        return 0
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Column, Table

    # a detector's name is what the user types next: never cut it; piped, every row stays one line
    table = Table(Column("detector", no_wrap=True, min_width=max(len(r["name"]) for r in rows)),
                  *(Column(h, overflow="fold") for h in ("depth", "X0", "lambda_I", "R_M mm", "sampling fraction",
                                                          "mesh r x alpha x z, dr x dz", "points on")))
    for r in rows:
        sf = r.get("measured_sampling_fraction") or " + ".join(f"{v:.4f}" if v else "unmeasured"
                                                               for v in r["sampling_fraction"])
        table.add_row(r["name"], f"{r['depth_mm']:.1f} mm", f"{r['depth_X0']:.1f}", f"{r['depth_lambda']:.2f}",
                      f"{r['moliere_mm']:.1f}", sf, r["mesh"], r["readout"])
    Console(width=None if sys.stdout.isatty() else 10_000).print(table)
    return 0


def merge(args) -> int:
    from pathlib import Path

    from calofm.simulate.runner import merge_shards

    n = merge_shards([Path(p) for p in args.inputs], check_output(args.output))
    print(f"merged {len(args.inputs)} shards: {n} showers in {args.output}")
    return 0
