"""Files written safely: a file appears under its final name only once it is complete, an output
that cannot be written is refused before any work, and an I/O failure is told in a few words."""

from __future__ import annotations

import contextlib
import errno as errnos
import glob
import os
import re
from pathlib import Path
from typing import Iterator

from calofm.core.errors import InputError

_PARTIAL = re.compile(r"^\.(?P<name>.+)\.partial-(?P<pid>\d+)$")


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name a file is written under before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


def final_path(path: str | os.PathLike) -> Path:
    """The name a file written under ``partial_path`` will have (``path`` itself otherwise)."""
    path = Path(path)
    match = _PARTIAL.match(path.name)
    return path.with_name(match["name"]) if match else path


def remove_stale_partials(path: str | os.PathLike) -> None:
    """Remove the temporary files of ``path`` left by processes that died while writing it."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.partial-*"):
        match = _PARTIAL.match(stale.name)
        if match and not _alive(int(match["pid"])):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to ``path`` only on success.

    If the body raises (or the process dies), ``path`` keeps whatever it held
    before and the temporary file is removed (or left with a name that no
    reader mistakes for the result, removed by the next write of ``path``).
    """
    final = Path(path)
    check_output(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    tmp = partial_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def check_output(path: str | os.PathLike, folder: bool = False) -> Path:
    """Refuse, in one line naming ``path``, an output that cannot be written: under a regular file,
    onto a directory (or, for a ``folder``, onto a file), or where the file system refuses new files.

    Creates nothing: a probe file in the nearest existing folder is made and removed again.
    """
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise InputError(path, "is a directory; give a file name" if not folder
                         else "is a file; give a folder")
    parent = path if folder and path.is_dir() else path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(path, f"cannot be created: {parent} is a file, not a folder")
    probe = parent / f".calofm-probe-{os.getpid()}"
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise InputError(path, f"cannot be written ({io_problem(exc)})") from None
    return path


def io_problem(exc: OSError) -> str:
    """The operating system's reason for a failed read or write, in a few words (HDF5 buries the
    errno in a long message)."""
    code = exc.errno
    if code is None:
        match = re.search(r"errno = (\d+)", str(exc))
        code = int(match[1]) if match else None
    if code in errnos.errorcode:
        return os.strerror(code)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def io_path(exc: OSError) -> str | None:
    """The file an ``OSError`` is about, by its final name (HDF5 gives it inside its message)."""
    name = exc.filename
    if name is None:
        match = re.search(r"filename = '([^']+)'", str(exc))
        name = match[1] if match else None
    return None if name is None else str(final_path(name))


def read_yaml_mapping(path: str | Path, what: str, keys: str) -> dict:
    """The mapping the YAML file ``path`` holds (``what`` it is, with the ``keys`` it takes, for the
    one-line errors)."""
    import yaml

    path = Path(path)
    try:
        d = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(path, f"cannot read {what} ({str(exc).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise InputError(path, f"a {what} file must hold a mapping ({keys})")
    return d
