"""Geant4 physics data, offline: use the official data sets when configured, else calofm's own tables.

Must run before ``import geant4_pybind`` (the bindings read the environment when imported, and
without ``GEANT4_DATA_DIR`` they try to download the data sets).
"""

from __future__ import annotations

import os
from pathlib import Path

from calofm.simulate.tables import TABLES_VERSION, build_em_tables, geant4_env, read_provenance
from calofm.simulate.xs_tables import XS_VERSION, build_xs_tables

# The data sets each physics reads, by environment variable and the folder prefix of a
# GEANT4_DATA_DIR holding the official ones.
OFFICIAL = {"G4LEDATA": "G4EMLOW", "G4ENSDFSTATEDATA": "G4ENSDFSTATE", "G4LEVELGAMMADATA": "PhotonEvaporation"}
OFFICIAL_HADRONIC = {**OFFICIAL, "G4PARTICLEXSDATA": "G4PARTICLEXS"}
# Data sets the hadronic constructors only probe for: any existing directory will do.
UNUSED = ("G4NEUTRONHPDATA", "G4SAIDXSDATA", "G4PIIDATA", "G4INCLDATA", "G4ABLADATA", "G4REALSURFACEDATA",
          "G4RADIOACTIVEDATA", "G4CHANNELINGDATA", "G4PARTICLEHPDATA", "G4NUDEXLIBDATA", "G4URRPTDATA")


def cache_dir() -> Path:
    """``$CALOFM_CACHE``, default ``~/.cache/calofm``."""
    return Path(os.environ.get("CALOFM_CACHE") or Path.home() / ".cache" / "calofm")


def official_data(hadronic: bool) -> dict[str, str] | None:
    """The official data sets, from their variables or a complete GEANT4_DATA_DIR; None if incomplete."""
    wanted = OFFICIAL_HADRONIC if hadronic else OFFICIAL
    found = {var: os.environ[var] for var in wanted
             if os.environ.get(var) and Path(os.environ[var]).is_dir() and not _built_by_calofm(Path(os.environ[var]))}
    base = os.environ.get("GEANT4_DATA_DIR")
    if base and Path(base).is_dir() and not _built_by_calofm(Path(base)):
        for var, prefix in wanted.items():
            dirs = sorted(p for p in Path(base).glob(f"{prefix}*") if p.is_dir())
            if var not in found and dirs:
                found[var] = str(dirs[-1])
    return found if len(found) == len(wanted) else None


def _built_by_calofm(path: Path) -> bool:
    """Whether path is (in) a table directory of calofm's, as a parent process may have set it."""
    return any(read_provenance(p) is not None for p in (path, path.parent))


def configure(hadronic: bool = False) -> dict:
    """Point Geant4 at its data and return what was used (recorded in every output file).

    ``hadronic``: also the G4PARTICLEXS files of the hadronic constructors.
    """
    official = official_data(hadronic)
    if official:
        os.environ.update(official)
        os.environ.setdefault("GEANT4_DATA_DIR", str(Path(official["G4LEDATA"]).parent))
        return {"g4data": "official", **official}
    root = cache_dir() / "g4data"
    provenance = {"g4data": "calofm-built", "em": {"path": str(root / TABLES_VERSION),
                                                   **build_em_tables(root / TABLES_VERSION)}}
    os.environ.update(geant4_env(root / TABLES_VERSION))
    if hadronic:
        provenance["xs"] = {"path": str(root / XS_VERSION), **build_xs_tables(root / XS_VERSION)}
        empty = root / "empty"
        empty.mkdir(exist_ok=True)
        os.environ["G4PARTICLEXSDATA"] = str(root / XS_VERSION)
        os.environ.update({var: str(empty) for var in UNUSED})
    return provenance


DECORATION = ("ExceptionHandler is not defined", "Fatal Exception", "Fatal Exception core dump",
              "This is just a warning message")  # lines of a G4Exception block that say nothing of the cause


def last_exception(log: Path, lines: int = 4) -> str:
    """The last Geant4 exception in a worker log (code, origin, message), else its last lines."""
    if not log.exists():
        return ("it never started; when calling calofm.simulate from a Python script, guard the call "
                "with `if __name__ == '__main__':` (workers are spawned)")
    text = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    starts = [i for i, line in enumerate(text) if "G4Exception-START" in line]
    if starts:
        block = text[starts[-1] + 1:]
        block = [line for line in block[:next((i for i, log_line in enumerate(block) if "G4Exception-END" in log_line),
                                              len(block))]
                 if not line.startswith("****")]
        words = [line.strip("* ") for line in block]
        return " ".join(w for w in words if w and w not in DECORATION)
    return " | ".join(text[-lines:]) or "empty log"
