# stablelb — every target installs what it needs, so a fresh machine needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv binaries test test-unit lint e2e-local e2e cluster-up cluster-down demo demo-down bench chaos clean

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

# A local control plane for people (etcd + kube-apiserver as processes, CRD and RBAC applied); prints
# `export KUBECONFIG=...`. State lives in .stablelb/ (git-ignored). See docs/local-control-plane.md.
cluster-up: venv binaries
	@$(PY) -m e2e.harness up

cluster-down: venv
	@$(PY) -m e2e.harness down

# The e2e suite against a local control plane started by the pytest session (what CI runs here).
e2e-local: venv binaries
	$(PY) -m pytest tests/cluster e2e $(PYTEST_ARGS)

# The same suite against a kind cluster running the real image (needs docker, kind, kubectl).
e2e: venv
	PYTHON=$(abspath $(PY)) PYTEST_ARGS="$(PYTEST_ARGS)" bash e2e/kind/run.sh

# The whole story on a fresh machine: control plane, Jaeger, two controllers, a before/after table.
demo: venv binaries
	@$(PY) -m e2e.demo up

demo-down: venv
	@$(PY) -m e2e.demo down

# Randomized long runs with fresh seeds (CI runs one fixed seed); CHAOS_RUNS=N, STABLELB_CHAOS_STEPS=N.
CHAOS_RUNS ?= 5
chaos: venv binaries
	@for i in $$(seq $(CHAOS_RUNS)); do \
	  STABLELB_CHAOS_SEED=random $(PY) -m pytest e2e/test_randomized.py -q -rP $(PYTEST_ARGS) || exit 1; \
	done

# Benchmarks (tables go to docs/benchmarks.md by hand, with the machine): allocator, informer, controller.
bench: venv binaries
	$(PY) bench/allocator.py
	$(PY) bench/informer.py
	$(PY) bench/controller.py --services 1000
