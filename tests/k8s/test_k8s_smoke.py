"""Smoke test of the local control plane: a Deployment's pods are scheduled onto fake (kwok) nodes, reach
Running, and a deleted pod is replaced by its ReplicaSet, as on a real cluster."""

from __future__ import annotations

from typing import Any

import pytest
from kube_helpers import KWOK_NODE_SELECTOR, KWOK_TOLERATIONS, wait_for_namespace_gone, wait_for_running_pods
from kubernetes import client

pytestmark = pytest.mark.k8s

EVENT_TIMEOUT_S = 60


def _deployment(name: str, replicas: int) -> dict[str, object]:
    labels = {"app.kubernetes.io/name": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": KWOK_NODE_SELECTOR,
                    "tolerations": KWOK_TOLERATIONS,
                    # No container to stop: without this the namespace controller waits out the default 30 s
                    # grace estimate before it finishes deleting the namespace (~10 s instead of ~5 s).
                    "terminationGracePeriodSeconds": 0,
                    # kwok runs no container: the image is never pulled.
                    "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}],
                },
            },
        },
    }


def _owner(pod: Any) -> tuple[str, str]:
    (reference,) = pod.metadata.owner_references
    return reference.kind, reference.uid


def test_deployment_pods_run_and_a_deleted_pod_is_replaced(
    kube_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_client)
    apps = client.AppsV1Api(kube_client)
    apps.create_namespaced_deployment(namespace, _deployment("smoke", replicas=2))
    selector = "app.kubernetes.io/name=smoke"

    running = wait_for_running_pods(core, namespace, selector, count=2, timeout_s=EVENT_TIMEOUT_S)
    for pod in running.values():
        assert pod.spec.node_name is not None and pod.spec.node_name.startswith("kwok-node-")
        assert pod.status.pod_ip is not None
    owners = {_owner(pod) for pod in running.values()}
    assert len(owners) == 1 and next(iter(owners))[0] == "ReplicaSet", f"unexpected owners: {owners}"

    victim = sorted(running)[0]
    core.delete_namespaced_pod(victim, namespace)
    replaced = wait_for_running_pods(
        core, namespace, selector, count=2, timeout_s=EVENT_TIMEOUT_S, gone=[victim]
    )
    assert victim not in replaced
    assert set(running) - {victim} < set(replaced), "the surviving pod was disturbed"
    assert {_owner(pod) for pod in replaced.values()} == owners

    core.delete_namespace(namespace)
    wait_for_namespace_gone(core, namespace, timeout_s=EVENT_TIMEOUT_S)
