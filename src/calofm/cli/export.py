"""`calofm export`: a one-step model as ONNX or TorchScript for Geant4, sampler and decoding inside."""

from __future__ import annotations

import math
from pathlib import Path

from calofm.core.files import check_output
from calofm.export import FORMATS, export
from calofm.export.generator import __doc__ as CONTRACT
from calofm.geometry import readout_from_dict
from calofm.inference import load_model


def add_parsers(sub) -> None:
    import argparse

    p = sub.add_parser("export", help="export a one-step model as ONNX or TorchScript for Geant4",
                       description="Export a one-step student's generator with noise sampling, the step and the "
                                   "post-processing inside the graph, for Geant4 (Par04's CaloDiT-2 contract): a "
                                   "consistency-distilled EDM run, or a flow-distilled flow-matching run such as "
                                   "fm-1-fast (fm-1's student) or an adapted run's OUT/fast.",
                       epilog=CONTRACT, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True,
                   help="one-step run folder (or its model.safetensors), or a shipped model's name (fm-1-fast)")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="onnx (default) or torchscript")
    p.add_argument("--out", type=Path, required=True, help="output file (appears only once complete)")
    p.add_argument("--noise-input", action="store_true",
                   help="take the noise as a second input 'noise' of the model's state shape instead of drawing it "
                        "(parity checks)")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output(args.out)
    model = load_model(args.model)
    out = export(model, args.format, args.out, args.noise_input)
    n_voxels = math.prod(readout_from_dict(next(iter(model.describe["readouts"].values()))).shape)
    slots = (", ".join(model.conditions.detectors)
             + f" + {model.conditions.n_slots - len(model.conditions.detectors)} free")
    print(f"wrote {out} ({args.format}): input (B, {3 + model.conditions.n_slots}) = [E GeV, phi, theta, one-hot of "
          f"{slots}], output (B, {n_voxels}) MeV in Par04 order (r, phi, z inner)")
    return 0
