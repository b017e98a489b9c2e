# The README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test check bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "numgate needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(DEV_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@ $(STAMP)

## run: sandbox numgate on http://127.0.0.1:8080 (SQLite under ./var, demo tenant, keys printed)
run: $(STAMP)
	NUMGATE_CALLBACK_ALLOW=$${NUMGATE_CALLBACK_ALLOW:-loopback} $(BIN)/numgate demo

## test: the whole suite (SQLite; PostgreSQL too when NUMGATE_TEST_POSTGRES_URL is set)
test: $(DEV_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## check: format, lint and types
check: $(DEV_STAMP)
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: $(DEV_STAMP)
	$(BIN)/python bench/numbercheck_e2e.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
