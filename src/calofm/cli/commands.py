"""What each ``calofm`` subcommand does; argument parsing lives in :mod:`calofm.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calofm.core.errors import CalofmError, InputError
from calofm.core.files import check_output
from calofm.core.units import GeV
from calofm.data import FORMATS, ShowerFile, open_showers
from calofm.data.convert import convert as convert_file
from calofm.geometry import (
    CALOCHALLENGE,
    CylindricalBinning,
    calochallenge_binning,
    ild_ecal,
)

FORMAT_NAMES = list(FORMATS)


def resolve_readout(spec: str | None):
    """A readout from a CaloChallenge dataset name, 'ild', or a binning XML path (None: from the file)."""
    if spec is None:
        return None
    if spec in CALOCHALLENGE:
        return calochallenge_binning(spec)
    if spec == "ild":
        return ild_ecal()
    if not Path(spec).is_file():
        raise InputError(spec, f"no such binning file (or a name among {', '.join(CALOCHALLENGE)}, ild)")
    return CylindricalBinning.from_xml(spec)


def summarise(f: ShowerFile) -> dict:
    """Stream the whole file once: validates every shower and collects the summary numbers."""
    e_min, e_max, ratio_sum, zero_sum, point_sum = np.inf, 0.0, 0.0, 0.0, 0
    for batch in f.iter_chunks(progress=len(f) > 50_000):
        e_min, e_max = min(e_min, batch.energy.min()), max(e_max, batch.energy.max())
        ratio_sum += float(np.sum(batch.visible_energy() / batch.energy))
        if batch.showers is not None:
            zero_sum += float(np.sum(batch.showers == 0) / f.readout.n_voxels)
        if batch.points is not None:
            point_sum += int(batch.points.counts.sum())
    n = max(len(f), 1)
    first = f.read(slice(0, 1)) if len(f) else None
    return {
        "file": str(f.path),
        "format": f.format.name,
        "showers": len(f),
        "binning": f"{f.readout.name or 'custom'}: {f.readout.describe()}",
        "n_voxels": f.readout.n_voxels,
        "incident_energy_GeV": [float(e_min / GeV), float(e_max / GeV)] if len(f) else None,
        "mean_visible_over_incident": ratio_sum / n,
        "mean_sparsity": zero_sum / n if first is not None and first.showers is not None else None,
        "mean_points_per_shower": point_sum / n if first is not None and first.points is not None else None,
        "conditions": [k for k in ("theta", "phi", "particle") if first is not None and getattr(first, k) is not None],
        "metadata": {k: (v.item() if hasattr(v, "item") else v) for k, v in f.metadata.items()},
        "valid": True,
    }


def inspect(args) -> int:
    with open_showers(args.file, resolve_readout(args.binning)) as f:
        try:
            summary = summarise(f)
        except CalofmError as exc:
            summary = {"file": str(args.file), "format": f.format.name, "showers": len(f), "valid": False,
                       "error": str(exc)}
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0 if summary["valid"] else 1


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    for key, value in summary.items():
        if key == "metadata":  # long JSON values are for --json; show their start
            value = "\n".join(f"{k} = {_shorten(str(v))}" for k, v in value.items()) or "-"
        elif key == "incident_energy_GeV" and value:
            value = f"{value[0]:.4g} .. {value[1]:.4g} GeV"
        elif isinstance(value, float):
            value = f"{value:.4g}"
        elif key == "valid":
            value = "[green]yes[/]" if value else "[red]no[/]"
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    Console().print(table)


def _shorten(text: str, width: int = 70) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def convert(args) -> int:
    target = resolve_readout(args.target_binning)
    check_output(args.output)
    report = convert_file(args.input, args.output, args.to, readout=resolve_readout(args.binning), target=target,
                          seed=args.seed, chunk_size=args.chunk_size, progress=True)
    notes = [what for what in ("projected", "smeared") if report[what]]
    print(f"wrote {report['showers']} showers to {args.output} ({report['format_in']} -> {report['format_out']}"
          f"{', ' + ' and '.join(notes) if notes else ''})")
    if report["dropped"]:
        print(f"note: the {args.to} format cannot hold: {', '.join(report['dropped'])}")
    return 0
