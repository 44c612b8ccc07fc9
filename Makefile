# Two commands matter: `make demo` (set up, fetch data, run the quick tour) and `make test`.
# TORCH selects the torch build: the default takes the CPU wheel this kind of machine has on local disk; on a CUDA
# machine use e.g. `make demo TORCH='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PRESET ?= quick
BIN := $(VENV)/bin
STAMP := $(VENV)/.kexue-installed

.PHONY: setup data demo test test-all lint bench clean

# torch goes in first and is then pinned by a constraint, so no later install can swap in another (multi-GB) build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > $(VENV)/torch-pin.txt
	$(BIN)/python -m pip install --quiet -c $(VENV)/torch-pin.txt -e ".[dev,text]"
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(BIN)/kexue data fetch

demo: data
	$(BIN)/kexue tour --preset $(PRESET)

test: data
	$(BIN)/pytest -q

test-all: data
	$(BIN)/pytest -q -m "not gpu and not bench"

# Benchmarks (never in CI; run them on a quiet machine). The EMA peers go in with --no-deps: timm's dependencies
# would replace the CPU torch (benchmarks/bench_ema.py loads timm's EMA file by path). The malloc settings keep glibc
# from unmapping large buffers after every call (peers and kexue run in the same process, under the same settings);
# OMP_WAIT_POLICY=PASSIVE is left out: sleeping OpenMP threads tripled the per-token decode times.
bench: export MALLOC_MMAP_THRESHOLD_ = 4294967296
bench: export MALLOC_TRIM_THRESHOLD_ = 68719476736
bench: setup
	$(BIN)/python -m pip install --quiet --no-deps "ema-pytorch>=0.7,<1" "timm>=1.0,<2"
	for b in ot ema attention flyvec nvae; do $(BIN)/python benchmarks/bench_$$b.py || exit 1; done

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
