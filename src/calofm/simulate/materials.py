"""Electromagnetic properties of the materials calofm's detectors are built from.

Values are the PDG "Atomic and nuclear properties of materials" tables: radiation length X0,
critical energy E_c for electrons (Rossi definition), density. The Moliere radius follows as
R_M = E_s X0 / E_c with E_s = 21.2052 MeV. Names are Geant4 NIST material names.
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

    @property
    def moliere_mm(self) -> float:
        return E_S * self.x0_mm / self.critical_mev


MATERIALS = {m.nist: m for m in (
    Material("G4_W", 19.30, 3.504, 7.97),
    Material("G4_Ta", 16.654, 4.094, 8.14),  # E_c: Rossi fit 610 MeV/(Z + 1.24) scaled to W's tabulated value
    Material("G4_Pb", 11.35, 5.612, 7.43),
    Material("G4_Fe", 7.874, 17.57, 21.68),
    Material("G4_Si", 2.329, 93.70, 40.19),
    Material("G4_lAr", 1.396, 140.0, 32.84),
    Material("G4_POLYSTYRENE", 1.060, 413.1, 93.11),
    Material("G4_PbWO4", 8.28, 8.903, 9.64),
)}


def material(name: str) -> Material:
    if name not in MATERIALS:
        raise KeyError(f"unknown material {name!r}; known: {', '.join(MATERIALS)}")
    return MATERIALS[name]
