"""Atomic writes: a file appears under its final name only once it is complete."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def partial_path(path: str | os.PathLike) -> Path:
    """The temporary name a file is written under before it is renamed into place."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to ``path`` only on success.

    If the body raises (or the process dies), ``path`` keeps whatever it held
    before and the temporary file is removed (or left with a name that no
    reader mistakes for the result).
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
