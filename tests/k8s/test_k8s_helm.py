"""Smoke test of helm against the control plane: install a throwaway chart, read what it made, uninstall."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from kubernetes import client

pytestmark = pytest.mark.k8s

HELM_TIMEOUT_S = 120

CHART_YAML = """\
apiVersion: v2
name: dscore-smoke
version: 0.1.0
# helm checks this against the server's version: a server built without its version stamped (v0.0.0) fails.
kubeVersion: ">=1.30.0-0"
"""

CONFIGMAP_TEMPLATE = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-greeting
  labels:
    app.kubernetes.io/managed-by: {{ .Release.Service }}
    app.kubernetes.io/instance: {{ .Release.Name }}
data:
  greeting: {{ .Values.greeting | quote }}
"""


def _write_chart(root: Path) -> Path:
    chart = root / "dscore-smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(CHART_YAML)
    (chart / "values.yaml").write_text('greeting: "hello"\n')
    (chart / "templates" / "configmap.yaml").write_text(CONFIGMAP_TEMPLATE)
    return chart


class Helm:
    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        # helm's caches and settings stay in the test's folder, not the user's home.
        self.env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def __call__(self, *args: str) -> str:
        command = [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False
        )
        assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}"
        return done.stdout


def test_helm_install_and_uninstall_a_chart(
    helm_bin: Path, kube_api: Path, kube_client: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    helm = Helm(helm_bin, kube_api, tmp_path / "helm-home")
    chart = _write_chart(tmp_path)
    core = client.CoreV1Api(kube_client)

    helm("install", "smoke", str(chart), "--namespace", namespace, "--set", "greeting=hi from helm",
         "--wait", "--timeout", "60s")  # fmt: skip

    made = core.read_namespaced_config_map("smoke-greeting", namespace)
    assert made.data == {"greeting": "hi from helm"}
    assert made.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    releases = json.loads(helm("list", "--namespace", namespace, "--output", "json"))
    assert [(r["name"], r["status"], r["chart"]) for r in releases] == [
        ("smoke", "deployed", "dscore-smoke-0.1.0")
    ]

    helm("uninstall", "smoke", "--namespace", namespace, "--wait", "--timeout", "60s")

    with pytest.raises(client.ApiException) as missing:
        core.read_namespaced_config_map("smoke-greeting", namespace)
    assert missing.value.status == 404
    assert json.loads(helm("list", "--namespace", namespace, "--output", "json")) == []


def test_helm_rejects_a_chart_for_another_kubernetes(
    helm_bin: Path, kube_api: Path, namespace: str, tmp_path: Path
) -> None:
    # The other side of the kubeVersion check above: helm compares it with the server's real version.
    chart = _write_chart(tmp_path)
    (chart / "Chart.yaml").write_text(CHART_YAML.replace(">=1.30.0-0", "<1.30.0-0"))
    helm = Helm(helm_bin, kube_api, tmp_path / "helm-home")
    with pytest.raises(AssertionError, match="incompatible with Kubernetes v1"):
        helm("install", "smoke", str(chart), "--namespace", namespace)
