"""Fixtures for tests against a real Kubernetes API server (marker `k8s`).

`kube_api` gives a kubeconfig path: `DSCORE_TEST_KUBECONFIG` if set (any cluster; the plane is then neither
started nor stopped), otherwise the local control plane of scripts/k8s.sh, started for the session when it
is not already up and stopped at the end only if this session started it. Its fake (kwok) nodes take a pod
only with `kube_helpers.KWOK_NODE_SELECTOR` and `KWOK_TOLERATIONS` in the pod spec.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from chart_release import DscoreRelease, Helm
from kube_helpers import wait_for_namespace_gone
from kubernetes import client, config

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_SCRIPT = REPO_ROOT / "scripts" / "k8s.sh"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "k8s-build.sh"
NAMESPACE_GONE_TIMEOUT_S = 60


def _run_script(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)


def _run_checked(*args: str | Path) -> str:
    """Run one of our scripts; fail the test with its stderr if it fails; return its stdout."""
    done = _run_script(*args)
    if done.returncode != 0:
        command = " ".join(map(str, args))
        pytest.fail(f"{command} failed (exit {done.returncode}):\n{done.stderr}", pytrace=False)
    return done.stdout


def _last_line(output: str) -> str:
    lines = output.strip().splitlines()
    if not lines:
        pytest.fail("expected a path on stdout, got nothing", pytrace=False)
    return lines[-1]


@pytest.fixture(scope="session")
def kube_api() -> Iterator[Path]:
    """Path of a kubeconfig for a running Kubernetes API server."""
    from_env = os.environ.get("DSCORE_TEST_KUBECONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            pytest.fail(f"DSCORE_TEST_KUBECONFIG={from_env} is not a file", pytrace=False)
        yield path
        return
    already_up = _run_script(K8S_SCRIPT, "status").returncode == 0
    kubeconfig = Path(_last_line(_run_checked(K8S_SCRIPT, "up")))
    try:
        yield kubeconfig
    finally:
        if not already_up:
            _run_checked(K8S_SCRIPT, "down")


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """The helm binary built by scripts/k8s-build.sh (building it if missing)."""
    _run_checked(BUILD_SCRIPT)
    return Path(_last_line(_run_checked(BUILD_SCRIPT, "path", "helm")))


@pytest.fixture(scope="session")
def kube_client(kube_api: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(kube_api), persist_config=False)
    with api:
        yield api


@pytest.fixture
def namespace(kube_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace, deleted (and waited on until gone) after the test."""
    core = client.CoreV1Api(kube_client)
    name = f"dscore-test-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"dscore.test": "true"}}})
    yield name
    try:
        core.delete_namespace(name)
    except client.ApiException as error:
        if error.status != 404:
            raise
    wait_for_namespace_gone(core, name, timeout_s=NAMESPACE_GONE_TIMEOUT_S)


# -- the dscore chart installed on the control plane (charts/dscore) --------------------------------------


@pytest.fixture
def chart_helm(helm_bin: Path, kube_api: Path, tmp_path: Path) -> Helm:
    """helm against the test API server, its caches in the test's folder."""
    return Helm(helm_bin, kube_api, tmp_path / "helm-home")


@pytest.fixture
def dscore_release(
    chart_helm: Helm, kube_client: client.ApiClient, namespace: str, tmp_path: Path
) -> Iterator[DscoreRelease]:
    """charts/dscore installed (`helm install --wait`) in a fresh namespace: 3 nodes Running on the fake
    nodes, each with its Redis claim bound, the gateway and the chaos service (with its namespaced RBAC).
    No container runs (kwok): what the API server, the controllers and the scheduler do is real, what the
    processes would do is not. Uninstalled, and its volumes deleted, afterwards."""
    release = DscoreRelease.install(chart_helm, kube_client, namespace, tmp_path, replicas=3, chaos=True)
    try:
        yield release
    finally:
        release.cleanup()
