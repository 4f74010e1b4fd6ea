"""`calofm export`: a one-step model as ONNX or TorchScript for Geant4, sampler and decoding inside."""

from __future__ import annotations

import json
import math
from pathlib import Path

from calofm.core.errors import CalofmError
from calofm.core.files import check_output
from calofm.export import CONTRACTS, FORMATS, ExportGraph, export
from calofm.export.generator import __doc__ as CONTRACT
from calofm.geometry import readout_from_dict
from calofm.inference import load_model


def add_parsers(sub) -> None:
    import argparse

    p = sub.add_parser("export", help="export a one-step model as ONNX or TorchScript for Geant4",
                       description="Export a one-step student's generator with the step and the post-processing "
                                   "inside the graph, for Geant4, in calofm's contract or in the one Geant4's Par04 "
                                   "example loads (--contract par04): a consistency-distilled EDM run, or a "
                                   "flow-distilled flow-matching run such as fm-1-fast (fm-1's student) or an "
                                   "adapted run's OUT/fast.",
                       epilog=CONTRACT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True,
                   help="one-step run folder (or its model.safetensors), or a shipped model's name (fm-1-fast)")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="onnx (default) or torchscript")
    p.add_argument("--out", type=Path, required=True, help="output file (appears only once complete)")
    p.add_argument("--contract", default="calofm", choices=CONTRACTS,
                   help="calofm (default): [E GeV, phi, theta, one-hot] in, MeV out, noise drawn inside; par04: "
                        "what Geant4's Par04 example feeds and expects, [latent, E / 1024 TeV, theta deg / 90, "
                        "one-hot] in, fractions of the incident energy out (see below)")
    p.add_argument("--noise-input", action="store_true",
                   help="calofm contract: take the noise as a second input 'noise' of the model's state shape "
                        "instead of drawing it (parity checks)")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.noise_input and args.contract == "par04":
        raise CalofmError("--noise-input: the par04 contract takes the noise in its input already (the latent vector)")
    check_output(args.out)
    model = load_model(args.model)
    out = export(model, args.format, args.out, args.noise_input, args.contract)
    readout = readout_from_dict(next(iter(model.describe["readouts"].values())))
    meta = ExportGraph(model, contract=args.contract).metadata()
    print(f"wrote {out} ({args.format}, {args.contract} contract): input {meta['input']}, one-hot slots "
          f"{', '.join(json.loads(meta['one_hot_slots']))}; output (B, {math.prod(readout.shape)}) {meta['unit']} in "
          "Par04 order (r, phi, z inner)")
    if args.contract == "par04":
        n_z, n_a, n_r = readout.shape
        print("Par04 macro settings (the one-hot is written in Par04InferenceSetup::GetEnergies):\n"
              f"  /Par04/inference/setSizeLatentVector {meta['size_latent_vector']}\n"
              f"  /Par04/inference/setSizeConditionVector {meta['size_condition_vector']}\n"
              f"  /Par04/inference/setModelPathName {out}\n"
              f"  /Par04/inference/setNbOfRhoCells {n_r}\n  /Par04/inference/setNbOfPhiCells {n_a}\n"
              f"  /Par04/inference/setNbOfZCells {n_z}")
    return 0
