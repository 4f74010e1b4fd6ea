"""The shower file formats calofm reads and writes, each converting units at its boundary.

* ``calochallenge``: ``incident_energies`` (N, 1), ``showers`` (N, n_voxels) in z-alpha-r order; MeV.
* ``lemurs``: ``showers`` (N, n_r, n_phi, n_z), ``incident_energy``, ``incident_theta``,
  ``incident_phi``; showers in MeV, energy in GeV, angles in rad.
* ``caloclouds``: ``events`` (N, 4, max_points) = [x, y = layer, z, E] zero-padded, ``energy`` (N, 1);
  mm, E and energy in GeV.
* ``calofm``: ``energy``, ``theta``, ``phi``, ``particle``, ``event``, ``showers``, ragged
  ``points/{data,offsets}``; MeV, mm, rad.

Every file calofm writes also carries attributes: ``readout`` (the binning as JSON) and the
provenance given to the writer (simulator, data versions, seed, ...). Other tools ignore them.

CaloClouds points use the ILD convention (y is the layer, x and z transverse); calofm points
are [x, y transverse, z depth]: the layer index maps to the layer centre of the readout.
"""

from __future__ import annotations

import json

import h5py
import numpy as np

from calofm.core.errors import InputError
from calofm.core.units import GeV
from calofm.data.showers import OPTIONAL_ARRAYS, PointClouds, Showers
from calofm.geometry import (
    CylindricalBinning,
    binning_for_n_voxels,
    calochallenge_binning,
    ild_ecal,
    readout_from_dict,
    reorder,
)

FORMAT_VERSION = 1
# attributes a format owns (not provenance): never copied from one file to another
FORMAT_ATTRS = frozenset({"readout", "calofm_format_version", "energy_unit", "length_unit", "angle_unit"})


def append_rows(f: h5py.File | h5py.Group, name: str, rows: np.ndarray, compress: bool = True) -> None:
    """Append ``rows`` along axis 0 of dataset ``name``, creating it (resizable on every axis) on first use."""
    rows = np.asarray(rows)
    if name not in f:
        f.create_dataset(name, data=rows, maxshape=(None,) * rows.ndim, chunks=True,
                         compression="gzip" if compress else None)
        return
    ds = f[name]
    if ds.shape[1:] != rows.shape[1:]:
        raise ValueError(f"cannot append rows of shape {rows.shape[1:]} to {name} of shape {ds.shape[1:]}")
    n = ds.shape[0]
    ds.resize(n + len(rows), axis=0)
    ds[n:] = rows


def require(f: h5py.File, path: str, *names: str) -> None:
    for name in names:
        if name not in f:
            raise InputError(path, f"missing dataset '{name}' (holds: {', '.join(sorted(f.keys())) or 'nothing'})")


def _check_regular(path, readout, shape=None):
    if not isinstance(readout, CylindricalBinning) or not readout.is_regular:
        raise InputError(path, f"needs a regular cylindrical mesh, got {readout.describe()}")
    if shape is not None and readout.shape != shape:
        raise InputError(path, f"mesh {readout.shape} (z, alpha, r) does not match the showers' {shape}")


class ShowerFormat:
    """One file format: how to recognise it, open it, read a slice and append a batch."""

    name: str = ""
    stores = frozenset({"energy"})  # Showers fields the format can hold
    requires = frozenset({"energy"})  # Showers fields it cannot do without

    def sniff(self, f: h5py.File) -> bool:
        raise NotImplementedError

    def open(self, f: h5py.File, path, readout) -> tuple[int, object]:
        """Check the file and return (number of showers, readout)."""
        raise NotImplementedError

    def read(self, f: h5py.File, index, readout) -> Showers:
        raise NotImplementedError

    def append(self, f: h5py.File, showers: Showers, readout) -> None:
        raise NotImplementedError

    def check_readout(self, path, readout) -> None:
        """Raise :class:`InputError` if this format cannot describe showers on ``readout``."""

    def dropped(self, showers: Showers) -> list[str]:
        """Fields of ``showers`` this format cannot store."""
        return [name for name in OPTIONAL_ARRAYS + ("points",)
                if getattr(showers, name) is not None and name not in self.stores]


class CaloChallengeFormat(ShowerFormat):
    """CaloChallenge HDF5; incidence angles, when known, go in extra ``incident_theta`` and
    ``incident_phi`` datasets (LEMURS names, rad) that CaloChallenge readers ignore."""

    name = "calochallenge"
    stores = frozenset({"energy", "showers", "theta", "phi"})
    requires = frozenset({"energy", "showers"})
    ANGLES = {"theta": "incident_theta", "phi": "incident_phi"}

    def sniff(self, f):
        return "incident_energies" in f or ("showers" in f and f["showers"].ndim == 2 and "energy" not in f)

    def open(self, f, path, readout):
        require(f, path, "incident_energies", "showers")
        if f["showers"].ndim != 2:
            raise InputError(path, f"'showers' has shape {f['showers'].shape}, expected (N, n_voxels)")
        n, n_vox = f["showers"].shape
        if f["incident_energies"].shape[0] != n:
            raise InputError(path, f"{f['incident_energies'].shape[0]} incident energies for {n} showers")
        if readout is None:
            readout = binning_for_n_voxels(n_vox)
            if readout is None:
                raise InputError(path, f"{n_vox} voxels match no CaloChallenge binning; "
                                       "pass the binning (--binning XML)")
        if readout.n_voxels != n_vox:
            raise InputError(path, f"showers have {n_vox} voxels but binning {readout.name!r} has {readout.n_voxels}")
        for key in self.ANGLES.values():
            if key in f and f[key].shape[0] != n:
                raise InputError(path, f"'{key}' has {f[key].shape[0]} rows for {n} showers")
        return n, readout

    def read(self, f, index, readout):
        angles = {name: f[key][index].reshape(-1).astype(np.float64) for name, key in self.ANGLES.items() if key in f}
        return Showers(energy=f["incident_energies"][index].reshape(-1).astype(np.float64),
                       showers=f["showers"][index].astype(np.float32, copy=False), **angles)

    def append(self, f, showers, readout):
        for name, key in self.ANGLES.items():
            if "incident_energies" in f and (getattr(showers, name) is None) == (key in f):
                raise ValueError(f"'{name}' must be given in every batch or in none")
        append_rows(f, "incident_energies", showers.energy.reshape(-1, 1).astype(np.float64))
        append_rows(f, "showers", showers.showers.astype(np.float32, copy=False))
        for name, key in self.ANGLES.items():
            if getattr(showers, name) is not None:
                append_rows(f, key, getattr(showers, name).astype(np.float64))


class LemursFormat(ShowerFormat):
    name = "lemurs"
    stores = frozenset({"energy", "showers", "theta", "phi"})
    requires = frozenset({"energy", "showers"})
    _by_shape = {(45, 16, 9): "dataset_2", (45, 50, 18): "dataset_3"}

    def sniff(self, f):
        return "incident_energy" in f or ("showers" in f and f["showers"].ndim == 4)

    def open(self, f, path, readout):
        require(f, path, "showers", "incident_energy", "incident_theta", "incident_phi")
        shape = f["showers"].shape
        if len(shape) != 4:
            raise InputError(path, f"'showers' has shape {shape}, expected (N, n_r, n_phi, n_z)")
        for key in ("incident_energy", "incident_theta", "incident_phi"):
            if f[key].shape[0] != shape[0]:
                raise InputError(path, f"'{key}' has {f[key].shape[0]} entries for {shape[0]} showers")
        zar = (shape[3], shape[2], shape[1])
        if readout is None:
            if zar not in self._by_shape:
                raise InputError(path, f"no known mesh of shape {zar} (z, alpha, r); pass the binning (--binning XML)")
            readout = calochallenge_binning(self._by_shape[zar])
        _check_regular(path, readout, zar)
        return shape[0], readout

    def read(self, f, index, readout):
        showers = f["showers"][index].astype(np.float32, copy=False)
        return Showers(
            energy=f["incident_energy"][index].reshape(-1) * GeV,
            showers=reorder(showers, "lemurs", "calochallenge", readout.shape),
            theta=f["incident_theta"][index].reshape(-1).astype(np.float64),
            phi=f["incident_phi"][index].reshape(-1).astype(np.float64),
        )

    def check_readout(self, path, readout):
        _check_regular(path, readout)

    def append(self, f, showers, readout):
        zeros = np.zeros(len(showers))
        append_rows(f, "showers", reorder(showers.showers, "calochallenge", "lemurs", readout.shape).astype(np.float32))
        append_rows(f, "incident_energy", showers.energy / GeV)
        append_rows(f, "incident_theta", zeros if showers.theta is None else showers.theta)
        append_rows(f, "incident_phi", zeros if showers.phi is None else showers.phi)


class CaloCloudsFormat(ShowerFormat):
    name = "caloclouds"
    stores = requires = frozenset({"energy", "points"})

    def sniff(self, f):
        return "events" in f

    def open(self, f, path, readout):
        require(f, path, "events", "energy")
        shape = f["events"].shape
        if len(shape) != 3 or shape[1] != 4:
            raise InputError(path, f"'events' has shape {shape}, expected (N, 4, max_points)")
        if f["energy"].shape[0] != shape[0]:
            raise InputError(path, f"{f['energy'].shape[0]} energies for {shape[0]} showers")
        return shape[0], ild_ecal() if readout is None else readout

    def read(self, f, index, readout):
        events = f["events"][index]
        centres = readout.layer_centres()
        clouds = []
        for event in events:
            x, layer, z, e = event[:, event[3] != 0]
            if np.any((layer < 0) | (layer >= len(centres)) | (layer != np.round(layer))):
                raise InputError(f.filename, f"layer indices outside 0..{len(centres) - 1} "
                                             f"of {readout.name or 'the readout'}")
            clouds.append(np.stack([x, z, centres[layer.astype(np.intp)], e * GeV], axis=1))
        return Showers(energy=f["energy"][index].reshape(-1) * GeV, points=PointClouds.from_list(clouds))

    def append(self, f, showers, readout):
        if showers.points is None:
            raise ValueError("the caloclouds format stores point clouds; these showers have none (smear voxels first)")
        pc = showers.points
        width = max(int(pc.counts.max(initial=1)), f["events"].shape[2] if "events" in f else 1)
        if "events" in f and f["events"].shape[2] < width:
            f["events"].resize(width, axis=2)  # earlier showers are zero-padded to the new width
        events = np.zeros((len(showers), 4, width), dtype=np.float32)
        for i in range(len(showers)):
            x, y, z, e = pc[i].T
            events[i, :, :len(x)] = [x, readout.layer_of(z), y, e / GeV]
        append_rows(f, "events", events)
        append_rows(f, "energy", (showers.energy / GeV).reshape(-1, 1))


class CalofmFormat(ShowerFormat):
    """calofm's own file: every condition, optional ragged points, and provenance attributes."""

    name = "calofm"
    stores = frozenset({"energy", "showers", "theta", "phi", "particle", "event", "points"})
    MARK = "calofm_format_version"  # in FORMAT_ATTRS

    def sniff(self, f):
        return self.MARK in f.attrs

    def open(self, f, path, readout):
        require(f, path, "energy")
        stored = readout_from_dict(json.loads(f.attrs["readout"]))
        if readout != stored:
            raise InputError(path, f"file binning {stored.describe()} differs from the one given "
                                   f"({readout.describe()})")
        n = f["energy"].shape[0]
        for name in OPTIONAL_ARRAYS + ("points/offsets",):
            rows = f[name].shape[0] - (name == "points/offsets") if name in f else n
            if rows != n:
                raise InputError(path, f"'{name}' has {rows} rows for {n} showers")
        if "showers" in f and f["showers"].shape[1] != stored.n_voxels:
            raise InputError(path, f"showers have {f['showers'].shape[1]} voxels but the binning has {stored.n_voxels}")
        if "event" in f:  # a run's event indices: each once, or showers were merged twice
            values, counts = np.unique(f["event"][:], return_counts=True)
            if np.any(counts > 1):
                raise InputError(path, f"event {values[np.argmax(counts > 1)]} appears {counts.max()} times")
        return n, stored

    def read(self, f, index, readout):
        def get(name, dtype):
            return f[name][index].astype(dtype, copy=False) if name in f else None

        points = None
        if "points" in f:
            points = self._read_points(f, np.arange(f["energy"].shape[0])[index])
        return Showers(energy=get("energy", np.float64), showers=get("showers", np.float32),
                       theta=get("theta", np.float64), phi=get("phi", np.float64),
                       particle=get("particle", np.int64), event=get("event", np.int64), points=points)

    @staticmethod
    def _read_points(f, rows: np.ndarray) -> PointClouds:
        offsets, data = f["points/offsets"], f["points/data"]
        if len(rows) and np.all(np.diff(rows) == 1):  # contiguous: one read
            bounds = offsets[rows[0]:rows[-1] + 2]
            return PointClouds(data[bounds[0]:bounds[-1]], (bounds - bounds[0]).astype(np.int64))
        return PointClouds.from_list([data[offsets[r]:offsets[r + 1]] for r in rows])

    def append(self, f, showers, readout):
        first = "energy" not in f
        if first:
            f.attrs[self.MARK] = FORMAT_VERSION
            f.attrs.update({"energy_unit": "MeV", "length_unit": "mm", "angle_unit": "rad"})
        for name in OPTIONAL_ARRAYS + ("points",):
            if not first and (getattr(showers, name) is None) == (name in f):
                raise ValueError(f"'{name}' must be given in every batch or in none")
        for name in OPTIONAL_ARRAYS:
            if getattr(showers, name) is not None:
                append_rows(f, name, getattr(showers, name))
        append_rows(f, "energy", showers.energy.astype(np.float64))
        if showers.points is not None:
            offsets = showers.points.offsets
            if "points/offsets" in f:
                offsets = offsets[1:] + f["points/offsets"][-1]
            append_rows(f, "points/data", showers.points.points.astype(np.float32))
            append_rows(f, "points/offsets", offsets)


FORMATS: dict[str, ShowerFormat] = {fmt.name: fmt for fmt in
                                    (CalofmFormat(), CaloCloudsFormat(), LemursFormat(), CaloChallengeFormat())}


def get_format(name: str) -> ShowerFormat:
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return FORMATS[name]
