"""The model card's metric table from ``card.sh``'s results:

    .venv/bin/python studies/fm-1/card_table.py [LABEL ...]    (default: fm-1 fm-1-fast)

Reads ``runs/fm-1/card/LABEL/DETECTOR/metrics.json`` and writes ``studies/fm-1/card.md`` and
``card.json``: per detector the six-observable W1 GM, the high-level classifier AUC and FPD of each
model, the Geant4 floor (half B against half A of the test file) and the GM's ratio to it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from calofm.evaluate.tables import markdown_table

PRESETS = ("par04-siw", "ild-w", "ild-pb", "pbwo4", "lar-pb")
CARD = Path("runs/fm-1/card")
HERE = Path(__file__).parent


def metrics(comparison: dict) -> dict:
    gm = comparison["geometric_mean_wasserstein"]
    return {"n": comparison["n_generated"], "gm": [gm["value"], gm["error"]],
            "auc": comparison["classifier"]["high"]["auc"]["value"],
            "fpd": [comparison["fpd"]["value"], comparison["fpd"]["error"]]}


def main(labels: list[str]) -> None:
    table, rows = {}, []
    for preset in PRESETS:
        for label in labels:
            path = CARD / label / preset / "metrics.json"
            if not path.exists():
                continue
            comparisons = json.loads(path.read_text())["comparisons"]
            model, floor = metrics(comparisons["model"]), metrics(comparisons["geant4"])
            table.setdefault(preset, {"floor": floor})[label] = model
            rows.append((preset, label, f"{model['n']} / {comparisons['model']['n_reference']}",
                         f"{model['gm'][0]:.3f} ± {model['gm'][1]:.3f}", f"{floor['gm'][0]:.3f} ± {floor['gm'][1]:.3f}",
                         f"{model['gm'][0] / floor['gm'][0]:.1f}", f"{model['auc']:.3f}", f"{floor['auc']:.3f}",
                         f"{model['fpd'][0]:.2f}", f"{floor['fpd'][0]:.2f}"))
    header = ("detector (e-, 1-100 GeV)", "model", "generated / Geant4", "GM", "GM floor", "GM / floor", "AUC",
              "AUC floor", "FPD", "FPD floor")
    (HERE / "card.md").write_text("\n".join(markdown_table(header, rows)) + "\n")
    (HERE / "card.json").write_text(json.dumps(table, indent=1) + "\n")
    print("\n".join(markdown_table(header, rows)))


if __name__ == "__main__":
    main(sys.argv[1:] or ["fm-1", "fm-1-fast"])
