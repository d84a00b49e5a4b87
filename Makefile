# Vigil: `make demo` runs the agent on the bundled demo model with the TUI open;
# `make test` runs the test suite; `make lint` runs ruff, mypy and the layering contracts.
# Every target creates .venv itself and installs what it needs.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: venv deps-debian demo test test-fast fuzz lint format bench bench-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[agent,tui,dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages the integration tests start for real (sshd, Prometheus, Chromium, tmux).
# Installed only when missing, and only where we may (root, or passwordless sudo).
deps-debian:
	@bash scripts/debian-deps.sh

demo: venv
	$(BIN)/vigil demo

test: venv deps-debian
	$(BIN)/python -m pytest -q -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

# Structure-aware fuzzing (tests/fuzz) with the long budget: hypothesis profile "fuzz", random,
# 5,000-30,000 examples per target (VIGIL_FUZZ_EXAMPLES=N for N each); `make test` runs the
# same tests with a small fixed budget. Prints inputs accepted and refused per target.
fuzz: venv
	@counts=$$(mktemp -d); \
	HYPOTHESIS_PROFILE=fuzz VIGIL_FUZZ_COUNTS=$$counts $(BIN)/python -m pytest -q -n 2 \
		--dist loadfile --timeout 1800 tests/fuzz $(PYTEST_ARGS); \
	rc=$$?; rm -rf $$counts; exit $$rc

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The peers the benchmarks under bench/ measure in the same run (glances, supervisord).
bench-deps: venv
	$(BIN)/python -m pip install -q -e '.[bench]'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
