"""``calofm evaluate``."""

from __future__ import annotations

import math
from pathlib import Path

from calofm.cli.options import non_negative_float, non_negative_int, positive_int
from calofm.core.errors import InputError


def add_parser(sub) -> None:
    from calofm.evaluate.suite import CLASSIFIERS, METRICS

    p = sub.add_parser("evaluate", help="compare generated showers with Geant4 (CaloChallenge metrics)",
                       description="Compare a generated shower file with a Geant4 reference using the "
                                   "CaloChallenge definitions: high-level feature histograms with ratio panels "
                                   "and separation powers; Wasserstein, KL and the six-observable geometric mean "
                                   "(the CaloClouds II transfer study) with bootstrap errors; "
                                   "classifier AUC/JSD; FPD/KPD (JetNet; FPD on the CaloChallenge features only from "
                                   "50 000 showers, where it was measured to mean something, FPD on seven global "
                                   "features always); "
                                   "precision/recall/density/coverage; all again in slices of incident energy "
                                   "(and theta). The reference is split in halves to report the Geant4-vs-Geant4 "
                                   "floor beside the model. Writes DIR/metrics.json, DIR/report.md, DIR/plots/. "
                                   "--protocol calochallenge instead computes the CaloChallenge 2022 reference "
                                   "evaluation's own numbers (its histogram bins and separation powers, FPD/KPD, "
                                   "PRDC, classifiers) against the whole reference file, written as its text files.")
    p.add_argument("--generated", required=True, help="generated showers (any calofm-readable format)")
    p.add_argument("--reference", required=True, help="Geant4 reference showers on the same binning")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--metrics", default=",".join(METRICS), help=f"comma list among {', '.join(METRICS)} (default all)")
    p.add_argument("--classifiers", default="high,low",
                   help=f"comma list among {', '.join(CLASSIFIERS)} (default high,low; cnn is GPU-sized)")
    p.add_argument("--epochs", type=positive_int, default=50,
                   help="classifier epochs (default 50, the CaloChallenge protocol)")
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="classifier trainings with seeds seed..seed+n-1 (mean +- std)")
    p.add_argument("--device", default="cpu", help="torch device for the classifiers (cpu, cuda)")
    p.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                   help="classifier forward passes: float32 (default) or bfloat16 autocast, about 6x faster on "
                        "CPUs with AMX and on GPUs; AUCs agree within the spread of trainings "
                        "(docs/evaluation-calochallenge.md)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of splits, bootstraps and trainings (default 0)")
    p.add_argument("--bootstrap", type=positive_int, default=20, help="bootstrap resamplings per distance (default 20)")
    p.add_argument("--threshold", type=non_negative_float, default=0.0,
                   help="zero voxels below this energy in MeV first (e.g. 0.01515 for datasets 2/3; default 0)")
    p.add_argument("--energy-bins", help="incident-energy slice edges in GeV, comma separated (default: decades)")
    p.add_argument("--theta-bins",
                   help="theta slice edges in rad, comma separated (default: 3 equal bins if theta varies)")
    p.add_argument("--max-voxel-showers", type=positive_int,
                   help="showers per sample kept whole for low-level classifiers and PRDC "
                        "(default 20000, fewer for large meshes: 7400 for dataset 3)")
    p.add_argument("--binning", help="binning of both files when they do not carry one (dataset name or XML)")
    p.add_argument("--protocol", choices=("calofm", "calochallenge"), default="calofm",
                   help="calofm (default): the floor beside the model, bootstrap errors, slices; calochallenge: the "
                        "CaloChallenge reference evaluation's numbers, as its leaderboard reports them "
                        "(docs/evaluation-calochallenge.md)")
    p.add_argument("--leaderboard", action="store_true",
                   help="calochallenge protocol: print the published CaloChallenge 2022 table of the dataset with "
                        "this model placed by FPD, and write it to OUT/leaderboard_<dataset>.md")
    p.add_argument("--parts", default="hist,fpd,prdc,cls-low,cls-high",
                   help="calochallenge protocol: comma list among hist, fpd, prdc, cls-low, cls-high, cls-low-normed "
                        "(the reference's modes; default all but cls-low-normed, what the published tables report)")
    p.set_defaults(run=run)


def _edges(spec: str | None, option: str, scale: float = 1.0) -> list[float] | None:
    """Slice edges: at least two finite numbers, increasing."""
    if spec is None:
        return None
    try:
        edges = [float(v) * scale for v in spec.split(",")]
    except ValueError:
        raise InputError(option, f"{spec!r} is not a comma-separated list of numbers") from None
    if len(edges) < 2 or not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise InputError(option, f"{spec!r}: give at least two finite edges, increasing")
    return edges


def _choices(spec: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    chosen = tuple(v.strip() for v in spec.split(",") if v.strip())
    unknown = [v for v in chosen if v not in allowed]
    if unknown:
        raise InputError(option, f"unknown {', '.join(unknown)}; choose among {', '.join(allowed)}")
    return chosen


def run(args) -> int:
    from calofm.cli.commands import resolve_readout

    if args.protocol == "calochallenge":
        return run_calochallenge(args, resolve_readout(args.binning))
    from calofm.evaluate.report import evaluate
    from calofm.evaluate.suite import CLASSIFIERS, METRICS, Settings

    settings = Settings(metrics=_choices(args.metrics, METRICS, "--metrics"),
                        classifiers=_choices(args.classifiers, CLASSIFIERS, "--classifiers"),
                        epochs=args.epochs, repeats=args.repeats, device=args.device, seed=args.seed,
                        n_bootstrap=args.bootstrap, progress=True, classifier_kwargs={"precision": args.precision})
    metrics = evaluate(args.generated, args.reference, args.out, settings, binning=resolve_readout(args.binning),
                       threshold=args.threshold, energy_bins=_edges(args.energy_bins, "--energy-bins", 1e3),
                       theta_bins=_edges(args.theta_bins, "--theta-bins"), max_voxel_rows=args.max_voxel_showers)
    model = metrics["comparisons"]["model"]
    floor = metrics["comparisons"]["geant4"] or {}
    print(f"wrote {args.out}/metrics.json and {args.out}/report.md")
    for key, label, scale in (("geometric_mean_wasserstein", "geometric mean W1", 1), ("kpd", "KPD x1e3", 1e3)):
        if key in model:
            g = floor.get(key, {}).get("value")
            print(f"  {label:20s} model {model[key]['value'] * scale:.4g}"
                  + (f"   Geant4 floor {g * scale:.4g}" if g is not None else ""))
    for key, label in (("fpd", "FPD, CaloChallenge features"), ("fpd_global", "FPD, 7 global features")):
        if key in model.get("fpd_evidence", {}):
            print(f"  {label}: {model['fpd_evidence'][key]['why']}")
    for name, result in model.get("classifier", {}).items():
        if "auc" in result:
            g = floor.get("classifier", {}).get(name, {}).get("auc", {}).get("value")
            print(f"  AUC {name:16s} model {result['auc']['value']:.3f}"
                  + (f"   Geant4 floor {g:.3f}" if g is not None else ""))
    return 0


def run_calochallenge(args, binning) -> int:
    from calofm.core.files import atomic_path
    from calofm.evaluate.calochallenge import PARTS, ClassifierSettings, evaluate_challenge, leaderboard

    classifier = ClassifierSettings(epochs=args.epochs, repeats=args.repeats, seed=args.seed, device=args.device,
                                    precision=args.precision, progress=True)
    metrics = evaluate_challenge(args.generated, args.reference, args.out, _choices(args.parts, PARTS, "--parts"),
                                 binning=binning, classifier=classifier)
    print(f"wrote {args.out}/metrics.json and the reference's text files (CaloChallenge protocol, dataset "
          f"{metrics['dataset']}, {metrics['n_generated']} generated against all {metrics['n_reference']} reference "
          "showers)")
    for key in ("fpd", "kpd"):
        if key in metrics:
            print(f"  {key.upper()} x1e3 {metrics[key][0] * 1e3:.4f} +- {metrics[key][1] * 1e3:.4f}")
    for mode, result in metrics.get("classifiers", {}).items():
        print(f"  {mode:15s} AUC {result['auc']:.4f}   JSD {result['jsd']:.4f}")
    if args.leaderboard:
        try:
            table = leaderboard(metrics, name=Path(args.generated).name)
        except ValueError as exc:
            raise InputError(args.generated, str(exc)) from None
        with atomic_path(Path(args.out) / f"leaderboard_{metrics['dataset']}.md") as tmp:
            tmp.write_text(table)
        print(table)
    return 0
