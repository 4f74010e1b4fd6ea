"""Pieces every stage may use: errors, atomic file writes, units."""

from calofm.core.errors import CalofmError, InputError
from calofm.core.files import atomic_path

__all__ = ["CalofmError", "InputError", "atomic_path"]
