# Two entry points: `make demo` and `make test`. Each creates or updates .venv from nothing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
BRIDGE_VERSION := 0.3.1
STAMP := $(VENV)/.stamp-install

.PHONY: venv test test-servers demo clean

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

# Self-improving vs next-token pretraining on the synthetic world (rlpt demo --help for knobs).
DEMO_OUT ?= runs/demo
demo: venv
	$(PY) -m rlpt_plugin.cli demo --out $(DEMO_OUT) $(DEMO_ARGS)

clean:
	rm -rf $(VENV)
