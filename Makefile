# The same targets run on a laptop and in CI.
#   make setup   create .venv and install the locked dependencies
#   make demo    set up, then run the main job (the replay; see README) and leave the UI up
#   make stop    stop the Prefect server that `make demo` left running
#   make test    set up, then lint, type-check and run the whole test suite
#   make bench   set up, then every benchmark ratio with its target (docs/scale.md)
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1

.PHONY: setup demo stop test lint typecheck audit pytest lock clean bench bench-gpu

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; Keel needs Python 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The main job: a local Prefect server, then the replay of 2016-07..2017-08 with three
# retraining strategies (15 to 25 minutes on 2 cores, setup included;
# see README "Figures"). The server keeps running: `make stop`.
demo: setup
	$(BIN)/keel demo

stop:
	$(BIN)/keel server stop

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy keel tasks flows

pytest: setup
	$(BIN)/python -m pytest

# pip-audit on requirements.lock against PyPI's JSON API, at most 10 minutes; fails on a known
# vulnerability not listed with a reason in docs/reliability.md, and when PyPI cannot be reached.
audit: setup
	$(BIN)/python scripts/audit.py

test: lint typecheck audit pytest

# Every stage against its bare baseline at 1M synthetic rows (< 20 min on 2 cores; needs the
# local PostgreSQL): prints each ratio with its target and writes reports/bench/latest.json.
bench: setup
	$(BIN)/python benchmarks/run_all.py

# GPU vs CPU training and SHAP at 1M and 10M rows; needs only xgboost, numpy and pandas and an
# NVIDIA GPU (exits with a message without one).
bench-gpu:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,python3) benchmarks/gpu.py

# Re-pin every dependency after editing pyproject.toml (needs network access to PyPI).
lock:
	rm -rf /tmp/keel-lock && $(PYTHON) -m venv /tmp/keel-lock
	/tmp/keel-lock/bin/pip install --quiet ".[dev]"
	/tmp/keel-lock/bin/pip freeze --exclude-editable | grep -v '^keel' > requirements.lock

clean:
	rm -rf $(VENV) .keel data/interim data/features models reports
