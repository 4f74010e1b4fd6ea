#!/usr/bin/env bash
# The README's walkthrough for a detector of your own, timed step by step:
#   examples/own-detector.sh [OUT] [yaml|gdml]      (default runs/my-wsci yaml)
# yaml: the detector is examples/my-wsci.yaml. gdml: the same detector written as GDML first
# (OUT/my-wsci.gdml and its sidecar OUT/my-wsci-gdml.yaml), then read from the GDML file.
# measure the sampling fraction -> simulate 300 + 500 Geant4 electrons -> adapt fm-1 (full fine-tuning) and re-distil fm-1-fast -> generate and
# evaluate against the 500 -> export the one-step student as ONNX. Prints the wall time of each step.
set -euo pipefail
out=${1:-runs/my-wsci}
route=${2:-yaml}
calofm=$(realpath "${CALOFM:-.venv/bin/calofm}")
step() { local t0=$SECONDS; "$@"; echo "== $(( SECONDS - t0 )) s: ${*:1:2}"; }
mkdir -p "$out"
case $route in
  yaml) detector=(--detector examples/my-wsci.yaml) ;;
  gdml) step bash -c "cd '$out' && '$calofm' detectors '$(realpath examples/my-wsci.yaml)' --gdml"
        detector=(--detector "$out/my-wsci.gdml" --calo-sidecar "$out/my-wsci-gdml.yaml") ;;
  *) echo "route: yaml or gdml, not $route" >&2; exit 2 ;;
esac
step $calofm detectors --measure "${detector[@]:1}"   # the detector file states what this measured (sampling_fraction)
step $calofm simulate "${detector[@]}" --particle e- --energy loguniform:1:100 --n 300 --seed 1 \
  --workers 2 --out $out/train.h5
step $calofm simulate "${detector[@]}" --particle e- --energy loguniform:1:100 --n 500 --seed 2 \
  --workers 2 --out $out/test.h5
step $calofm adapt --from fm-1 --data $out/train.h5 --strategy full --steps 300 --batch-size 64 \
  --distil fm-1-fast --distil-steps 300 --out $out/adapted
step $calofm generate --model $out/adapted --detector my-wsci --n 500 --energy loguniform:1:100 --out $out/gen.h5
step $calofm evaluate --generated $out/gen.h5 --reference $out/test.h5 --out $out/eval
step $calofm export --model $out/adapted/fast --out $out/my-wsci.onnx
