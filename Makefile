# stablelb — every target installs what it needs, so a fresh machine needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv control-plane binaries test test-unit lint e2e-local e2e cluster-up cluster-down demo demo-down bench chaos clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $(STAMP)

venv: $(STAMP)

# Local control-plane binaries (kube-apiserver, etcd, jaeger): $KUBEBUILDER_ASSETS when set, else the cache
# under ~/.cache/stablelb, else built once from the Go module proxy. `binaries` adds what only the tests use
# (helm, actionlint, promtool, the oldest supported kube-apiserver), so the demo does not wait for them.
control-plane:
	@bash e2e/controlplane/build-binaries.sh default jaeger

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
cluster-up: venv control-plane
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
demo: venv control-plane
	@$(PY) -m e2e.demo up

demo-down: venv
	@$(PY) -m e2e.demo down

# Randomized long runs with fresh seeds (CI runs one fixed seed); CHAOS_RUNS=N, STABLELB_CHAOS_STEPS=N.
CHAOS_RUNS ?= 5
chaos: venv control-plane
	@for i in $$(seq $(CHAOS_RUNS)); do \
	  STABLELB_CHAOS_SEED=random $(PY) -m pytest e2e/test_randomized.py -q -rP $(PYTEST_ARGS) || exit 1; \
	done

# Takeover under injected faults (fault proxy, API server restart) with one fresh seed, each scenario
# TAKEOVER_RUNS times (CI: fixed seed, once); a failure prints STABLELB_TAKEOVER_SEED to replay it.
TAKEOVER_RUNS ?= 5
.PHONY: chaos-takeover
chaos-takeover: venv control-plane
	STABLELB_TAKEOVER_SEED=random STABLELB_TAKEOVER_RUNS=$(TAKEOVER_RUNS) \
	  $(PY) -m pytest e2e/test_takeover_faults.py -q -rP $(PYTEST_ARGS)

# Benchmarks (tables go to docs/benchmarks.md by hand, with the machine): allocator, informer, controller.
bench: venv binaries
	$(PY) bench/allocator.py
	$(PY) bench/informer.py
	$(PY) bench/controller.py --services 1000

# Packaging: lock files, one version everywhere, the image, the supported Kubernetes range.
.PHONY: lock set-version image version-matrix
# pip-tools in its own virtualenv inside .venv (git-ignored), pinned with the pip it supports.
PIP_TOOLS_VENV ?= $(VENV)/pip-tools
# Runtime (requirements.lock) and wheel-build (requirements-build.lock) dependencies with hashes, for
# Python 3.11 (the image's); tests/packaging/test_lock.py fails while they disagree with pyproject.toml.
lock:
	@test -x $(PIP_TOOLS_VENV)/bin/pip-compile || { $(PYTHON) -m venv $(PIP_TOOLS_VENV) && \
	  $(PIP_TOOLS_VENV)/bin/pip install -q 'pip==23.2.1' 'pip-tools==7.6.2'; }
	$(PIP_TOOLS_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
	  --no-emit-find-links --output-file requirements.lock pyproject.toml
	$(PIP_TOOLS_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
	  --no-emit-find-links --build-deps-for=wheel --only-build-deps --output-file requirements-build.lock pyproject.toml

# make set-version VERSION=0.2.0: the package, the chart (version, appVersion) and the kustomize image tag.
set-version:
	@[[ "$(VERSION)" =~ ^[0-9]+\.[0-9]+\.[0-9]+$$ ]] || { echo "usage: make set-version VERSION=x.y.z"; exit 2; }
	sed -i -E 's/^__version__ = ".*"/__version__ = "$(VERSION)"/' controller/__init__.py
	sed -i -E 's/^version: .*/version: $(VERSION)/; s/^appVersion: .*/appVersion: "$(VERSION)"/' charts/stablelb/Chart.yaml
	sed -i -E 's/^  newTag: .*/  newTag: $(VERSION)/' manifests/kustomization.yaml

# make image IMAGE=registry.example.com/stablelb-controller [PLATFORMS=linux/amd64,linux/arm64] (needs docker buildx).
IMAGE ?= stablelb-controller
PLATFORMS ?= linux/amd64
image:
	$(eval VERSION := $(shell $(PYTHON) -c 'import controller; print(controller.__version__)'))
	docker buildx build --platform $(PLATFORMS) --build-arg VERSION=$(VERSION) \
	  --build-arg REVISION=$$(git rev-parse HEAD) -t $(IMAGE):$(VERSION) $(if $(PUSH),--push,--load) .

# The supported Kubernetes range (newest three minors): the manifests, the CRD and the e2e smoke run against
# the oldest and the newest kube-apiserver. `make test` runs the CRD and manifests on both already.
K8S_OLDEST_VERSION ?= v1.35.4
K8S_NEWEST_VERSION ?= v1.37.2
MATRIX_TESTS ?= tests/cluster/test_manifests.py tests/cluster/test_crd_validation.py tests/cluster/test_reservation_crd.py e2e/test_startup.py e2e/test_stability.py
version-matrix: venv binaries
	@for v in $(K8S_OLDEST_VERSION) $(K8S_NEWEST_VERSION); do \
	  echo "== kube-apiserver $$v"; \
	  STABLELB_K8S_VERSION=$$v bash e2e/controlplane/build-binaries.sh kube || exit 1; \
	  STABLELB_K8S_VERSION=$$v $(PY) -m pytest $(MATRIX_TESTS) -q $(PYTEST_ARGS) || exit 1; \
	done
