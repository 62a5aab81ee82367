# Developer entry points. `make demo` and `make test` work on a fresh clone:
# the first run creates .venv and installs roitrack with its test extras.

# Interpreter that creates .venv; it must be Python 3.11 or newer.
PYTHON3 ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
# Written after a successful install, so an interrupted install is retried.
INSTALL_STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
# Extra options of `make bench`, for example BENCH_ARGS="--repeats 5".
BENCH_ARGS ?=

.PHONY: venv demo test lint test-faults test-fuzz bench bench-collector

venv: $(INSTALL_STAMP)

# Reinstall when pyproject.toml is newer than the last install. An existing
# .venv is reused as it is rather than created again.
$(INSTALL_STAMP): pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON3) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install -e '.[test]'
	touch $(INSTALL_STAMP)

demo: venv
	$(VENV)/bin/roitrack demo --summary artifacts/demo-summary.json

test: venv
	$(VENV_PYTHON) -m pytest

lint: venv
	$(VENV_PYTHON) -m mypy
	$(VENV)/bin/ruff check schemas streams roitrack tests tools bench

# The fault-injection and fuzz suites: minutes each, so not part of `make test`.
test-faults: venv
	$(VENV_PYTHON) -m pytest -m faults

test-fuzz: venv
	$(VENV_PYTHON) -m pytest -m fuzz

# The benchmark harness (about 10 minutes on 2 cores); results go to artifacts/bench/.
# See docs/benchmarks.md.
$(BENCH_STAMP): $(INSTALL_STAMP)
	$(VENV_PYTHON) -m pip install -e '.[test,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(VENV_PYTHON) -m bench $(BENCH_ARGS)

# The collector's packing windows: HTTP requests, Kafka messages and the worker's
# rate on what the collector wrote (about 2 minutes); results go to artifacts/bench-collector/.
bench-collector: $(BENCH_STAMP)
	$(VENV_PYTHON) -m bench.collector $(BENCH_ARGS)
