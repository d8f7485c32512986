# Two commands do everything on a fresh machine: `make run` and `make test`.
# Both create the pinned virtual environment in .venv first if it is missing.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
LOGDIR ?= runs/quickstart

.PHONY: install run test lint format benchmark

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(PY) -m dreamer_lsp --configs dmc_proprio dreamer quickstart --logdir $(LOGDIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q -n auto --maxschedchunk 1

benchmark: $(VENV)/.installed
	$(PY) -m tools.benchmark

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .
