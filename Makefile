# Quick start: `make demo` runs the main job, `make test` runs every check CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py $(wildcard sync/*.py) | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/edgesync demo

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n 2 --dist loadfile
	$(BIN)/edgesync sim sweep --seeds 1000 --jobs 2

bench: $(VENV)/.installed
	$(BIN)/python bench/crdt_bench.py
	$(BIN)/python bench/storage_bench.py
	$(BIN)/python bench/gossip_bench.py
	$(BIN)/python bench/sim_bench.py
	$(BIN)/python bench/status_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
