"""The ``calofm`` command. Each subcommand's ``--help`` explains what it does and its defaults."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from calofm import __version__
from calofm.cli import adapt, bench, commands, evaluate, export, simulate, train
from calofm.cli.options import Parser, non_negative_int, positive_int
from calofm.core.errors import CalofmError, CalofmWarning
from calofm.core.files import check_output, io_path, io_problem


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="calofm",
        description="Transferable generative calorimeter shower simulation. "
                    "Energies are MeV inside calofm; file formats convert at their boundary.",
    )
    parser.add_argument("--version", action="version", version=f"calofm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("inspect", help="describe a shower file and check that it is valid",
                       description="Print a shower file's format, number of showers, binning, incident-energy "
                                   "range, mean sparsity and conditions, after reading and validating every "
                                   "shower. Exits with status 1 when the file is not valid.")
    p.add_argument("file", type=Path, help="HDF5 shower file (calochallenge, lemurs, caloclouds or calofm format)")
    _binning_option(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=commands.inspect)

    p = sub.add_parser("convert", help="convert a shower file to another format",
                       description="Convert between the CaloChallenge, LEMURS, CaloClouds and calofm formats. "
                                   "Voxels are smeared into points (CaloClouds II transfer study, appendix A) "
                                   "when the target holds point clouds; "
                                   "points are projected onto the target binning when it holds "
                                   "voxels. The output appears only once complete.")
    p.add_argument("input", type=Path, help="input shower file")
    p.add_argument("output", type=Path, help="output file (written to a temporary name, then renamed)")
    p.add_argument("--to", required=True, choices=commands.FORMAT_NAMES, help="output format")
    _binning_option(p)
    p.add_argument("--target-binning", metavar="NAME|XML",
                   help="binning of the output when projecting points (default: the input's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed of the smearing (default 0)")
    p.add_argument("--chunk-size", type=positive_int, default=10_000, help="showers per streamed batch (default 10000)")
    p.set_defaults(run=commands.convert)

    simulate.add_parsers(sub)
    evaluate.add_parser(sub)
    train.add_parsers(sub)
    adapt.add_parsers(sub)
    export.add_parsers(sub)
    bench.add_parsers(sub)

    p = sub.add_parser("demo", help="the main job on built-in defaults: simulate, adapt fm-1, evaluate",
                       description="Run the whole product on built-in defaults, needing no files: Geant4 electrons "
                                   "(1-100 GeV) in par04-scipb, a detector the shipped foundation model fm-1 has "
                                   "never seen; adapt fm-1 to 100 of them with scratch (same architecture, fresh "
                                   "weights, same budget), full fine-tuning, BitFit and LoRA over two seeds; evaluate "
                                   "each against held-out Geant4 showers. Writes OUT/report.md (table 2 of the "
                                   "CaloClouds II transfer study with uncertainties, the gain over scratch, metric "
                                   "plots with the Geant4 floor, and Geant4 against the best adapted model and scratch "
                                   "for the energy ratio, profiles and cell energies) and OUT/metrics.json. Rerunning "
                                   "continues where a killed demo stopped. --pretrain runs the earlier job instead: "
                                   "pre-train a toy CaloDiT (and with --families dit,vit CaloDREAM++) on Geant4 "
                                   "showers of par04-siw and ild-w, then the same adaptation study.")
    p.add_argument("--out", type=Path, default=Path("demo-report"), help="output folder (default demo-report)")
    p.add_argument("--scale", default="cpu", choices=["cpu", "gpu", "smoke"],
                   help="cpu: about 10 min on 2 cores (default; --pretrain: about 20); gpu: a study worth reporting "
                        "(100 and 1000 target showers, 3 seeds); smoke: a one-minute wiring check")
    p.add_argument("--model", help="the pre-trained run to adapt: a shipped name or a run folder (default fm-1)")
    p.add_argument("--pretrain", action="store_true",
                   help="pre-train toy models on two Geant4 presets first instead of adapting --model")
    p.add_argument("--workers", type=positive_int, default=2, help="Geant4 worker processes (default 2)")
    p.add_argument("--device", default="auto", help="training device: auto, cpu, cuda (default auto)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--families", default="dit", help="with --pretrain: model families, comma-separated: dit "
                                                     "(CaloDiT-2), vit (CaloDREAM++); default dit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=demo)
    return parser


def _binning_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--binning", metavar="NAME|XML",
                   help="input binning: a CaloChallenge dataset name (dataset_1_photons, dataset_1_pions, "
                        "dataset_2, dataset_3), 'ild', or a binning XML file (default: from the file)")


def demo(args) -> int:
    from calofm.workflow.demo import FAMILIES, run_demo, run_pretrain_demo

    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        raise CalofmError(f"--families: unknown family {(unknown or [''])[0]!r}; known: {', '.join(FAMILIES)}")
    check_output(args.out, folder=True)
    if args.pretrain:
        if args.model:
            raise CalofmError("--model: the --pretrain job pre-trains its own models; leave --model out")
        run_pretrain_demo(args.out, args.scale, args.workers, args.device, args.seed, progress=not args.no_progress,
                          families=families)
    else:
        if families != ("dit",):
            raise CalofmError("--families: applies with --pretrain only (the main job adapts --model)")
        run_demo(args.out, args.scale, args.workers, args.device, args.seed, progress=not args.no_progress,
                 model=args.model)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", CalofmWarning)  # each says itself once where it arises
        warnings.showwarning = _show_warning
        try:
            return args.run(args) or 0
        except (CalofmError, OSError) as exc:
            if args.debug:
                raise
            print(f"calofm {args.command}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # outputs appear only once complete: nothing half-written is left
            if args.debug:
                raise
            print(f"calofm {args.command}: interrupted; outputs not yet complete were not written (simulate and "
                  "train resume when the same command is run again)", file=sys.stderr)
            return 130


def _one_line(exc: Exception) -> str:
    """A user's error as it is; a failed read or write (a full disk, a read-only folder) as FILE: REASON."""
    if isinstance(exc, CalofmError):
        return str(exc)
    return f"{io_path(exc) or 'a file'}: {io_problem(exc)}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """calofm's warnings (units that look wrong, a batch capped at the data) as one line each."""
    print(f"calofm: warning: {message}" if issubclass(category, CalofmWarning)
          else warnings.formatwarning(message, category, filename, lineno, line).rstrip(), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
