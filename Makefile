# Entry points: `make demo` and `make test` (Python 3.11, megatron-core 0.16.1, Bridge 0.3.1, in
# .venv) and `make test-latest` (Python 3.12, megatron-core 0.19.2, Bridge 0.6.2, in .venv-latest).
# Each creates or updates its venv from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
BRIDGE_VERSION := 0.3.1
STAMP := $(VENV)/.stamp-install

# The latest stack: megatron-core >= 0.17 and Bridge >= 0.4 exist for Python 3.12 only (pyenv's
# 3.12 here). Every package is pinned by requirements-latest.txt. torch 2.14.1 is PyPI's CUDA
# build (runs on the CPU); its CUDA libraries come from this machine's local wheel mirror.
LATEST_VENV := .venv-latest
LATEST_PYTHON ?= $(shell pyenv prefix 3.12 2>/dev/null || echo /usr)/bin/python3.12
LATEST_PY := $(LATEST_VENV)/bin/python
LATEST_PIP := $(LATEST_PY) -m pip --disable-pip-version-check
LATEST_LOCK := requirements-latest.txt
LATEST_STAMP := $(LATEST_VENV)/.stamp-install

.PHONY: venv test test-servers demo clean venv-latest test-latest

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
	$(PY) -m pytest -q tests -m "not servers"

# The server tier (tests/servers, README "Real inference server"): llama.cpp's OpenAI-protocol
# server from llama-cpp-python[server], compiled once from the pinned sdist (CPU only, no
# multimodal library, -O1: minutes, not tens of minutes) into LLAMA_WHEELS, a machine-wide
# cache outside the checkout, so a clean clone on the same machine reuses the wheel.
LLAMA_CPP_PYTHON_VERSION := 0.3.36
GGUF_VERSION := 0.19.0
LLAMA_WHEELS ?= $(HOME)/.cache/rlpt_plugin/wheels
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DCMAKE_C_FLAGS_RELEASE=-O1 -DCMAKE_CXX_FLAGS_RELEASE=-O1
SERVERS_STAMP := $(VENV)/.stamp-servers-$(LLAMA_CPP_PYTHON_VERSION)

$(SERVERS_STAMP): $(STAMP)
	@mkdir -p $(LLAMA_WHEELS)
	@if ! ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_CPP_PYTHON_VERSION)-*.whl >/dev/null 2>&1; then \
	    echo "[servers] compiling llama-cpp-python $(LLAMA_CPP_PYTHON_VERSION) into $(LLAMA_WHEELS) (once per machine)"; \
	    start=$$(date +%s); \
	    CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' $(PIP) wheel -q --no-deps -w $(LLAMA_WHEELS) \
	        llama-cpp-python==$(LLAMA_CPP_PYTHON_VERSION) || exit 1; \
	    echo "[servers] compiled in $$(( $$(date +%s) - start ))s"; \
	fi
	$(PIP) install -q --find-links $(LLAMA_WHEELS) --only-binary llama-cpp-python \
	    'llama-cpp-python[server]==$(LLAMA_CPP_PYTHON_VERSION)' gguf==$(GGUF_VERSION)
	@touch $@

test-servers: $(SERVERS_STAMP)
	$(PY) -m pytest -q -m servers tests/servers

venv-latest: $(LATEST_STAMP)

$(LATEST_STAMP): pyproject.toml Makefile $(LATEST_LOCK)
	@test -x $(LATEST_PY) || $(LATEST_PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_PIP) install -q -c $(LATEST_LOCK) -e '.[bridge,dev]'
	$(LATEST_PIP) install -q --no-deps -c $(LATEST_LOCK) megatron-bridge
	@touch $(LATEST_STAMP)

# The whole suite but the `evidence` tier (two small demo runs, about half of `make test`'s time;
# `make test` runs them), so that .ci/run stays well under 30 minutes with both venvs built.
test-latest: venv-latest
	$(LATEST_PY) -m pytest -q tests -m "not evidence"

# Self-improving vs next-token pretraining on the synthetic world (rlpt demo --help for knobs).
DEMO_OUT ?= runs/demo
demo: venv
	$(PY) -m rlpt_plugin.cli demo --out $(DEMO_OUT) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(LATEST_VENV)
