# xfleet: `make demo` and `make test` each set up everything they need on a fresh Debian 12.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv deps-test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/xfleet demo

# Debian packages the test suite needs: a real sshd and tmux for the transport and TUI tests,
# qemu/mmdebstrap for the lab of real OpenZFS nodes (whose image is built once and cached).
deps-test:
	@bash scripts/test-deps.sh
	@sh scripts/lab-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check xfleet tests
	$(BIN)/mypy

# everything but the lab (quick inner loop)
unit: $(STAMP)
	$(BIN)/pytest -q

# the whole suite: lab of real OpenZFS VMs included (image built once, cached in ~/.cache/xfleet)
test: $(STAMP) deps-test lint
	XFLEET_LAB=1 $(BIN)/pytest -q --durations=25

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf .xfleet .pytest_cache .mypy_cache .ruff_cache
