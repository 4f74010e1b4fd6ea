#!/usr/bin/env bash
# The Geant4 showers of calofm-fm-1, from the repository root:
#   studies/fm-1/simulate.sh [WORKERS]
# Electrons and photons, 1-100 GeV log-uniform, in five pre-training presets. They span tungsten, lead,
# PbWO4 and liquid argon, silicon and liquid-argon sampling and a homogeneous crystal, and Moliere
# radii of 10.6-30 mm:
#   - par04-siw, ild-w, ild-pb, pbwo4, lar-pb;
#   - each gets a normal-incidence file and an inclined one (theta 70-110 degrees).
# par04-scipb (lead + scintillator, with Birks' law: an active material no pre-training detector has)
# is held out as the example new detector: a training pool and a test file, normal incidence.
# Every pre-training detector also gets an electron test file for the model card.
# Same seed -> same showers. A finished file is not simulated again; a killed one resumes.
set -euo pipefail
workers=${1:-2}
calofm=${CALOFM:-.venv/bin/calofm}
data=${FM1_DATA:-runs/fm-1/data}
energy=loguniform:1:100
inclined=uniform:1.2217:1.9199   # 70-110 degrees
seed=100
for preset in par04-siw ild-w ild-pb pbwo4 lar-pb; do
  for particle in e- gamma; do
    $calofm simulate --detector $preset --particle $particle --energy $energy --n 1200 --seed $((seed += 1)) \
      --workers "$workers" --out $data/$preset-$particle.h5
    $calofm simulate --detector $preset --particle $particle --energy $energy --theta $inclined --n 300 \
      --seed $((seed += 1)) --workers "$workers" --out $data/$preset-$particle-inclined.h5
  done
  $calofm simulate --detector $preset --particle e- --energy $energy --n 1000 --seed $((seed += 1)) \
    --workers "$workers" --out $data/test/$preset-e-.h5
done
$calofm simulate --detector par04-scipb --particle e- --energy $energy --n 1000 --seed 201 \
  --workers "$workers" --out $data/par04-scipb-e-.h5
$calofm simulate --detector par04-scipb --particle e- --energy $energy --n 1000 --seed 202 \
  --workers "$workers" --out $data/test/par04-scipb-e-.h5
