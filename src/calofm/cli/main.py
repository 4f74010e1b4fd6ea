"""The ``calofm`` command. Each subcommand's ``--help`` explains what it does and its defaults."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calofm import __version__
from calofm.cli import commands, evaluate, simulate, train
from calofm.core.errors import CalofmError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
                                   "Voxels are smeared into points (seed 000 appendix A) when the target holds "
                                   "point clouds; points are projected onto the target binning when it holds "
                                   "voxels. The output appears only once complete.")
    p.add_argument("input", type=Path, help="input shower file")
    p.add_argument("output", type=Path, help="output file (written to a temporary name, then renamed)")
    p.add_argument("--to", required=True, choices=commands.FORMAT_NAMES, help="output format")
    _binning_option(p)
    p.add_argument("--target-binning", metavar="NAME|XML",
                   help="binning of the output when projecting points (default: the input's)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the smearing (default 0)")
    p.add_argument("--chunk-size", type=int, default=10_000, help="showers per streamed batch (default 10000)")
    p.set_defaults(run=commands.convert)

    simulate.add_parsers(sub)
    evaluate.add_parser(sub)
    train.add_parsers(sub)

    p = sub.add_parser("demo", help="run the main job on a built-in default",
                       description="Run the longest chain calofm has on built-in defaults and print what each "
                                   "step did: Geant4 showers in par04-siw (the CaloChallenge dataset-2 geometry), "
                                   "inspection, conversion to CaloChallenge and LEMURS files, evaluation of a second "
                                   "independent Geant4 sample against the first (the floor every model is measured "
                                   "against), and photon point clouds in the ILD-like Si-W ECAL.")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    p.add_argument("--n", type=int, default=300, help="number of par04-siw showers (default 300)")
    p.add_argument("--workers", type=int, default=2, help="Geant4 worker processes (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(run=commands.demo)
    return parser


def _binning_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--binning", metavar="NAME|XML",
                   help="input binning: a CaloChallenge dataset name (dataset_1_photons, dataset_1_pions, "
                        "dataset_2, dataset_3), 'ild', or a binning XML file (default: from the file)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except CalofmError as exc:
        if args.debug:
            raise
        print(f"calofm {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
