"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

import inspect
import os


class CalofmError(Exception):
    """A problem with the user's input or set-up (not a bug in calofm)."""


class InputError(CalofmError):
    """A file that cannot be used, with the file named first: ``path: problem``."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # raised in a worker process, it crosses back whole
        return type(self), (self.path, self.problem)


class CalofmWarning(UserWarning):
    """Something that is probably a mistake but may be intended (energies that look like GeV);
    the CLI prints it as one line and goes on."""


def checked_call(fn, kwargs: dict, key: str):
    """``fn(**kwargs)`` with ``kwargs`` from a config: an argument ``fn`` does not take is a
    ``ValueError`` naming ``key.argument`` and the arguments it does take, not a ``TypeError``."""
    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            known = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL and n != "self"]
            raise ValueError(f"{key}.{unknown[0]}: unknown argument; known: {', '.join(known)}")
    return fn(**kwargs)
