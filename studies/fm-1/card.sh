#!/usr/bin/env bash
# The per-detector numbers of calofm-fm-1's model card, from the repository root:
#   studies/fm-1/card.sh [MODEL [LABEL]]       (default: the shipped fm-1, label = MODEL's name)
# For every pre-training detector, generate 500 electrons (1-100 GeV log-uniform, normal incidence)
# and evaluate them against the held-out Geant4 test file. The file's 1000 showers are split in halves of
# 500: the model is compared with half A, half B with half A gives the Geant4 floor. The metrics are the
# six-observable GM, the high-level classifier AUC, and FPD/KPD.
# Writes runs/fm-1/card/LABEL/DETECTOR/{generated.h5,metrics.json,report.md}; skips what exists.
set -euo pipefail
model=${1:-fm-1}
label=${2:-$(basename "$model")}
calofm=${CALOFM:-.venv/bin/calofm}
data=${FM1_DATA:-runs/fm-1/data}
out=runs/fm-1/card/$label
for preset in par04-siw ild-w ild-pb pbwo4 lar-pb; do
  mkdir -p $out/$preset
  [ -f $out/$preset/generated.h5 ] || $calofm generate --model "$model" --detector $preset-e- --n 500 \
    --energy loguniform:1:100 --seed 7 --out $out/$preset/generated.h5
  [ -f $out/$preset/metrics.json ] || $calofm evaluate --generated $out/$preset/generated.h5 \
    --reference $data/test/$preset-e-.h5 --metrics distances,classifier,fpd --classifiers high \
    --out $out/$preset
done
