"""Electromagnetic properties of the materials calofm's detectors are built from.

Values are the PDG "Atomic and nuclear properties of materials" tables: radiation length X0,
critical energy E_c for electrons (Rossi definition), nuclear interaction length lambda_I, density. The Moliere
radius follows as R_M = E_s X0 / E_c with E_s = 21.2052 MeV. Names are Geant4 NIST material names.

Scintillators carry Birks' constant kB: the visible energy of a step is dE / (1 + kB dE/dx).
Polystyrene's is Geant4's own value for SCSN-38 (Hirschberg et al., IEEE TNS 39 (1992) 511:
0.00842 g cm^-2 MeV^-1 at 1.06 g/cm3).
"""

from __future__ import annotations

from dataclasses import dataclass

E_S = 21.2052  # MeV, scale energy sqrt(4 pi / alpha) m_e c^2


@dataclass(frozen=True)
class Material:
    nist: str
    density: float  # g/cm3
    x0_mm: float
    critical_mev: float
    lambda_i_mm: float
    birks_mm_per_mev: float = 0.0  # non-zero: a scintillator, quenched by Birks' law

    @property
    def moliere_mm(self) -> float:
        return E_S * self.x0_mm / self.critical_mev


MATERIALS = {m.nist: m for m in (
    Material("G4_W", 19.30, 3.504, 7.97, 99.46),
    # E_c: Rossi fit 610 MeV/(Z + 1.24) scaled to W's tabulated value; lambda_I: W's scaled by A^0.29
    Material("G4_Ta", 16.654, 4.094, 8.14, 114.7),
    Material("G4_Pb", 11.35, 5.612, 7.43, 175.9),
    Material("G4_Fe", 7.874, 17.57, 21.68, 167.7),
    Material("G4_Si", 2.329, 93.70, 40.19, 465.2),
    Material("G4_lAr", 1.396, 140.0, 32.84, 857.7),
    Material("G4_POLYSTYRENE", 1.060, 413.1, 93.11, 727.1, birks_mm_per_mev=0.07943),
    Material("G4_PbWO4", 8.28, 8.903, 9.64, 202.7),
)}


def material(name: str) -> Material:
    if name not in MATERIALS:
        raise KeyError(f"unknown material {name!r}; known: {', '.join(MATERIALS)}")
    return MATERIALS[name]
