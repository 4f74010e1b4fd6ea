"""Models that ship inside the calofm package, loaded by name (``calofm generate --model fm-1``).

Each lives in ``calofm/inference/shipped/NAME/`` as a run folder holds it: ``model.safetensors``
with its JSON description (and ``model.json``, its readable copy). Wherever calofm takes a run
folder or model file, the name of a shipped model serves too; a path that exists always wins.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from calofm.core.errors import InputError

SHIPPED = Path(str(files("calofm.inference") / "shipped"))
MODEL_FILE = "model.safetensors"


def shipped_names() -> list[str]:
    """The names of the models that ship with this installation."""
    return sorted(p.name for p in SHIPPED.iterdir() if (p / MODEL_FILE).exists()) if SHIPPED.is_dir() else []


def resolve(model: str | Path) -> Path:
    """The run folder or model file ``model`` names: itself if it exists, else the shipped model of
    that name; a one-line error naming both possibilities otherwise."""
    path = Path(model)
    if path.exists():
        return path
    if (SHIPPED / str(model) / MODEL_FILE).exists():
        return SHIPPED / str(model)
    names = shipped_names()
    raise InputError(path, "no such run folder or model file, and no shipped model of that name (shipped: "
                           + (", ".join(names) if names else "none in this installation") + ")")
