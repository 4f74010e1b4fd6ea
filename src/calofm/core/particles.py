"""The particles calofm simulates, by Geant4 name and PDG code (the ``particle`` field of shower files)."""

from __future__ import annotations

PARTICLES = {"e-": 11, "e+": -11, "gamma": 22, "pi+": 211, "pi-": -211, "proton": 2212, "neutron": 2112,
             "mu-": 13, "mu+": -13}
NAMES = {code: name for name, code in PARTICLES.items()}
# PDG codes of the particles that live long enough to reach a calorimeter: any other code in a
# shower file is a mistake (a code from another numbering, an uninitialised field)
REACH_CALORIMETER = frozenset(PARTICLES.values()) | {321, -321, 130, 310, -2212, -2112, 3122, -3122}


def particle_name(pdg: int) -> str:
    """The Geant4 name of a PDG code, or ``pdg <code>`` for one calofm does not simulate."""
    return NAMES.get(int(pdg), f"pdg {int(pdg)}")
