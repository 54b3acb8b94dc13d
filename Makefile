# xfleet: `make demo` and `make test` each set up everything they need on a fresh Debian 12.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv deps-test lint typecheck unit lab-image bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/xfleet demo

# Debian packages the test suite needs: a real sshd and tmux for the transport and TUI tests,
# PostgreSQL for the shared mirror (the suite starts its own servers: tests/pgserver.py),
# qemu/mmdebstrap for the lab of real OpenZFS nodes (whose image is built once and cached).
deps-test:
	@bash scripts/test-deps.sh
	@sh scripts/lab-deps.sh

# ruff, mypy --strict, and the import contracts of pyproject.toml (the layers, and no UI
# library below the faces: docs/architecture.md)
lint: $(STAMP)
	$(BIN)/ruff check xfleet tests tools benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# Everything but the lab (quick inner loop), in 3 pytest-xdist workers on the 2 cores: many
# tests wait on subprocesses and sshd, so a third worker cut the wall time ~25 % (196 s vs 242-280 s).
UNIT_JOBS ?= 3
unit: $(STAMP)
	$(BIN)/pytest -q -n $(UNIT_JOBS) -m "not lab" --durations=15

# The lab image (built once, cached in ~/.cache/xfleet/lab; a cold build takes 5-15 min).
lab-image: $(STAMP) deps-test
	$(BIN)/xfleet lab build

# The whole suite: the unit part in parallel, then the lab of real OpenZFS VMs (one session:
# its VMs are shared, so it runs serially; the time per lab module is printed at the end).
test: $(STAMP) deps-test lint lab-image
	$(BIN)/pytest -q -n $(UNIT_JOBS) -m "not lab" --durations=15
	XFLEET_LAB=1 $(BIN)/pytest -q -m lab --durations=25

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf .xfleet .pytest_cache .mypy_cache .ruff_cache
