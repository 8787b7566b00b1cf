"""The chaos service's Kubernetes backend against a real API server: a StatefulSet of three (kwok) node
pods; the service, built from its settings and driven over its HTTP API, deletes the leader's pod and
the StatefulSet replaces it (same name, new uid). kwok runs no container, so no node answers
`/debug/state`: the leader is named by a pod annotation the test sets (`leader_lookup=annotation`).
A random pod is chosen by the seed; a pod outside the selector is never deleted. The client carries the
API's bearer token, as every caller must."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kube_helpers import KWOK_NODE_SELECTOR, KWOK_TOLERATIONS, wait_for_running_pods
from kubernetes import client

from dscore_chaos.app import create_app
from dscore_chaos.main import build_service
from dscore_chaos.settings import load_chaos_settings

pytestmark = pytest.mark.k8s

EVENT_TIMEOUT_S = 60
NODE_LABELS = {"app.kubernetes.io/name": "dscore", "app.kubernetes.io/component": "node"}
SELECTOR = ",".join(f"{k}={v}" for k, v in NODE_LABELS.items())
LEADER_ANNOTATION = "dscore.io/leader"
SEED = 11
#: the fault API's bearer token (`DSCORE_CHAOS__API_TOKEN`)
TOKEN = "k8s-chaos-test-token-" + "k" * 32


def _pod_spec() -> dict[str, Any]:
    return {
        "nodeSelector": KWOK_NODE_SELECTOR,
        "tolerations": KWOK_TOLERATIONS,
        "terminationGracePeriodSeconds": 0,  # nothing runs under kwok: nothing to wait for
        "containers": [{"name": "node", "image": "registry.k8s.io/pause:3.10"}],
    }


def _statefulset() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "dscore", "labels": NODE_LABELS},
        "spec": {
            "serviceName": "dscore",
            "replicas": 3,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": NODE_LABELS},
            "template": {"metadata": {"labels": NODE_LABELS}, "spec": _pod_spec()},
        },
    }


@pytest.fixture
def nodes(kube_client: client.ApiClient, namespace: str) -> dict[str, Any]:
    """The StatefulSet's three pods, Running, by name; and a pod of something else beside them."""
    core = client.CoreV1Api(kube_client)
    client.AppsV1Api(kube_client).create_namespaced_stateful_set(namespace, _statefulset())
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "bystander", "labels": {"app.kubernetes.io/name": "other"}},
            "spec": _pod_spec(),
        },
    )
    wait_for_running_pods(core, namespace, "app.kubernetes.io/name=other", 1, EVENT_TIMEOUT_S)
    return wait_for_running_pods(core, namespace, SELECTOR, 3, EVENT_TIMEOUT_S)


@pytest.fixture
async def chaos(kube_api: Path, namespace: str) -> AsyncIterator[httpx.AsyncClient]:
    """The chaos service, built from its settings as `dscore-chaos` builds it, behind its HTTP API."""
    settings = load_chaos_settings(
        chaos={
            "seed": SEED,
            "api_token": TOKEN,
            "kubernetes": {
                "enabled": True,
                "kubeconfig": str(kube_api),
                "namespace": namespace,
                "label_selector": SELECTOR,
                "leader_lookup": "annotation",
                "leader_annotation": LEADER_ANNOTATION,
            },
        }
    )
    app = create_app(build_service(settings), api_token=settings.chaos.api_token)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://chaos", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http,
    ):
        yield http


def _uids(pods: dict[str, Any]) -> dict[str, str]:
    return {name: pod.metadata.uid for name, pod in pods.items()}


def _annotate_leader(core: client.CoreV1Api, namespace: str, pod: str) -> None:
    core.patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {LEADER_ANNOTATION: "true"}}})


async def test_the_leaders_pod_is_deleted_and_the_statefulset_replaces_it(
    kube_client: client.ApiClient, namespace: str, nodes: dict[str, Any], chaos: httpx.AsyncClient
) -> None:
    core = client.CoreV1Api(kube_client)
    before = _uids(nodes)
    assert sorted(before) == ["dscore-0", "dscore-1", "dscore-2"]
    # nobody is leader yet: the injection fails, nothing is deleted
    response = await chaos.post("/v1/faults", json={"kind": "pod_kill", "target": "leader"})
    assert response.status_code == 201
    (failed,) = response.json()["injections"]
    assert failed["outcome"] == "failed" and "no leader found" in failed["detail"]

    _annotate_leader(core, namespace, "dscore-1")
    response = await chaos.post("/v1/faults", json={"kind": "pod_kill"})  # target: the leader by default
    assert response.status_code == 201, response.text
    (injection,) = response.json()["injections"]
    assert injection["outcome"] == "injected" and injection["target"] == "dscore-1", injection
    assert before["dscore-1"] in injection["detail"]

    after = _uids(wait_for_running_pods(core, namespace, SELECTOR, 3, EVENT_TIMEOUT_S))
    assert after["dscore-1"] != before["dscore-1"], "the leader's pod was not replaced"
    assert {n: u for n, u in after.items() if n != "dscore-1"} == {
        n: u for n, u in before.items() if n != "dscore-1"
    }, "another pod was disturbed"
    metrics = (await chaos.get("/metrics")).text
    assert 'dscore_chaos_faults_injected_total{kind="kill"} 1.0' in metrics
    assert 'dscore_chaos_injections_failed_total{kind="pod_kill"} 1.0' in metrics


async def test_random_pods_follow_the_seed_and_other_pods_are_never_hit(
    kube_client: client.ApiClient, namespace: str, nodes: dict[str, Any], chaos: httpx.AsyncClient
) -> None:
    core = client.CoreV1Api(kube_client)
    bystander_uid = core.read_namespaced_pod("bystander", namespace).metadata.uid
    response = await chaos.post("/v1/faults", json={"kind": "pod_kill", "target": "bystander"})
    (refused,) = response.json()["injections"]
    assert refused["outcome"] == "failed" and "not one of dscore-0, dscore-1, dscore-2" in refused["detail"]

    expected = random.Random(f"{SEED}:kubernetes")
    for _ in range(2):
        before = _uids(wait_for_running_pods(core, namespace, SELECTOR, 3, EVENT_TIMEOUT_S))
        response = await chaos.post(
            "/v1/faults", json={"kind": "pod_kill", "target": "random", "params": {"grace_period_s": 1}}
        )
        (injection,) = response.json()["injections"]
        assert injection["target"] == expected.choice(sorted(before)), injection
        after = _uids(wait_for_running_pods(core, namespace, SELECTOR, 3, EVENT_TIMEOUT_S))
        assert after[injection["target"]] != before[injection["target"]]
    assert core.read_namespaced_pod("bystander", namespace).metadata.uid == bystander_uid
