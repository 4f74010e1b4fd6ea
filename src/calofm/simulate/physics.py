"""Which Geant4 physics a run uses: the physics list, and Birks' law in scintillators.

Pure Python (no Geant4 import), so the choice is made, checked and recorded in the main process.

- ``em``: ``G4EmStandardPhysics_option1`` alone: electromagnetic showers (e+-, gamma), fastest.
- ``ftfp_bert``: hadronic showers. With the official Geant4 data sets, the reference FTFP_BERT
  list. Offline, the same physics assembled from its modular constructors on
  ``G4EmStandardPhysics_option1`` (the reference list uses option 0, which needs Livermore
  Rayleigh data), reading the cross-section files of :mod:`calofm.simulate.xs_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calofm.simulate.materials import MATERIALS, material

PHYSICS_LISTS = ("em", "ftfp_bert")
PROTON_MASS_MEV, AMU_MEV = 938.27208816, 931.49410242
NEUTRAL, CHARGED, PHOTON = 0, 1, 2  # the particle kinds of a quenched step
EM_PARTICLES = ("e-", "e+", "gamma")

# Modular FTFP_BERT, in the registration order of Geant4's FTFP_BERT list. G4IonPhysics needs
# G4DecayPhysics registered too.
MODULAR_FTFP_BERT = ("G4EmStandardPhysics_option1", "G4EmExtraPhysics", "G4DecayPhysics", "G4HadronElasticPhysics",
                     "G4HadronPhysicsFTFP_BERT", "G4StoppingPhysics", "G4IonPhysics", "G4NeutronTrackingCut")


def default_physics(particle: str) -> str:
    """``em`` for electromagnetic primaries, ``ftfp_bert`` for the others."""
    return "em" if particle in EM_PARTICLES else "ftfp_bert"


@dataclass(frozen=True)
class Physics:
    """A physics list and, per scintillator, Birks' constant (``birks_kb`` overrides them all; 0: off)."""

    name: str = "em"
    birks_kb: float | None = None  # mm/MeV
    range_cut_mm: float = 1.0  # mm; what every calofm preset was measured with

    def __post_init__(self):
        if self.name not in PHYSICS_LISTS:
            raise ValueError(f"unknown physics list {self.name!r}; known: {', '.join(PHYSICS_LISTS)}")
        if self.birks_kb is not None and self.birks_kb < 0:
            raise ValueError("Birks' constant kB must be >= 0 mm/MeV (0 turns the quenching off)")
        if self.range_cut_mm <= 0:
            raise ValueError("the production cut must be positive (mm)")

    @property
    def hadronic(self) -> bool:
        """Whether the list needs the hadronic cross-section data."""
        return self.name != "em"

    def birks(self, name: str) -> float:
        """kB in mm/MeV for active material ``name``: 0 unless it is a scintillator calofm knows (a
        material only a GDML file defines is not quenched unless ``birks_kb`` says so)."""
        default = material(name).birks_mm_per_mev if name in MATERIALS else self.birks_kb or 0.0
        return default if self.birks_kb is None or not default else self.birks_kb

    def constructors(self, official: bool) -> tuple[str, ...]:
        """The Geant4 classes to build: a reference list (one name) or modular constructors."""
        if self.name == "em":
            return ("G4EmStandardPhysics_option1",)
        return ("FTFP_BERT",) if official else MODULAR_FTFP_BERT

    def describe(self, official: bool, active: list[str]) -> dict:
        """What goes in every output file: the list, its constructors and the Birks constants used."""
        return {"list": self.name, "constructors": list(self.constructors(official)), "range_cut_mm": self.range_cut_mm,
                "birks_mm_per_MeV": {m: self.birks(m) for m in sorted(set(active))}}


def birks_tables(energies, proton_mm, electron_mm, z, atoms, amu) -> tuple:
    """Log-log range tables and the Z^2-weighted recoil mass ratio and charge^2 of a material.

    The recoil averages follow ``G4EmSaturation`` (weights Z^2 n_i over the elements).
    """
    w = z**2 * atoms
    ratio = PROTON_MASS_MEV / AMU_MEV * float(np.sum(w / amu) / np.sum(w))
    charge2 = float(np.sum(w * z**2) / np.sum(w))
    return (np.log(energies), np.log(np.maximum(proton_mm, 1e-12)), np.log(np.maximum(electron_mm, 1e-12)), ratio,
            charge2)


def birks_visible(edep, length, niel, kind, kb: float, tables: tuple) -> np.ndarray:
    """Birks' law per step, as ``G4EmSaturation::VisibleEnergyDeposition``.

    Charged steps: the ionising part is divided by 1 + kB dE/dx with dE/dx = (edep - niel) / length;
    the non-ionising part (nuclear recoils), and all of a neutral hadron's deposit, by
    1 + kB E / R, R the range of a proton of the recoil's scaled energy over the recoil's charge^2.
    Photons' local deposits (atomic relaxation) use the range of an electron of that energy.
    """
    log_e, log_rp, log_re, ratio, charge2 = tables

    def quench(e, range_mm):
        return e / (1.0 + kb * e / range_mm)

    def range_of(log_r, e):
        return np.exp(np.interp(np.log(np.maximum(e, 1e-12)), log_e, log_r))

    gamma, charged = kind == PHOTON, kind == CHARGED
    niel = np.where(charged & (length > 0) & (edep >= niel), np.maximum(niel, 0.0), edep)
    eloss = edep - niel
    visible = np.where(eloss > 0, quench(eloss, np.where(length > 0, length, 1.0)), 0.0)
    visible += np.where(niel > 0, quench(niel, range_of(log_rp, niel * ratio) / charge2), 0.0)
    return np.where(gamma, quench(edep, range_of(log_re, edep)), visible)
