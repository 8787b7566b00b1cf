# The two commands a newcomer runs: `make demo` (the embedded demo) and `make test` (lint, types, tests).
# Both bootstrap everything they need: a private uv in .tools/, then the locked environment in .venv/.
# `make test` also starts the Kafka broker and Redis servers its integration tests use (through the
# fixtures in tests/integration/conftest.py and scripts/); `make up` / `make down` run a local deployment.
SHELL := /bin/bash
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
RUN := $(UV) run --frozen --no-sync
PYTEST_ARGS ?=
# Use the machine's Python 3.11; never let uv download an interpreter.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
# Cache bytecode even where the machine's environment sets PYTHONDONTWRITEBYTECODE (this one does):
# without a cache every Python process compiles dscore and its dependencies from source again, and the
# tests start many of them (pytest workers, nodes, gateways, demo stacks). Importing the node and the
# gateway costs ~2.7 s of CPU uncached against ~0.9 s cached here. __pycache__/ is ignored by git; the
# images compile their bytecode at build time instead (images/README.md).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-fast test-slow test-unit test-integration lint typecheck bench sync clean \
	up down status kafka-prestart images

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check 'uv>=0.4,<1'

$(VENV)/.synced: $(UV) pyproject.toml uv.lock libs/dscore/pyproject.toml $(wildcard services/*/pyproject.toml)
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

# The simulator's sweeps (independent, CPU-bound, in-memory seeds) run on both cores first; then the rest,
# whose integration and end-to-end tests start their own servers and processes, one test at a time.
test: kafka-prestart lint typecheck
	$(RUN) pytest -m "not slow" -n 2 --durations=15 tests/sim $(PYTEST_ARGS)
	$(RUN) pytest -m "not slow" --durations=30 --ignore=tests/sim $(PYTEST_ARGS)

# Boot the broker while lint and mypy run (a cold JVM takes 7-20 s); the tests' fixture waits for it,
# and reports any failure to start with the broker's log.
kafka-prestart:
	@if [ -z "$$DSCORE_TEST_KAFKA_BOOTSTRAP" ]; then (scripts/kafka.sh ensure >/dev/null 2>&1 &); fi

# Without the servers (no Java / Redis needed): everything but tests/integration/.
test-unit: sync
	$(RUN) pytest -m "not slow and not integration" $(PYTEST_ARGS)

test-integration: sync
	$(RUN) pytest -m "integration and not slow" $(PYTEST_ARGS)

test-fast: sync
	$(RUN) pytest -m "not slow" -x -q $(PYTEST_ARGS)

# The slow tests include tests/images/, which run the container images: build them first.
test-slow: sync images
	$(RUN) pytest -m slow $(PYTEST_ARGS)

# Container images with podman (scripts/images.sh, images/README.md): localhost/dscore/<service>:<git sha>
# and :dev for every service with an images/<service>/Containerfile, on a cached Debian base. Not part of
# `make test` (the base's first build downloads Debian packages for ~3 min); `make test-slow` runs it.
images: sync
	scripts/images.sh build

# Every `dscore bench` in turn (there is no `all`); the etcd and Porcupine comparisons are in bench/.
bench: sync
	for name in codec check raft sim; do $(RUN) dscore bench $$name || exit 1; done

# Kafka, one Redis per node (and, once they exist, the nodes and the gateway) in the background;
# pids in .run/<name>.pid, logs in .run/logs/. See scripts/dev.sh for the settings.
up: sync
	scripts/dev.sh up

status:
	scripts/dev.sh status

down:
	scripts/dev.sh down

# .run/ (data of the local deployment) and .cache/ (Kafka's jars) are kept; `make down` first, then
# remove them by hand to start from nothing.
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
