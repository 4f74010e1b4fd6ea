"""The figures of docs/hadronic.md: calofm's offline FTFP_BERT against published hadronic-shower facts.

    python studies/hadronic/physics_checks.py [--out studies/hadronic/physics-checks.json] [--workers 2]

- e/pi of a contained iron / scintillator sandwich (100 x (20 mm Fe + 5 mm polystyrene), 12 lambda_I,
  Birks kB 0.07943 mm/MeV) from 3 to 100 GeV, beside Groom's parameterisation
  pi/e = 1 - (1 - h/e) (E / 1 GeV)^(m - 1), m = 0.83 (NIM A 572 (2007) 633) with h/e fitted;
- the pion longitudinal profile in the same sandwich: shower maximum, centre of gravity and 95 %
  containment depth in lambda_I, beside the PDG review's t_max = 0.2 ln(E/GeV) + 0.7 and
  L95 = t_max + 4 lambda_att, lambda_att = lambda_I (E/GeV)^0.13;
- interaction lengths of p, n, pi+ in iron at 10 GeV (PDG: lambda_I(Fe) = 16.77 cm);
- the fraction of 20 GeV pi+ that cross the ild-w ECAL as MIPs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from calofm.data import open_showers
from calofm.simulate.detectors import Detector, get_detector
from calofm.simulate.gun import Gun, Spectrum
from calofm.simulate.materials import material
from calofm.simulate.physics import Physics
from calofm.simulate.runner import Run, measure_interaction_length, simulate

ENERGIES = {3: 600, 5: 400, 10: 300, 20: 150, 50: 80, 100: 40}  # GeV: pions
LAYERS, IRON, SCINT = 100, 20.0, 5.0
GROOM_M = 0.83


def sandwich() -> Detector:
    return Detector.sandwich("fe-sci-contained", "G4_Fe", IRON, "G4_POLYSTYRENE", SCINT, LAYERS,
                             {"n_r": 10, "n_alpha": 1, "n_z": LAYERS, "dr": 50.0}, sampling_fraction=1.0)


def shoot(detector, particle, energy, n, folder, workers):
    out = folder / f"{detector.name}-{particle}-{energy}.h5"
    simulate(Run(detector, Gun(particle, Spectrum.parse(str(energy))), n, seed=7, physics=Physics("ftfp_bert")),
             out, workers=workers, progress=False)
    with open_showers(out) as f:
        return f.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("studies/hadronic/physics-checks.json"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    det = sandwich()
    lam_per_layer = IRON / material("G4_Fe").lambda_i_mm + SCINT / material("G4_POLYSTYRENE").lambda_i_mm
    rows, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for energy, n in ENERGIES.items():
            pions = shoot(det, "pi+", energy, n, folder, args.workers)
            electrons = shoot(det, "e-", energy, max(20, n // 6), folder, args.workers)
            r_pi, r_e = pions.visible_energy() / pions.energy, electrons.visible_energy() / electrons.energy
            profile = pions.showers.reshape(len(pions), LAYERS, -1).sum(axis=2).mean(axis=0)
            depth = (np.arange(LAYERS) + 1.0) * lam_per_layer  # back of each layer, lambda_I
            cumulative = np.cumsum(profile) / profile.sum()
            rows.append({
                "energy_GeV": energy, "n_pi": len(pions), "n_e": len(electrons),
                "e_over_pi": float(r_e.mean() / r_pi.mean()),
                "e_over_pi_err": float(r_e.mean() / r_pi.mean() * np.hypot(
                    r_e.std(ddof=1) / r_e.mean() / np.sqrt(len(r_e)),
                    r_pi.std(ddof=1) / r_pi.mean() / np.sqrt(len(r_pi)))),
                "pi_resolution": float(r_pi.std() / r_pi.mean()),
                "t_max_lambda": float(depth[np.argmax(profile)] - lam_per_layer / 2),
                "cog_lambda": float(np.sum(profile * (depth - lam_per_layer / 2)) / profile.sum()),
                "l95_lambda": float(np.interp(0.95, cumulative, depth)),
                "pdg_t_max_lambda": 0.2 * np.log(energy) + 0.7,
                "pdg_l95_lambda": 0.2 * np.log(energy) + 0.7 + 4 * energy ** 0.13})
        pi_over_e = np.array([1 / r["e_over_pi"] for r in rows])
        scale = np.array([r["energy_GeV"] ** (GROOM_M - 1) for r in rows])
        fit = minimize_scalar(lambda h: np.sum((1 - (1 - h) * scale - pi_over_e) ** 2), bounds=(0.3, 1.2),
                              method="bounded")
        for row, s in zip(rows, scale):
            row["groom_e_over_pi"] = float(1 / (1 - (1 - fit.x) * s))
        results["e_over_pi"] = rows
        results["groom_fit"] = {"h_over_e": float(fit.x), "e_over_h": float(1 / fit.x), "m": GROOM_M}
        results["interaction_length_Fe_10GeV_mm"] = {
            p: dict(zip(("mean", "err"), measure_interaction_length("G4_Fe", p, 10.0, n=8000, seed=i)))
            for i, p in enumerate(("proton", "neutron", "pi+"))}
        ecal = get_detector("ild-w")
        pions = shoot(ecal, "pi+", 20, 200, folder, args.workers)
        raw = pions.visible_energy() * ecal.sampling_fraction
        results["ild_w_pi20_fraction_below_15MeV"] = float(np.mean(raw < 15.0))
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
