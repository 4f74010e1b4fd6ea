"""Errors a user can act on. The CLI prints them as one line, without a traceback."""

from __future__ import annotations

import os


class CalofmError(Exception):
    """A problem with the user's input or set-up (not a bug in calofm)."""


class InputError(CalofmError):
    """A file that cannot be used, with the file named first: ``path: problem``."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
