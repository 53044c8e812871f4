# Two commands a newcomer needs:  `make demo`  and  `make test`.
# Both create or reuse .venv/ in this checkout and install only what is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The CPU build of torch; asked for first so that nothing later pulls the multi-GB CUDA build.
TORCH   ?= torch==2.13.0
export SLAM_SHARED_DATA ?= $(abspath ../shared/data)

.PHONY: demo test test-install lint install clean-venv

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	@bash scripts/ensure_system_deps.sh
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)" || $(BIN)/pip install --quiet "$(TORCH)" --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/slam demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

# the package built and installed in fresh virtual environments, presets found by name (CI runs it)
test-install: $(STAMP)
	$(BIN)/python -m pytest -q -m install tests/app/test_wheel_install.py

# style, formatting and the dependency rules of docs/ARCHITECTURE.md (import-linter contracts in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check slam drivers tests bench
	$(BIN)/ruff format --check slam drivers tests bench
	$(BIN)/lint-imports

clean-venv:
	rm -rf $(VENV)
