"""Convert shower files between formats, projecting or smearing when the target needs it."""

from __future__ import annotations

import numpy as np

from calofm.core.errors import InputError
from calofm.data.files import ShowerFile, ShowerWriter
from calofm.data.formats import get_format
from calofm.data.showers import PointClouds, Showers
from calofm.geometry import CylindricalBinning, project, smear


def convert(src, dst, to: str, readout=None, target=None, seed: int = 0, chunk_size: int = 10_000,
            progress: bool = False) -> dict:
    """Convert ``src`` to format ``to`` at ``dst``; returns a small report.

    ``readout`` overrides the input's binning; ``target`` is the output's (default: the input's, or
    for a points-only format the readout the input's points were clustered on).
    Point clouds are projected onto the target when the output needs voxels; voxels are smeared
    into points (CaloClouds II transfer study, appendix A, with ``seed``) when it needs points.
    """
    fmt = get_format(to)
    with ShowerFile(src, readout) as source:
        target = target or (source.readout if "showers" in fmt.stores else source.points_readout)
        report = {"showers": len(source), "format_in": source.format.name, "format_out": to,
                  "projected": False, "smeared": False}
        rng = np.random.default_rng(seed)
        with ShowerWriter(dst, to, target, {**source.metadata, "converted_from": str(src)}) as writer:
            for batch in source.iter_chunks(chunk_size, progress=progress):
                batch = _adapt(batch, source, target, fmt, rng, report)
                writer.append(batch)
        report["dropped"] = sorted(writer.dropped)
    return report


def _adapt(batch: Showers, source: ShowerFile, target, fmt, rng, report) -> Showers:
    rebinned = "showers" in fmt.stores and target != source.readout
    if batch.points is not None and (rebinned or ("showers" in fmt.requires and batch.showers is None)):
        batch = batch.with_fields(showers=project(target, batch.points.points, batch.points.offsets))
        report["projected"] = True
    elif rebinned:
        raise InputError(source.path, "has voxels only; re-binning voxels onto another readout is not supported")
    if "points" in fmt.requires and batch.points is None:
        if not isinstance(source.readout, CylindricalBinning):
            raise InputError(source.path, "smearing voxels into points needs a cylindrical binning")
        batch = batch.with_fields(points=PointClouds(*smear(source.readout, batch.showers, rng)))
        report["smeared"] = True
    return batch
