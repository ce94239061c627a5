# khmer-ocr: `make run` runs the main job (the local platform end to end), `make test` runs the tests.
# Both set up what is missing first; `make stop` stops what `make run` (and `make run-distributed`) started.
# `make run-distributed`: the same platform in the production topology of docker-compose.yml (PostgreSQL, Redis,
# S3, Airflow on Celery workers) as local processes (docs/production.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STATE ?= .khmer-ocr
DIST_STATE ?= .khmer-ocr-distributed
# This machine keeps a CPU build of torch 2.13.0 on disk: pin it so pip takes that file, not a multi-GB CUDA
# build. Elsewhere pip picks the build the platform offers.
TORCH_PIN := $(if $(wildcard /opt/wheels/torch-2.13.0*.whl),-c requirements/torch-local.txt,)
PIP := $(BIN)/python -m pip install -q -c requirements/constraints.txt $(TORCH_PIN)
QUIET_PIP := 2>&1 | { grep -v -E "is ignored: it is neither|BuildBackendWarning|^ *return|^ *!!|\*{8}|Please be careful|name as your package|with strategy|^ *$$" || true; }
STAMP := $(VENV)/.installed

.PHONY: setup system venv fonts run run-distributed stop test lint bench clean

setup: system venv fonts

system:
	@bash infra/setup/system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt requirements/torch-local.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing Python packages into $(VENV) (versions pinned by requirements/constraints.txt)"
	@set -o pipefail; $(PIP) "torch>=2.4" $(QUIET_PIP)
	@set -o pipefail; $(PIP) -e ".[serve,airflow,distributed,dev]" $(QUIET_PIP)
	@touch $(STAMP)

# Google's Khmer font families (OFL) from the npm registry's Fontsource packages: more training fonts.
fonts: venv
	@$(BIN)/khmer-ocr fonts --install > /dev/null

run: setup
	@$(BIN)/khmer-ocr platform run --state $(STATE)

run-distributed: setup
	@$(BIN)/khmer-ocr platform run --distributed --state $(DIST_STATE)

stop:
	@test -x $(BIN)/khmer-ocr && $(BIN)/khmer-ocr platform down --state $(STATE) || true
	@test -x $(BIN)/khmer-ocr && $(BIN)/khmer-ocr platform down --distributed --state $(DIST_STATE) || true

test: setup lint
	@$(BIN)/python -m pytest -q tests

lint: venv
	@$(BIN)/ruff check khmer_ocr tests bench serving dags plugins
	@$(BIN)/ruff format --check khmer_ocr tests bench serving dags plugins

# BENCH_DATA=data/reference: the dataset bench/peers.py and bench/robustness.py read (default: a small one each generates)
BENCH_DATA ?=

bench: setup
	@bash infra/setup/bench-deps.sh
	@$(BIN)/python bench/generation.py
	@$(BIN)/python bench/training.py
	@$(BIN)/python bench/inference.py
	@$(BIN)/python bench/rest.py
	@$(BIN)/python bench/peers.py $(if $(BENCH_DATA),--data $(BENCH_DATA),)
	@$(BIN)/python bench/robustness.py $(if $(BENCH_DATA),--data $(BENCH_DATA),)
	@$(BIN)/python bench/pages.py

clean:
	rm -rf $(STATE) $(DIST_STATE)
