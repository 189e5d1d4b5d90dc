# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.retain-installed
DEMO_DIR ?= demo_out
export BENTOML_DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: venv test test-fast test-artifacts lint demo bench clean

$(STAMP): pyproject.toml training/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q -c training/constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest-xdist workers: most tests wait on servers and subprocesses, so two workers keep
# both cores busy. Each test module runs whole on one worker (tests/conftest.py schedules
# `--dist loadfile` by module, plus its XDIST_GROUPS); `PYTEST_WORKERS=0` runs serially.
PYTEST_WORKERS ?= 2
XDIST := -n $(PYTEST_WORKERS) --dist loadfile

# One throwaway PostgreSQL cluster serves the whole run (tests/postgres_server.py; Debian's
# `postgresql` package), its URL exported as RETAIN_TEST_POSTGRES_URL; each xdist worker
# works in a database of its own on it (tests/conftest.py `postgres_url`).
test: lint
	$(BIN)/python tests/postgres_server.py -- $(BIN)/pytest -q $(XDIST)

# The edit-test loop: everything but the tests marked slow or server (see README).
# Serial: its tests are CPU-bound, so two workers on two cores are no faster.
test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not server"

# Only the deployable-artifact tests (part of `make test` too): the bento served and the
# MLflow model loaded from a virtualenv of their own pinned requirements, and retain's own
# wheel installed and run outside the checkout (tests/test_wheel.py) (one shared venv,
# about 30-65 s to build on this machine; pip downloads, its HTTP cache stays empty here).
test-artifacts: $(STAMP)
	$(BIN)/pytest -q tests/training/test_pins.py tests/serving/test_bento.py \
	  tests/serving/test_pyfunc_isolated.py tests/serving/test_compiled_fallback.py \
	  tests/test_wheel.py

# The main job end to end on the built-in synthetic log; everything lands in $(DEMO_DIR)/
# (MLflow's sqlite store and artifacts included). The promotion gate may refuse the new
# model (it must beat the baselines); the demo then scores with the challenger and says so.
R := $(CURDIR)/$(BIN)/retain
demo: $(STAMP)
	mkdir -p $(DEMO_DIR)
	cd $(DEMO_DIR) && $(R) synth --customers 2000 --seed 7 --out purchases.parquet --truth truth.parquet
	cd $(DEMO_DIR) && $(R) kpis --data purchases.parquet --from 2024-01-01 --to 2025-01-01 --format json --out kpis.json
	cd $(DEMO_DIR) && $(R) kpis --data purchases.parquet --from 2024-01-01 --to 2025-01-01
	cd $(DEMO_DIR) && $(R) segments --data purchases.parquet --as-of 2025-01-01
	cd $(DEMO_DIR) && $(R) features --data purchases.parquet --as-of 2025-01-01 --out features.parquet
	cd $(DEMO_DIR) && $(R) train --data purchases.parquet --as-of 2024-10-01 --horizon 90
	cd $(DEMO_DIR) && if $(R) promote; then alias=champion; else alias=challenger; \
	    echo "demo: promotion refused (reasons above); scoring with the challenger"; fi; \
	  $(R) models && \
	  $(R) score --data purchases.parquet --as-of 2025-01-01 --out scores \
	    --model-uri models:/retain@$$alias --features-out feature_snapshot
	@echo "demo: the campaign the scores decided runs: its 90-day outcome window is simulated"
	cd $(DEMO_DIR) && $(R) synth --customers 2000 --seed 7 --out after_campaign.parquet \
	    --truth truth_after_campaign.parquet --campaign-scores scores --window 90
	cd $(DEMO_DIR) && $(R) lift --assignments scores --data after_campaign.parquet \
	    --exclude-unobserved --update-policy $(CURDIR)/serving/offer_policy.yaml \
	    --out policy_measured.yaml --json > lift.json
	cd $(DEMO_DIR) && $(R) report --data purchases.parquet --scores scores --lift lift.json \
	    --out report.html
	@echo "demo: outputs in $(DEMO_DIR)/ (kpis.json, features.parquet, scores/, lift.json," \
	    "policy_measured.yaml, report.html with its Campaign results section, mlflow.db)"

bench: $(STAMP)
	$(BIN)/python benchmarks/features.py --json benchmarks/results/features.json
	$(BIN)/python benchmarks/loader.py --json benchmarks/results/loader.json
	$(BIN)/python benchmarks/quality.py --json benchmarks/results/quality.json
	$(BIN)/python benchmarks/http.py --json benchmarks/results/http.json
	$(BIN)/python benchmarks/batch.py --json benchmarks/results/batch.json
	$(BIN)/python benchmarks/training.py --json benchmarks/results/training.json
	$(BIN)/python benchmarks/lift.py --json benchmarks/results/lift.json
	$(BIN)/python benchmarks/uplift.py --json benchmarks/results/uplift.json
	$(BIN)/python benchmarks/identical.py --json benchmarks/results/identical.json
	$(BIN)/python tests/postgres_server.py -- $(BIN)/python benchmarks/database.py \
	  --json benchmarks/results/database.json

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache .mypy_cache
