"""Geant4 physics data, offline: use the official data sets when configured, else calofm's own tables.

Must run before ``import geant4_pybind`` (the bindings read the environment when imported, and
without ``GEANT4_DATA_DIR`` they try to download the data sets).
"""

from __future__ import annotations

import os
from pathlib import Path

from calofm.simulate.tables import TABLES_VERSION, build_em_tables, geant4_env

OFFICIAL = ("G4LEDATA", "G4ENSDFSTATEDATA", "G4LEVELGAMMADATA")


def cache_dir() -> Path:
    """``$CALOFM_CACHE``, default ``~/.cache/calofm``."""
    return Path(os.environ.get("CALOFM_CACHE") or Path.home() / ".cache" / "calofm")


def configure() -> dict:
    """Point Geant4 at its data and return what was used (recorded in every output file)."""
    if all(os.environ.get(var) and Path(os.environ[var]).is_dir() for var in OFFICIAL):
        os.environ.setdefault("GEANT4_DATA_DIR", str(Path(os.environ["G4LEDATA"]).parent))
        return {"g4data": "official", **{var: os.environ[var] for var in OFFICIAL}}
    root = cache_dir() / "g4data" / TABLES_VERSION
    provenance = build_em_tables(root)
    os.environ.update(geant4_env(root))
    return {"g4data": "calofm-built", "path": str(root), **provenance}
