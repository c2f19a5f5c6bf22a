# stablelb — every target installs what it needs, so a fresh machine needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv binaries test test-unit lint e2e-local e2e cluster-up cluster-down demo demo-down bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Local control-plane binaries (kube-apiserver, etcd, jaeger): $KUBEBUILDER_ASSETS when set, else the cache
# under ~/.cache/stablelb, else built once from the Go module proxy.
binaries:
	@bash e2e/controlplane/build-binaries.sh all

test: venv binaries
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests -m "not cluster" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check controller tests e2e bench
	$(VENV)/bin/mypy --strict controller

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
