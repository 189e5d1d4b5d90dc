# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.retain-installed
DEMO_DIR ?= demo_out
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: venv test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/retain synth --customers 5000 --seed 7 --out $(DEMO_DIR)/purchases.parquet --truth $(DEMO_DIR)/truth.parquet
	$(BIN)/retain kpis --data $(DEMO_DIR)/purchases.parquet --format json --out $(DEMO_DIR)/kpis.json
	$(BIN)/retain segments --data $(DEMO_DIR)/purchases.parquet --as-of 2025-01-01
	$(BIN)/retain features --data $(DEMO_DIR)/purchases.parquet --as-of 2025-01-01 --out $(DEMO_DIR)/features.parquet

bench: $(STAMP)
	$(BIN)/python benchmarks/features.py --json benchmarks/results/features.json
	$(BIN)/python benchmarks/loader.py --json benchmarks/results/loader.json
	$(BIN)/python benchmarks/quality.py --json benchmarks/results/quality.json
	$(BIN)/python benchmarks/http.py --json benchmarks/results/http.json
	$(BIN)/python benchmarks/batch.py --json benchmarks/results/batch.json

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
