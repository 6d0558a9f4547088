# Set-up and entry points. `make serve` and `make test` each (re)build the virtual environment
# first when it is missing or older than pyproject.toml, then run.
#
# torch is pinned to the CPU build that lies on this machine's disk, in the same pip command as
# everything else, so nothing resolves a multi-GB CUDA build. GPU users override it:
#   make serve TORCH='torch==2.9.1'      (or TORCH=torch for the newest CUDA build)

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= dev,tracing,bench,tune,ray
ARGS ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist): one per core of the 2-core CI machine; each test module stays on
# one process (--dist loadfile), so a module's shared server starts once. PYTEST_WORKERS=0: serial.
PYTEST_WORKERS ?= 2

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup serve test lint bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[$(EXTRAS)]"
	@echo "$(TORCH) [$(EXTRAS)]" > $(STAMP)

serve: $(STAMP)
	$(BIN)/python serve.py $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Re-run the benchmark campaigns of docs/benchmarks.md and rewrite it (tens of minutes on a
# 2-core CPU; run it on an idle machine). BENCH_ARGS is passed on, e.g. BENCH_ARGS='--only tiny'.
bench: $(STAMP)
	$(BIN)/python -m vllm_hydra.benchmarks.report $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
