#!/usr/bin/env bash
# make gpu-campaign: benchmarks/gpu_campaign.py with the Python that has the project's packages.
#   benchmarks/gpu_campaign.sh OUT WORK [campaign options]
# The project's .venv runs it where there is one; on the device machine (PyTorch with CUDA, no
# internet, no .venv) the packages it lacks travel as wheels in .whl (`make gpu-wheels` here) and are
# installed into /tmp/site.
set -euo pipefail
out=$1 work=$2
shift 2
if [ -x .venv/bin/python ]; then
  python=.venv/bin/python
elif [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
  python=python3
else
  echo "gpu-campaign: no .venv (make .venv/.installed) and no wheels in .whl (make gpu-wheels)" >&2
  exit 2
fi
exec "$python" benchmarks/gpu_campaign.py --out "$out" --work "$work" "$@"
