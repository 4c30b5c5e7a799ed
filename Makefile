# Two entry points: `make demo` and `make test`. Each creates or updates .venv from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
BRIDGE_VERSION := 0.3.1
STAMP := $(VENV)/.stamp-install

.PHONY: venv test demo clean

venv: $(STAMP)

# Reinstall when the dependency list changes. torch: a machine with a CUDA build already
# importable keeps it; elsewhere the pinned CPU wheel (a local file on the CPU machines).
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if $(PY) -c "import torch" 2>/dev/null; then \
	    echo "[setup] torch $$($(PY) -c 'import torch; print(torch.__version__)') already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	    $(PIP) install -q "torch>=2.6"; \
	else \
	    $(PIP) install -q torch==2.13.0; \
	fi
	$(PIP) install -q -e '.[bridge,dev]'
	$(PIP) install -q --no-deps megatron-bridge==$(BRIDGE_VERSION)
	@touch $(STAMP)

test: venv
	$(PY) -m pytest -q tests

# Self-improving vs next-token pretraining on the synthetic world (rlpt demo --help for knobs).
DEMO_OUT ?= runs/demo
demo: venv
	$(PY) -m rlpt_plugin.cli demo --out $(DEMO_OUT) $(DEMO_ARGS)

clean:
	rm -rf $(VENV)
