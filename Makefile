# ZooScope: `make run` sets up and starts the app; `make test` sets up and runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench

setup: $(STAMP)

# Installs only when a requirements file is newer than the last install.
$(STAMP): requirements.txt requirements-dev.txt requirements-batch.txt requirements-shrink.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements-dev.txt
	touch $(STAMP)

# malloc.env: glibc keeps forward-pass memory for reuse (batch forwards about 2x faster on the CPU).
run: setup
	env $$(grep -v '^#' malloc.env | xargs) $(BIN)/streamlit run app.py

# Two pytest-xdist workers: the browser tests on one, the app tests on one, the unit tests on both
# (tests/conftest.py groups them); about 12.5 minutes on 2 cores against 17 in one process.
test: setup
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# Ruff (lint and format), then mypy over core, ui, pages and app.py (pyproject.toml's [tool.mypy]).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Every bench/bench_*.py, each in its own process; writes BENCHMARKS.md (the soak and Choose's whole-catalogue run take most of its time).
bench: setup
	$(BIN)/python bench/run_all.py
