"""Open, stream and write shower files of any supported format.

Reading validates every batch (shapes against the binning, NaN/inf, negative energies,
impossible visible/incident ratios) and names the file in every error. Writing goes to a
temporary name that is renamed only when the file is complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from calofm.core.errors import CalofmWarning, InputError
from calofm.core.files import check_output, io_problem, partial_path, remove_stale_partials
from calofm.data.formats import FORMAT_ATTRS, FORMATS, get_format
from calofm.data.showers import Showers
from calofm.geometry import readout_from_dict

GENERATED_BY = "calofm generate"  # start of the 'generator' attribute of model output files
SPACE_MARGIN = 1 << 20  # bytes kept free beyond a batch's uncompressed size (HDF5 metadata)


class ShowerFile:
    """A shower file opened for reading; iterate it in chunks to stay within memory."""

    def __init__(self, path: str | os.PathLike, readout=None):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(path, "is a directory, not a shower file" if self.path.is_dir() else "no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise InputError(path, f"not an HDF5 file, or truncated ({_reason(exc)})") from None
        try:
            matches = [fmt for fmt in FORMATS.values() if fmt.sniff(self._file)]
            if not matches:
                raise InputError(path, "not a shower file in any known format "
                                       f"(holds: {', '.join(self._file.keys()) or 'nothing'}); "
                                       f"known formats: {', '.join(FORMATS)}")
            self.format = matches[0]
            if readout is None and "readout" in self._file.attrs:  # written by calofm
                readout = readout_from_dict(json.loads(self._file.attrs["readout"]))
            self._n, self.readout = self._guard(self.format.open, self._file, path, readout)
            if self._n == 0:
                raise InputError(path, "holds no showers")
        except BaseException:
            self._file.close()
            raise
        self.metadata = {k: v for k, v in self._file.attrs.items() if k not in FORMAT_ATTRS}
        self._units_check = not _generated(self.metadata)
        self._units_told = False
        # point clouds scored on the detector's own cells carry their readout (calofm simulate --points)
        self.points_readout = readout_from_dict(json.loads(self.metadata["points_readout"])) \
            if "points_readout" in self.metadata else self.readout

    def _guard(self, fn, *args):
        """Run a read step, turning low-level HDF5 failures into an error naming the file."""
        try:
            return fn(*args)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise InputError(self.path, f"cannot read {self.format.name} data ({_reason(exc)})") from None

    def __len__(self) -> int:
        return self._n

    def read(self, index=None) -> Showers:
        """Read all showers, a slice, or the showers at integer ``index`` (any order)."""
        if index is None:
            index = slice(0, self._n)
        if isinstance(index, slice):
            start, stop, step = index.indices(self._n)
            if step != 1:
                return self.read(np.arange(start, stop, step))
            showers = self._guard(self.format.read, self._file, slice(start, stop), self.readout)
            self._validate(showers, start)
            return showers
        index = np.asarray(index, dtype=np.int64)
        if np.any((index < 0) | (index >= self._n)):
            raise IndexError(f"{self.path}: shower index outside 0..{self._n - 1}")
        unique, inverse = np.unique(index, return_inverse=True)  # HDF5 wants increasing indices
        showers = self._guard(self.format.read, self._file, unique, self.readout)
        self._validate(showers)
        return showers.take(inverse)

    def _validate(self, showers: Showers, first: int = 0) -> None:
        """Refuse invalid showers; warn, once per file, of energies that look like GeV read as MeV."""
        showers.validate(self.path, first=first, units_check=self._units_check)
        doubt = showers.units_doubt() if self._units_check and not self._units_told else None
        if doubt:
            self._units_told = True
            warnings.warn(CalofmWarning(f"{self.path}: {doubt}"), stacklevel=3)

    def iter_chunks(self, chunk_size: int = 10_000, progress: bool = False) -> Iterator[Showers]:
        """Yield consecutive batches of at most ``chunk_size`` showers."""
        starts = range(0, self._n, chunk_size)
        if progress:
            from rich.progress import track
            starts = track(starts, description=f"reading {self.path.name}")
        for start in starts:
            yield self.read(slice(start, start + chunk_size))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ShowerFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_showers(path, readout=None) -> ShowerFile:
    return ShowerFile(path, readout)


class ShowerWriter:
    """Write showers batch by batch; the file appears under its name only after :meth:`close`.

    A failed write (a full disk) removes the temporary file and raises an :class:`InputError`
    naming ``path``; an earlier file at ``path`` stays untouched.
    """

    def __init__(self, path: str | os.PathLike, format: str, readout, metadata: dict | None = None):
        self.path = check_output(path)
        self.format = get_format(format)
        self.format.check_readout(self.path, readout)
        self.readout = readout
        self.metadata = dict(metadata or {})
        self._n, self._units_check = 0, not _generated(self.metadata)
        self.dropped: set[str] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_partials(self.path)
        self._tmp = partial_path(self.path)
        self._file = h5py.File(self._tmp, "w")
        with self._failing_write():
            self._file.attrs["readout"] = json.dumps(readout.to_dict())
            for key, value in self.metadata.items():
                value = value.item() if isinstance(value, np.generic) else value
                self._file.attrs[key] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)

    def append(self, showers: Showers) -> None:
        try:  # calofm never writes a file it would refuse to read
            showers.validate(self.path, first=self._n, units_check=self._units_check)
        except InputError:
            self.abort()
            raise
        self._n += len(showers)
        self.dropped.update(self.format.dropped(showers))
        self._check_space(showers)
        with self._failing_write():
            self.format.append(self._file, showers, self.readout)

    def _check_space(self, showers: Showers) -> None:
        """Stop before a batch that may not fit: HDF5 cannot always recover from a write that fails
        half way (its objects then fail to close, and h5py may crash the process)."""
        need = showers.nbytes + SPACE_MARGIN
        free = shutil.disk_usage(self._tmp.parent).free
        if free < need:
            self.abort()
            raise InputError(self.path, f"cannot write (No space left on device: {free / 1e6:.1f} MB free, the next "
                                        f"{len(showers)} showers need up to {need / 1e6:.1f} MB); the partial file "
                                        "is removed")

    def close(self) -> None:
        """Finish the file and move it into place."""
        with self._failing_write():
            self._file.close()
            os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Discard what was written; an earlier file at ``path`` stays untouched."""
        try:
            self._file.close()
        except OSError:  # the write that failed fails again on flushing: the file is discarded anyway
            pass
        finally:
            self._tmp.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _failing_write(self):
        """Turn a failed write into one line naming the output, after discarding the partial file."""
        try:
            yield
        except OSError as exc:
            # HDF5 flushes what it holds when its objects close: give the space back first, or a full
            # disk makes every close fail again (and h5py crash at exit)
            os.truncate(self._tmp, 0)
            self.abort()
            raise InputError(self.path, f"cannot write ({io_problem(exc)}); the partial file is removed") from None

    def __enter__(self) -> "ShowerWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_showers(path, showers: Showers, format: str, readout, metadata: dict | None = None) -> set[str]:
    """Write ``showers`` in one go; returns the fields the format could not store."""
    with ShowerWriter(path, format, readout, metadata) as writer:
        writer.append(showers)
    return writer.dropped


def _generated(metadata: dict) -> bool:
    """Model output written by calofm generate: MeV by construction, so a model that deposits more
    than it was given is a result to measure, not a units mistake."""
    return str(metadata.get("generator", "")).startswith(GENERATED_BY)


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
