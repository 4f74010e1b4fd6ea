"""The two pieces of Geant4's G4EMLOW data set that the standard EM physics reads, from formulas.

``G4EmStandardPhysics_option1`` / ``_option2`` read only:

* ``brem_SB/br{Z}``: the Seltzer-Berger bremsstrahlung table of ``G4SeltzerBergerModel`` (e-/e+
  below 1 GeV). Read by ``G4Physics2DVector::Retrieve``: ``2 NK NT``, a line of the NK values of
  kappa = k/T, a line of the NT values of ln(T/MeV), then NT lines of NK values of the scaled
  cross section chi = beta^2 k dsigma/dk / Z^2 in mb. Here chi is the screened Bethe-Heitler
  cross section of Tsai, Rev. Mod. Phys. 46 (1974) 815, with the Davies-Bethe-Maximon Coulomb
  correction and no LPM suppression: the cross section ``G4eBremsstrahlungRelModel`` uses above
  1 GeV, so the two models join smoothly. Below about 10 MeV it underestimates the true cross
  section (about 45 % low in W at 1 MeV), where ionisation dominates the energy loss anyway.
* ``epics2017/phot/pe-{cs,high,low}-{Z}.dat``: the photo-effect tables of
  ``G4LivermorePhotoElectricModel::ReadData``. Here they hold a single-shell representation of the
  Sandia et al. parameterisation (``G4SandiaTable``, as in ``G4PEEffectFluoModel``):
  sigma(E) = a1/E + a2/E^2 + a3/E^3 + a4/E^4 piecewise in energy intervals. Its last two
  intervals become the analytic ``pe-high`` and ``pe-low`` fits, and sigma*E^3 of the intervals
  below is tabulated in ``pe-cs``. The shell's binding energy is the start of the lowest interval,
  so the photo-electron takes (almost) all the photon energy and there is no fluorescence.

The Sandia coefficients are read through ``geant4_pybind`` in a child process, so that the
calling process can still set Geant4's environment before it imports the bindings itself.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TABLES_VERSION = "calofm-em-1"
MARKER = "calofm-tables.json"  # provenance, written last: its presence marks a complete build
EARLIER_MARKERS = ("calofm-em-tables.json",)  # the marker's name in earlier calofm versions
Z_LIMIT = 100  # G4SandiaTable covers Z = 1..100

# CODATA 2018
ALPHA = 7.2973525693e-3
ELECTRON_MASS_MEV = 0.51099895
CLASSIC_RADIUS_CM = 2.8179403262e-13
MILLIBARN_CM2 = 1e-27
BREM_FACTOR_MB = 16.0 / 3.0 * ALPHA * CLASSIC_RADIUS_CM**2 / MILLIBARN_CM2  # 16 alpha r0^2 / 3

# The grid of Seltzer & Berger, At. Data Nucl. Data Tables 35 (1986) 345, which Geant4's files keep:
# 32 values of kappa = k/T and 57 kinetic energies from 1 keV to 10 GeV.
SB_KAPPA = np.array([
    0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65,
    0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995,
    0.99999, 1.0,
])
SB_T_MEV = np.append(np.outer(10.0 ** np.arange(-3, 4), [1, 1.5, 2, 3, 4, 5, 6, 8]).ravel(), 1e4)

# Radiation logarithms (L_rad, L'_rad) for Z < 5, where the Thomas-Fermi screening fails: the
# Dirac-Fock values of G4eBremsstrahlungRelModel (cf. Tsai 1974, Table B.2).
LOW_Z_LRAD = {1: (5.3104, 5.9173), 2: (4.7935, 5.6125), 3: (4.7402, 5.5377), 4: (4.7112, 5.4728)}

PE_POINTS_PER_DECADE = 20  # pe-cs sampling to start from, refined until ...
PE_RTOL = 1e-3  # ... Geant4's linear interpolation of sigma*E^3 is this close to it
PE_EDGE_GAP = 1e-6  # relative gap between the last point below an edge and the edge itself


def coulomb_correction(z: float) -> float:
    """Davies-Bethe-Maximon Coulomb correction f(Z), as fitted in Tsai (1974) Eq. 3.3."""
    a2 = (ALPHA * z) ** 2
    return a2 * (1.0 / (1.0 + a2) + 0.20206 - 0.0369 * a2 + 0.0083 * a2**2 - 0.002 * a2**3)


def brem_chi(z: int, kappa: np.ndarray = SB_KAPPA, t_mev: np.ndarray = SB_T_MEV) -> np.ndarray:
    """chi = beta^2 k dsigma/dk / Z^2 [mb] on the grid (len(t_mev), len(kappa)).

    Tsai (1974) Sec. III: the screened Bethe-Heitler cross section with the Thomas-Fermi screening
    functions of Eqs. 3.38-3.41 (complete screening with LOW_Z_LRAD for Z < 5). No LPM and no
    dielectric suppression: Geant4 applies the latter itself at run time.
    """
    t = np.asarray(t_mev, dtype=float)[:, None]
    e_tot = t + ELECTRON_MASS_MEV
    k = np.asarray(kappa, dtype=float)[None, :] * t
    y = k / e_tot
    shape = 1.0 - y + 0.75 * y**2
    fc = coulomb_correction(z)
    if z in LOW_Z_LRAD:
        l_rad, l_rad_inel = LOW_Z_LRAD[z]
        dcs = shape * (l_rad - fc + l_rad_inel / z) + (1.0 - y) * (1.0 + 1.0 / z) / 12.0
    else:
        log_z = math.log(z)
        delta = 100.0 * ELECTRON_MASS_MEV * k / (e_tot * (e_tot - k))  # Tsai Eqs. 3.30-3.31
        gamma, epsilon = delta / z ** (1 / 3), delta / z ** (2 / 3)
        phi1 = (16.863 - 2 * np.log(1 + 0.311877 * gamma**2)
                + 2.4 * np.exp(-0.9 * gamma) + 1.6 * np.exp(-1.5 * gamma))
        phi1_minus_phi2 = 2.0 / (3.0 + 19.5 * gamma + 18.0 * gamma**2)
        psi1 = (24.34 - 2 * np.log(1 + 13.111641 * epsilon**2)
                + 2.8 * np.exp(-8 * epsilon) + 1.2 * np.exp(-29.2 * epsilon))
        psi1_minus_psi2 = 2.0 / (3.0 + 120.0 * epsilon + 1200.0 * epsilon**2)
        dcs = shape * ((0.25 * phi1 - log_z / 3 - fc) + (0.25 * psi1 - 2 * log_z / 3) / z)
        dcs = dcs + 0.125 * (1.0 - y) * (phi1_minus_phi2 + psi1_minus_psi2 / z)
    beta2 = t * (t + 2 * ELECTRON_MASS_MEV) / e_tot**2
    return np.maximum(dcs, 0.0) * BREM_FACTOR_MB * beta2


def brem_sb_text(z: int) -> str:
    """The brem_SB/br{Z} file (G4Physics2DVector ascii format)."""
    chi = brem_chi(z)
    lines = [f"2 {len(SB_KAPPA)} {len(SB_T_MEV)}", _row(SB_KAPPA, "%.6g"), _row(np.log(SB_T_MEV), "%.10g")]
    lines += [_row(row, "%.6e") for row in chi]
    return "\n".join(lines) + "\n"


def sandia_cross_section(intervals: np.ndarray, e_mev: np.ndarray) -> np.ndarray:
    """Photo-absorption cross section [barn] from Sandia intervals (rows: E_start/MeV, a1..a4).

    Below the first interval the value at its start is returned, as Geant4 does.
    """
    e = np.maximum(np.asarray(e_mev, dtype=float), intervals[0, 0])
    row = np.searchsorted(intervals[:, 0], e, side="right") - 1
    a = intervals[row, 1:]
    return np.maximum(sum(a[..., i] / e ** (i + 1) for i in range(4)), 0.0)


def photo_texts(intervals: np.ndarray) -> dict[str, str]:
    """The pe-cs, pe-high and pe-low files for one element, keyed by file prefix.

    pe-high/pe-low: ``n_shells n_shells_used E_min`` then per shell ``E_bind c1..c6`` with
    sigma = sum c_i / E^i [barn, MeV]; pe-cs: G4PhysicsVector ascii of sigma*E^3 [barn MeV^3],
    used between E_bind and the pe-low threshold (G4LivermorePhotoElectricModel::ReadData).
    """
    if len(intervals) < 3:
        raise ValueError(f"need at least 3 Sandia intervals, got {len(intervals)}")
    starts = intervals[:, 0]
    e_bind = starts[0]

    def fit(row: np.ndarray) -> str:
        coeffs = " ".join("%.10e" % c for c in (*row[1:], 0.0, 0.0))
        return f"1 1 {row[0]:.10e}\n{e_bind:.10e} {coeffs}\n"

    def sigma_e3(e: np.ndarray) -> np.ndarray:
        return sandia_cross_section(intervals, e) * e**3

    energies = np.concatenate([
        _linear_grid(sigma_e3, lo, hi * (1 - PE_EDGE_GAP)) for lo, hi in zip(starts[:-2], starts[1:-1])
    ])
    cs = physics_vector_text(energies, sigma_e3(energies), energy_digits=10)
    return {"pe-cs": cs, "pe-high": fit(intervals[-1]), "pe-low": fit(intervals[-2])}


def physics_vector_text(energies: np.ndarray, values: np.ndarray, energy_digits: int) -> str:
    """G4PhysicsVector ascii, as ``Retrieve`` reads it: ``emin emax N``, ``N``, then ``E value`` lines."""
    e = f"%.{energy_digits}e"
    lines = [f"{e % energies[0]} {e % energies[-1]} {len(energies)}", str(len(energies))]
    lines += [f"{e % x} {v:.8e}" for x, v in zip(energies, values)]
    return "\n".join(lines) + "\n"


def geant4_env(root: Path) -> dict[str, str]:
    """Environment variables that point Geant4 (and geant4_pybind's start-up) at tables in root."""
    root = Path(root)
    return {
        "GEANT4_DATA_DIR": str(root),
        "G4LEDATA": str(root),
        "G4ENSDFSTATEDATA": str(root / "ENSDFSTATE"),
        "G4LEVELGAMMADATA": str(root / "LEVELGAMMA"),
    }


def read_provenance(root: Path) -> dict | None:
    """The provenance of a complete table directory, or None if root holds none."""
    for name in (MARKER, *EARLIER_MARKERS):
        try:
            provenance = json.loads((Path(root) / name).read_text())
        except (OSError, ValueError):
            continue
        return provenance if isinstance(provenance, dict) else None
    return None


def build_em_tables(root: Path, z_max: int = 99) -> dict:
    """Write G4LEDATA-style tables for Z = 1..z_max under root; return their provenance.

    Writes root/'brem_SB/br{Z}', root/'epics2017/phot/pe-{cs,high,low}-{Z}.dat', an empty
    root/'ENSDFSTATE/ENSDFSTATE.dat', an empty root/'LEVELGAMMA/' and the provenance MARKER.
    """
    return build_tables(root, TABLES_VERSION, z_max, _write_tables)


def build_tables(root: Path, version: str, z_max: int, write) -> dict:
    """Build a table directory with ``write(out, z_max) -> provenance`` unless root already holds one.

    Returns at once if root holds tables of this ``version`` covering z_max. The tables are built
    in a temporary sibling directory, then renamed into place, so root is never seen half written.
    A non-empty root that does not hold calofm tables is left alone (error).
    """
    root = Path(root)
    if not 1 <= z_max <= Z_LIMIT:
        raise ValueError(f"z_max must be in 1..{Z_LIMIT}, got {z_max}")
    if _covers(read_provenance(root), version, z_max):
        return read_provenance(root)
    _check_replaceable(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        tmp.chmod(0o755)
        provenance = {"tables_version": version, "z_min": 1, "z_max": z_max, **write(tmp, z_max)}
        (tmp / MARKER).write_text(json.dumps(provenance, indent=1, sort_keys=True) + "\n")
        _install(tmp, root, version, z_max)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return read_provenance(root)


def element_data(z_max: int) -> dict:
    """Per Z = 1..z_max, what Geant4 knows of the element, read through geant4_pybind.

    ``intervals``: the Sandia intervals (rows: E_start/MeV, a1..a4 in barn MeV^i); ``mass_amu``: the
    NIST mean atomic mass; ``geant4``: the Geant4 version. Read by running this file as a script in
    a child process, so that the bindings are never imported (nor Geant4's environment fixed) in
    the calling process.
    """
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "elements.json"
        env = {**os.environ, "GEANT4_DATA_DIR": os.environ.get("GEANT4_DATA_DIR") or scratch}
        proc = subprocess.run([sys.executable, __file__, str(z_max), str(out)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"reading the element data through geant4_pybind failed "
                               f"(exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        data = json.loads(out.read_text())
    return {"geant4": data["geant4"],
            "intervals": {int(z): np.array(rows) for z, rows in data["intervals"].items()},
            "mass_amu": {int(z): float(m) for z, m in data["mass_amu"].items()}}


def _linear_grid(f, lo: float, hi: float, max_rounds: int = 30) -> np.ndarray:
    """Log-spaced points on [lo, hi], bisected until linear interpolation of f is within PE_RTOL."""
    x = np.geomspace(lo, hi, 1 + math.ceil(PE_POINTS_PER_DECADE * math.log10(hi / lo)))
    for _ in range(max_rounds):
        mid = np.sqrt(x[:-1] * x[1:])
        fx, f_mid = f(x), f(mid)
        linear = fx[:-1] + (fx[1:] - fx[:-1]) * (mid - x[:-1]) / (x[1:] - x[:-1])
        poor = np.abs(linear - f_mid) > PE_RTOL * np.abs(f_mid)
        if not poor.any():
            break
        x = np.sort(np.concatenate([x, mid[poor]]))
    return x


def _row(values, fmt: str) -> str:
    return " ".join(fmt % v for v in values)


def _covers(provenance: dict | None, version: str, z_max: int) -> bool:
    """Whether provenance is of tables of this version for Z = 1..z_max at least."""
    return bool(provenance) and provenance.get("tables_version") == version \
        and provenance.get("z_max", 0) >= z_max


def _check_replaceable(root: Path) -> None:
    """Refuse to replace anything but a missing or empty directory or an earlier calofm build."""
    if root.exists() and read_provenance(root) is None and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and does not hold calofm tables; not replacing it")


def _write_tables(out: Path, z_max: int) -> dict:
    """Write every EM table into the new, empty directory out; return their provenance."""
    elements = element_data(z_max)
    brem, phot = out / "brem_SB", out / "epics2017" / "phot"
    for d in (brem, phot, out / "ENSDFSTATE", out / "LEVELGAMMA"):
        d.mkdir(parents=True)
    (out / "ENSDFSTATE" / "ENSDFSTATE.dat").touch()
    for z in range(1, z_max + 1):
        (brem / f"br{z}").write_text(brem_sb_text(z))
        for prefix, text in photo_texts(elements["intervals"][z]).items():
            (phot / f"{prefix}-{z}.dat").write_text(text)
    return {
        "brem_SB": "Tsai 1974 screened Bethe-Heitler + Davies-Bethe-Maximon Coulomb correction, "
                   "no LPM; Seltzer-Berger grid 32 k/T x 57 T (1 keV-10 GeV)",
        "epics2017_phot": "single-shell Sandia parameterisation (G4SandiaTable)",
        "sandia_source": elements["geant4"],
    }


def _install(tmp: Path, root: Path, version: str, z_max: int) -> None:
    """Rename the finished build tmp to root, replacing an empty directory or an earlier build."""
    try:
        os.rename(tmp, root)  # atomic; replaces a missing or empty root
        return
    except OSError:
        if _covers(read_provenance(root), version, z_max):  # a concurrent build got there first
            return
        _check_replaceable(root)
    stale = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
    os.rename(root, stale / root.name)
    os.rename(tmp, root)
    shutil.rmtree(stale, ignore_errors=True)


def _dump_element_data(z_max: int, path: str) -> None:
    """Child process: write the Sandia intervals and NIST masses of Z = 1..z_max as JSON to path."""
    import geant4_pybind as g4

    coeffs = g4.G4doubleVector([0.0] * 4)
    nist = g4.G4NistManager.Instance()
    intervals, masses = {}, {}
    for z in range(1, z_max + 1):
        # a one-element material's Sandia matrix lists the interval starts of that element
        material = g4.G4Material(f"calofm_sandia_{z}", float(z), 2.0 * z * g4.g / g4.mole, g4.g / g4.cm3)
        table = material.GetSandiaTable()
        starts = [table.GetSandiaCofForMaterial(i, 0) for i in range(table.GetMatNbOfIntervals())]
        rows = []
        for lo, hi in zip(starts, starts[1:] + [2.0 * starts[-1]]):
            table.GetSandiaCofPerAtom(z, math.sqrt(lo * hi), coeffs)
            rows.append([lo / g4.MeV] + [coeffs[i] / (g4.barn * g4.MeV ** (i + 1)) for i in range(4)])
        intervals[z] = rows
        masses[z] = nist.GetAtomicMassAmu(z)
    version = g4.G4Version.strip("$").replace("Name:", "").strip()
    Path(path).write_text(json.dumps({"geant4": version, "intervals": intervals, "mass_amu": masses}))


if __name__ == "__main__":
    _dump_element_data(int(sys.argv[1]), sys.argv[2])
