#!/usr/bin/env bash
# Electromagnetic -> hadronic transfer end to end, from the repository root:
#   studies/hadronic/run.sh cpu|gpu [WORKERS]
# 1. Geant4 (offline FTFP_BERT for the pions): electrons and photons (pre-training) and pi+ (target,
#    train and test files) in the ild-ecal-hcal preset: the Si-W ECAL then the steel/scintillator HCAL.
# 2. Pre-training of CaloDREAM++ (energy network + ViT over the two grids, flow matching) on the
#    electrons and photons, whose showers stay in the ECAL.
# 3. calofm study: scratch, full fine-tuning and LoRA on pi+ (GPU: also re-initialised embeddings), whose
#    energy lies mostly in the HCAL; runs/hadronic-SCALE/study/report.md.
# Every step resumes where it stopped when the script is run again.
set -euo pipefail
scale=${1:-cpu}
workers=${2:-2}
calofm=${CALOFM:-.venv/bin/calofm}
here=studies/hadronic
data=runs/hadronic-$scale/data
case $scale in
  cpu) energy=uniform:5:30 n_em=800 n_train=500 n_test=400 ;;
  gpu) energy=uniform:10:90 n_em=20000 n_train=10000 n_test=5000 ;;
  *) echo "usage: $0 cpu|gpu [WORKERS]" >&2; exit 2 ;;
esac
for particle in e- gamma; do
  $calofm simulate --detector ild-ecal-hcal --particle $particle --energy $energy --n $n_em --seed 1 \
    --workers "$workers" --out $data/$particle.h5
done
$calofm simulate --detector ild-ecal-hcal --particle pi+ --energy $energy --n $n_train --seed 2 \
  --workers "$workers" --out $data/pi+.h5
$calofm simulate --detector ild-ecal-hcal --particle pi+ --energy $energy --n $n_test --seed 3 \
  --workers "$workers" --out $data/pi+-test.h5
$calofm train --config $here/pretrain-$scale.yaml
$calofm study --config $here/study-$scale.yaml
