#!/usr/bin/env bash
# calofm-fm-1 end to end, from the repository root:
#   studies/fm-1/run.sh [WORKERS]
# 1. simulate.sh: the Geant4 showers of the five pre-training presets and of par04-scipb (held out).
# 2. sweep.py: the scaling sweep that chose the family; studies/fm-1/sweep.{md,json,png}.
# 3. pretrain.yaml: calofm-fm-1 itself (CaloDREAM++), runs/fm-1/pretrain.
# 4. distil.yaml: its one-step student calofm-fm-1-fast, runs/fm-1/fast.
# 5. card.sh: the model card's per-detector metrics of both, runs/fm-1/card/.
# 6. ship.py: both into src/calofm/shipped/, with the check the tests reproduce.
# Every step resumes where it stopped when the script is run again; the same seeds give the same showers.
set -euo pipefail
workers=${1:-2}
here=studies/fm-1
python=${PYTHON:-.venv/bin/python}
calofm=${CALOFM:-.venv/bin/calofm}
$here/simulate.sh "$workers"
$python $here/sweep.py --jobs "$workers"
OMP_NUM_THREADS=$workers $calofm train --config $here/pretrain.yaml
OMP_NUM_THREADS=$workers $calofm train --config $here/distil.yaml
$here/card.sh runs/fm-1/pretrain fm-1
$here/card.sh runs/fm-1/fast fm-1-fast
$python $here/ship.py
