#!/usr/bin/env bash
# The README's walkthrough for a detector described in YAML (examples/my-wsci.yaml), timed step by step:
#   examples/own-detector.sh [OUT]          (default runs/my-wsci)
# measure the sampling fraction -> simulate 300 + 500 Geant4 electrons -> adapt fm-1 (full fine-tuning) and re-distil fm-1-fast -> generate and
# evaluate against the 500 -> export the one-step student as ONNX. Prints the wall time of each step.
set -euo pipefail
out=${1:-runs/my-wsci}
calofm=${CALOFM:-.venv/bin/calofm}
step() { local t0=$SECONDS; "$@"; echo "== $(( SECONDS - t0 )) s: ${*:1:2}"; }
step $calofm detectors --measure examples/my-wsci.yaml   # the YAML states what this measured (sampling_fraction)
step $calofm simulate --detector examples/my-wsci.yaml --particle e- --energy loguniform:1:100 --n 300 --seed 1 \
  --workers 2 --out $out/train.h5
step $calofm simulate --detector examples/my-wsci.yaml --particle e- --energy loguniform:1:100 --n 500 --seed 2 \
  --workers 2 --out $out/test.h5
step $calofm adapt --from fm-1 --data $out/train.h5 --strategy full --steps 300 --batch-size 64 \
  --distil fm-1-fast --distil-steps 300 --out $out/adapted
step $calofm generate --model $out/adapted --detector my-wsci --n 500 --energy loguniform:1:100 --out $out/gen.h5
step $calofm evaluate --generated $out/gen.h5 --reference $out/test.h5 --out $out/eval
step $calofm export --model $out/adapted/fast --out $out/my-wsci.onnx
