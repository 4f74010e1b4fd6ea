# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all bench gpu-campaign gpu-wheels clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# the CPU build of torch that lies on these machines; never let pip pull a CUDA build
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[test,cluster]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/calofm demo --out demo-report

# lint first (ruff: line length, unused imports, import order; config in pyproject.toml), then the
# tests on two workers (the CI machine's cores), one test file each at a time: file-scoped fixtures stay shared
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m ''

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_simulate.py
	$(BIN)/python benchmarks/bench_evaluate.py
	$(BIN)/python benchmarks/bench_generate.py

# The GPU campaign (benchmarks/gpu_campaign.py, at most 9 minutes on one H100): results.json, report.md
# and plots into CAMPAIGN_OUT, showers and runs into CAMPAIGN_WORK. On the device machine, which has
# PyTorch but no internet, the packages it lacks come as wheels in .whl: run `make gpu-wheels` here first.
CAMPAIGN_OUT ?= studies/gpu-campaign
CAMPAIGN_WORK ?= /tmp/calofm-gpu-campaign
gpu-campaign:
	benchmarks/gpu_campaign.sh $(CAMPAIGN_OUT) $(CAMPAIGN_WORK) $(CAMPAIGN_ARGS)

# the wheels the device machine lacks (its Python is 3.12; it has torch, h5py, scipy, peft, onnx ...)
GPU_WHEELS := geant4-pybind==0.1.3 zuko==1.6.0 mplhep==1.3.3 mplhep-data==0.1.0 uhi==1.2.1
gpu-wheels:
	$(PYTHON) -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
		--platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

clean:
	rm -rf $(VENV) demo-report .pytest_cache
