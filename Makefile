# The two commands a newcomer runs: `make demo` (the embedded demo) and `make test` (lint, types, tests).
# Both bootstrap everything they need: a private uv in .tools/, then the locked environment in .venv/.
SHELL := /bin/bash
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
RUN := $(UV) run --frozen --no-sync
PYTEST_ARGS ?=
# Use the machine's Python 3.11; never let uv download an interpreter.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test test-fast test-slow lint typecheck bench sync clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check 'uv>=0.4,<1'

$(VENV)/.synced: $(UV) pyproject.toml uv.lock libs/dscore/pyproject.toml
	$(UV) sync --frozen --all-packages
	touch $@

sync: $(VENV)/.synced

demo: sync
	$(RUN) dscore demo

lint: sync
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: sync
	$(RUN) mypy

test: lint typecheck
	$(RUN) pytest -m "not slow" $(PYTEST_ARGS)

test-fast: sync
	$(RUN) pytest -m "not slow" -x -q $(PYTEST_ARGS)

test-slow: sync
	$(RUN) pytest -m slow $(PYTEST_ARGS)

bench: sync
	$(RUN) dscore bench all

clean:
	rm -rf .venv .tools .mypy_cache .ruff_cache

# --- Local Kubernetes control plane (scripts/k8s.sh): Debian's etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok (fake nodes, pods reach Running), on loopback. `k8s-up` prints the kubeconfig path.
.PHONY: k8s-build k8s-up k8s-down
k8s-build:
	@scripts/k8s-build.sh
k8s-up:
	@scripts/k8s.sh up
k8s-down:
	@scripts/k8s.sh down
# The k8s tests need the binaries: build them (cold ~10-15 min, once; cached in .cache/k8s) before pytest.
test: k8s-build
