# `make demo` and `make test` work on a fresh clone: each builds .venv first if it is missing or stale.
# torch is pinned through constraints.txt (torch==2.13.0, the CPU wheel) so no step ever pulls a CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt
PYTEST_ARGS ?=
# Python's bytecode caches, and pytest's caches of rewritten test modules, are written as Python does by default:
# where the environment sets PYTHONDONTWRITEBYTECODE, every interpreter make test starts would compile loraguard
# and rewrite Hypothesis's modules again (about 4 s of CPU per pytest process; benchmarks/suite_time_bench.py).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test lint test-slow bench clean

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	DS_BUILD_OPS=0 $(PIP) -e '.[peft,deepspeed,loralib,matrix,torchtune,adapters,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loraguard demo

# The layers (docs/architecture.md), lint, formatting and types (mypy) are checked before the tests run.
lint: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The slowest tests are collected first (tests/conftest.py, from tests/durations.json: refresh it with
# `benchmarks/suite_time_bench.py --record`); --maxschedchunk 1 hands tests out one at a time, so the long ones
# alternate between the two workers and the short ones left at the end make both finish together.
test: lint
	$(BIN)/python -m pytest -n 2 --maxschedchunk 1 -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# Every benchmarks/*_bench.py, one after the other; each prints its figures against its target. `make -k bench`
# goes on past a failing one.
BENCHES := $(sort $(wildcard benchmarks/*_bench.py))
.PHONY: $(BENCHES:%=run-%)
bench: $(BENCHES:%=run-%)
$(BENCHES:%=run-%): run-%: $(STAMP)
	$(BIN)/python $*

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
