# Two commands on a fresh machine: `make run` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) run_hub.py run

test: lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check hub tests run_hub.py bench
	$(VENV)/bin/mypy

# Figures into BENCHMARKS.md; one module: make bench BENCH=bench_mapping
bench: $(STAMP)
	$(PY) -m bench $(BENCH)

# Rewrite the hub's XSDs from the canonical models (a test fails while they differ).
schemas: $(STAMP)
	$(PY) -m hub.mappers.xsd

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache
