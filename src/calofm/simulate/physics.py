"""Which Geant4 physics a run uses: the physics list and Birks' law in scintillators.

Pure Python (no Geant4 import), so the choice is made, checked and recorded in the main process.

- ``em``: ``G4EmStandardPhysics_option1`` alone: electromagnetic showers (e+-, gamma), fastest.
- ``ftfp_bert``: hadronic showers. With the official Geant4 data sets, the reference FTFP_BERT
  list. Offline, the same physics assembled from its modular constructors on
  ``G4EmStandardPhysics_option1`` (the reference list uses option 0, which needs Livermore
  Rayleigh data), reading the cross-section files of :mod:`calofm.simulate.xs_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass

from calofm.simulate.materials import material

PHYSICS_LISTS = ("em", "ftfp_bert")
EM_PARTICLES = ("e-", "e+", "gamma")

# Modular FTFP_BERT, in registration order (shared/notes/geant4-hadronic.md). G4IonPhysics needs
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
    range_cut_mm: float = 0.7

    def __post_init__(self):
        if self.name not in PHYSICS_LISTS:
            raise ValueError(f"unknown physics list {self.name!r}; known: {', '.join(PHYSICS_LISTS)}")
        if self.birks_kb is not None and self.birks_kb < 0:
            raise ValueError("Birks' constant kB must be >= 0 mm/MeV (0 turns the quenching off)")
        if self.range_cut_mm <= 0:
            raise ValueError("the production cut must be positive (mm)")

    def birks(self, name: str) -> float:
        """kB in mm/MeV for active material ``name``: 0 unless it is a scintillator."""
        default = material(name).birks_mm_per_mev
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
