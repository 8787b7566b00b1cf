"""charts/dscore installed with the real helm on the test control plane (kwok: pods reach Running, no
container runs). `DscoreRelease` is what the `dscore_release` fixture hands out; tests of other services
(the chaos service's Kubernetes backend) use it to find the nodes' pods and StatefulSet.

The fake cluster has no storage provisioner, so the release's Redis claims are bound to PersistentVolumes
made here (static provisioning: the controller manager's binder matches them, as it would on a cluster with
pre-made volumes); the scheduler then places each pod, honouring the chart's topology spread.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from chart_helpers import CHART, helm_env
from kube_helpers import KWOK_NODE_SELECTOR, KWOK_TOLERATIONS, wait_for_running_pods
from kubernetes import client

HELM_TIMEOUT_S = 180
WAIT = "120s"
EVENT_TIMEOUT_S = 90


class Helm:
    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.env = helm_env(home)

    def __call__(self, *args: str) -> str:
        command = [str(self.binary), "--kubeconfig", str(self.kubeconfig), *args]
        done = subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False
        )
        assert done.returncode == 0, f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr}"
        return done.stdout


def kwok_values(storage_class: str, replicas: int, *, chaos: bool) -> dict[str, Any]:
    """Values that place every pod on the fake nodes and bind the claims to the test's volumes."""
    return {
        "nodeSelector": KWOK_NODE_SELECTOR,
        "tolerations": KWOK_TOLERATIONS,
        # Nothing answers there: the processes never run under kwok.
        "kafka": {"bootstrapServers": "kafka.invalid:9092"},
        "redis": {"persistence": {"storageClass": storage_class, "size": "1Gi"}},
        "node": {"replicas": replicas, "terminationGracePeriodSeconds": 1},
        "gateway": {"terminationGracePeriodSeconds": 1},
        "chaos": {"enabled": chaos},
    }


@dataclass
class DscoreRelease:
    helm: Helm
    api: client.ApiClient
    namespace: str
    name: str
    storage_class: str
    values_file: Path
    volumes: list[str] = field(default_factory=list)

    # -- names --------------------------------------------------------------------------------------------

    @property
    def fullname(self) -> str:
        return self.name if "dscore" in self.name else f"{self.name}-dscore"

    @property
    def statefulset(self) -> str:
        return f"{self.fullname}-node"

    @property
    def node_selector(self) -> str:
        """Label selector of the nodes' pods."""
        return f"app.kubernetes.io/instance={self.name},app.kubernetes.io/component=node"

    def node_pods(self, count: int, gone: tuple[str, ...] = ()) -> dict[str, Any]:
        """Wait until `count` node pods are Running (and `gone` ones deleted); return them by name."""
        return wait_for_running_pods(
            client.CoreV1Api(self.api), self.namespace, self.node_selector, count, EVENT_TIMEOUT_S, gone
        )

    # -- life cycle ---------------------------------------------------------------------------------------

    @classmethod
    def install(
        cls,
        helm: Helm,
        api: client.ApiClient,
        namespace: str,
        tmp: Path,
        *,
        replicas: int,
        chaos: bool = False,
    ) -> DscoreRelease:
        storage_class = f"dscore-test-{uuid.uuid4().hex[:8]}"
        values_file = tmp / "kwok-values.yaml"
        values_file.write_text(yaml.safe_dump(kwok_values(storage_class, replicas, chaos=chaos)))
        release = cls(helm, api, namespace, "kv", storage_class, values_file)
        release.add_volumes(replicas)
        release.helm("install", release.name, str(CHART), *release.common_args(), "--wait", "--timeout", WAIT)
        return release

    def common_args(self) -> list[str]:
        return ["--namespace", self.namespace, "--values", str(self.values_file)]

    def upgrade(self, *sets: str) -> str:
        args = [arg for s in sets for arg in ("--set", s)]
        return self.helm(
            "upgrade", self.name, str(CHART), *self.common_args(), *args, "--wait", "--timeout", WAIT
        )

    def add_volumes(self, count: int) -> None:
        core = client.CoreV1Api(self.api)
        for _ in range(count):
            name = f"{self.storage_class}-{len(self.volumes)}"
            core.create_persistent_volume(
                {
                    "metadata": {"name": name, "labels": {"dscore.test": "true"}},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": self.storage_class,
                        "persistentVolumeReclaimPolicy": "Retain",
                        # Never mounted: kwok runs no container.
                        "hostPath": {"path": f"/nonexistent/{name}"},
                    },
                }
            )
            self.volumes.append(name)

    def cleanup(self) -> None:
        core = client.CoreV1Api(self.api)
        releases = self.helm("list", "--namespace", self.namespace, "--short")
        if self.name in releases.split():
            self.helm("uninstall", self.name, "--namespace", self.namespace, "--wait", "--timeout", WAIT)
        for name in self.volumes:
            try:
                core.delete_persistent_volume(name)
            except client.ApiException as error:
                if error.status != 404:
                    raise
