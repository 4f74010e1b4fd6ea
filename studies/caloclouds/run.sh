#!/usr/bin/env bash
# The CaloClouds II transfer study end to end, from the repository root:
#   studies/caloclouds/run.sh cpu|gpu [WORKERS]
# 1. Geant4: ild-w photons 10-90 GeV with pre-clustered points; par04-siw electrons log-uniform
#    1-1000 GeV (voxels only: the point-cloud family smears them into points), train and test files.
# 2. Pre-training on ild-w: ShowerFlow (points per layer), then PointWise (the points).
# 3. calofm study: every strategy x size x seed; runs/caloclouds-SCALE/study/report.md.
# Every step resumes where it stopped when the script is run again.
set -euo pipefail
scale=${1:-cpu}
workers=${2:-2}
calofm=${CALOFM:-.venv/bin/calofm}
here=studies/caloclouds
data=runs/caloclouds-$scale/data
case $scale in
  cpu) n_ild=1200 n_train=600 n_test=400 ;;
  gpu) n_ild=20000 n_train=10000 n_test=5000 ;;
  *) echo "usage: $0 cpu|gpu [WORKERS]" >&2; exit 2 ;;
esac
$calofm simulate --detector ild-w --particle gamma --energy uniform:10:90 --n $n_ild --points --seed 1 \
  --workers "$workers" --out $data/ild-w-gamma.h5
$calofm simulate --detector par04-siw --particle e- --energy loguniform:1:1000 --n $n_test --seed 3 \
  --workers "$workers" --out $data/par04-siw-e-test.h5
$calofm simulate --detector par04-siw --particle e- --energy loguniform:1:1000 --n $n_train --seed 2 \
  --workers "$workers" --out $data/par04-siw-e-train.h5
$calofm train --config $here/showerflow-$scale.yaml
$calofm train --config $here/pointwise-$scale.yaml
$calofm study --config $here/study-$scale.yaml
