"""charts/dscore on a real API server (kwok nodes): `helm install`, a scale-up and a settings change with
`helm upgrade`, `helm uninstall`, and what the API server and its controllers made of them: objects, owner
references, pods Running and spread over the fake nodes, claims bound, the PodDisruptionBudget's allowed
disruptions, the generated key kept, what stays after uninstall.

No container runs under kwok: probes, the start scripts and the services are not exercised here (the
scripts are in test_chart_scripts.py), and the membership hook Jobs "succeed" because kwok completes every
Job's pod. What the hooks would do is tested in test_chart_scripts.py; here that helm renders and runs them
at the right time, with the right arguments.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml
from chart_release import EVENT_TIMEOUT_S, DscoreRelease
from kube_helpers import _watch_until
from kubernetes import client

pytestmark = pytest.mark.k8s


def _owner(obj: Any) -> tuple[str, str]:
    (reference,) = obj.metadata.owner_references
    assert reference.controller is True
    return reference.kind, reference.uid


def _pdb_settled(api: client.ApiClient, namespace: str, name: str, expected: int, allowed: int) -> Any:
    policy = client.PolicyV1Api(api)

    def done(pdbs: dict[str, Any]) -> Any:
        pdb = pdbs.get(name)
        if pdb is None or pdb.status is None:
            return None
        status = pdb.status
        settled = (
            status.observed_generation == pdb.metadata.generation
            and status.expected_pods == expected
            and status.disruptions_allowed == allowed
        )
        return pdb if settled else None

    return _watch_until(
        policy.list_namespaced_pod_disruption_budget,
        {"namespace": namespace, "field_selector": f"metadata.name={name}"},
        done,
        EVENT_TIMEOUT_S,
        what=f"PDB {name} with {expected} pods and {allowed} allowed disruption(s)",
    )


def _auth_key(core: client.CoreV1Api, release: DscoreRelease) -> bytes:
    secret = core.read_namespaced_secret(f"{release.fullname}-auth", release.namespace)
    return base64.b64decode(secret.data["auth-key"])


def test_install_scale_up_change_settings_and_uninstall(
    dscore_release: DscoreRelease, kube_client: client.ApiClient
) -> None:
    release = dscore_release
    core = client.CoreV1Api(kube_client)
    apps = client.AppsV1Api(kube_client)
    ns = release.namespace

    # -- install: 3 members, spread over the 3 fake nodes, each with its own bound claim ------------------
    pods = release.node_pods(3)
    assert sorted(pods) == [f"kv-dscore-node-{i}" for i in range(3)]
    sts = apps.read_namespaced_stateful_set(release.statefulset, ns)
    assert sts.spec.pod_management_policy == "Parallel"
    for pod in pods.values():
        assert _owner(pod) == ("StatefulSet", sts.metadata.uid)
        assert pod.spec.node_name.startswith("kwok-node-")
        assert [c.name for c in pod.spec.init_containers] == ["redis"]
    assert len({pod.spec.node_name for pod in pods.values()}) == 3, "two members share a host"
    claims = core.list_namespaced_persistent_volume_claim(ns).items
    assert sorted((c.metadata.name, c.status.phase) for c in claims) == [
        (f"redis-data-kv-dscore-node-{i}", "Bound") for i in range(3)
    ]
    # The gateway's pods belong to a ReplicaSet that belongs to the Deployment; chaos likewise.
    for deployment in ("kv-dscore-gateway", "kv-dscore-chaos"):
        made = apps.read_namespaced_deployment(deployment, ns)
        assert made.status.ready_replicas == made.spec.replicas
        sets = apps.list_namespaced_replica_set(
            ns, label_selector=f"app.kubernetes.io/component={deployment.rsplit('-', 1)[1]}"
        )
        (replica_set,) = sets.items
        assert _owner(replica_set) == ("Deployment", made.metadata.uid)
    # The PDB keeps a quorum of 2: one voluntary disruption allowed.
    pdb = _pdb_settled(kube_client, ns, release.statefulset, expected=3, allowed=1)
    assert pdb.spec.min_available == 2 and pdb.status.current_healthy == 3 and pdb.status.desired_healthy == 2
    # The chaos service may delete pods of this namespace only.
    rbac = client.RbacAuthorizationV1Api(kube_client)
    role = rbac.read_namespaced_role("kv-dscore-chaos", ns)
    assert {tuple(r.resources) for r in role.rules} == {("pods",), ("statefulsets",)}
    key = _auth_key(core, release)
    assert len(key) == 64
    notes = release.helm("get", "notes", release.name, "--namespace", ns)
    assert "kv-dscore-node" in notes and key.decode() not in notes
    assert release.helm("get", "hooks", release.name, "--namespace", ns).count("kind: Job") == 0

    # -- helm upgrade to 5 members: hook Jobs around it; the running members are not restarted ----------
    before = {name: pod.metadata.uid for name, pod in pods.items()}
    release.add_volumes(2)
    release.upgrade("node.replicas=5")
    pods = release.node_pods(5)
    assert {name: pods[name].metadata.uid for name in before} == before, "a scale-up restarted a member"
    topology = core.read_namespaced_config_map("kv-dscore-topology", ns).data
    assert topology["replicas"] == "5" and topology["founding-members"] == "3"
    hooks = [
        doc
        for doc in yaml.safe_load_all(release.helm("get", "hooks", release.name, "--namespace", ns))
        if doc
    ]
    jobs = {job["metadata"]["name"]: job for job in hooks if job["kind"] == "Job"}
    assert sorted(jobs) == ["kv-dscore-membership-post-scale", "kv-dscore-membership-pre-scale"]
    command = jobs["kv-dscore-membership-pre-scale"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[2] == "pre" and "--replicas=5" in command and "--running-replicas=3" in command
    assert jobs["kv-dscore-membership-pre-scale"]["metadata"]["annotations"]["helm.sh/hook"] == (
        "pre-upgrade,pre-rollback"
    )
    # Succeeded hook Jobs are deleted (hook-succeeded).
    assert not batch_jobs(kube_client, ns)
    pdb = _pdb_settled(kube_client, ns, release.statefulset, expected=5, allowed=2)
    assert pdb.spec.min_available == 3
    assert _auth_key(core, release) == key, "an upgrade replaced the cluster key"

    # -- helm upgrade of a cluster-wide setting: every member rolls, one at a time --------------------------
    revision = apps.read_namespaced_stateful_set(release.statefulset, ns).status.update_revision
    release.upgrade("node.replicas=5", "cluster.raft.readOnlyOption=lease")
    sts = apps.read_namespaced_stateful_set(release.statefulset, ns)
    assert sts.status.update_revision != revision
    assert sts.status.updated_replicas == 5 and sts.status.current_revision == sts.status.update_revision
    pods = release.node_pods(5)
    for pod in pods.values():
        assert pod.metadata.uid not in before.values()
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["DSCORE_RAFT__READ_ONLY_OPTION"] == "lease"
    assert "Job" not in release.helm("get", "hooks", release.name, "--namespace", ns)  # no scale, no hook

    # -- uninstall: the workload goes; the key, the node-ids map and the claims stay ------------------------
    release.helm("uninstall", release.name, "--namespace", ns, "--wait", "--timeout", "120s")
    assert not apps.list_namespaced_stateful_set(ns).items
    assert not apps.list_namespaced_deployment(ns).items
    release.node_pods(0)
    assert _auth_key(core, release) == key
    core.read_namespaced_config_map("kv-dscore-node-ids", ns)
    kept = sorted(c.metadata.name for c in core.list_namespaced_persistent_volume_claim(ns).items)
    assert kept == [f"redis-data-kv-dscore-node-{i}" for i in range(5)]


def batch_jobs(api: client.ApiClient, namespace: str) -> list[str]:
    return [job.metadata.name for job in client.BatchV1Api(api).list_namespaced_job(namespace).items]


def test_an_existing_secret_is_used_and_none_is_made(
    chart_helm: Any, kube_client: client.ApiClient, namespace: str, tmp_path: Any
) -> None:
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "my-key"}, "stringData": {"hmac": "k" * 48}}
    )
    release = DscoreRelease.install(chart_helm, kube_client, namespace, tmp_path, replicas=1)
    try:
        release.upgrade("auth.existingSecret=my-key", "auth.existingSecretKey=hmac")
        pod = release.node_pods(1)["kv-dscore-node-0"]
        env = {e.name: e.value_from for e in pod.spec.containers[0].env if e.name == "DSCORE_AUTH_KEY"}
        ref = env["DSCORE_AUTH_KEY"].secret_key_ref
        assert (ref.name, ref.key) == ("my-key", "hmac")
    finally:
        release.cleanup()
