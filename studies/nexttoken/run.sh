#!/usr/bin/env bash
# The next-token foundation model's additive-growth sequence end to end, from the repository root:
#   studies/nexttoken/run.sh cpu|gpu [WORKERS]
# 1. Geant4: photons and electrons in ild-w, ild-ta and ild-pb (train and test files).
# 2. Pre-training of the next-token mixture of experts on photons in W and Ta.
# 3. calofm study (a sequence): an expert for photons in Pb, LoRA + heads for electrons in W, then
#    experts for electrons in Ta and Pb; runs/nexttoken-SCALE/sequence/report.md.
# Every step resumes where it stopped when the script is run again.
set -euo pipefail
scale=${1:-cpu}
workers=${2:-2}
calofm=${CALOFM:-.venv/bin/calofm}
here=studies/nexttoken
data=runs/nexttoken-$scale/data
case $scale in
  cpu) energy=uniform:2:8 n_train=1200 n_test=400 ;;
  gpu) energy=uniform:10:90 n_train=20000 n_test=5000 ;;
  *) echo "usage: $0 cpu|gpu [WORKERS]" >&2; exit 2 ;;
esac
for particle in gamma e-; do
  for detector in ild-w ild-ta ild-pb; do
    $calofm simulate --detector $detector --particle $particle --energy $energy --n $n_train --seed 3 \
      --workers "$workers" --out $data/$detector-$particle.h5
    $calofm simulate --detector $detector --particle $particle --energy $energy --n $n_test --seed 4 \
      --workers "$workers" --out $data/$detector-$particle-test.h5
  done
done
$calofm train --config $here/pretrain-$scale.yaml
$calofm study --config $here/sequence-$scale.yaml
