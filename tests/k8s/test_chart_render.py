"""charts/dscore rendered by the real helm (no cluster): lint, every object validated against Kubernetes'
schemas, and what key values do to the objects (replicas, quorum, protocol settings, the key's Secret,
node ids, rules and dashboards packaged as generated, the NetworkPolicy, the values schema's refusals).

An upgrade is rendered from a copy of the chart whose one `lookup` of the live StatefulSet answers a given
replica count (`render_upgrade`): what the chart renders around a scale (hook Jobs, refusals) without a
cluster. NOTES.txt is rendered the same way, from a copy that also wraps it in a ConfigMap (`notes`).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import (
    CHART,
    KUBE_VERSION,
    REPO_ROOT,
    HelmError,
    Obj,
    container,
    crd_schemas,
    env_of,
    find,
    helm_env,
    one,
    pod_specs,
    render,
    run_helm,
    validate,
    values_args,
)

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KAFKA = {"kafka": {"bootstrapServers": "kafka.kafka.svc:9092"}}
NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def values(**overrides: Any) -> dict[str, Any]:
    """KAFKA deep-merged with overrides given as dotted paths: values(**{"node.replicas": 5})."""
    out: dict[str, Any] = json.loads(json.dumps(KAFKA))
    for dotted, value in overrides.items():
        here = out
        *parents, last = dotted.split(".")
        for part in parents:
            here = here.setdefault(part, {})
        here[last] = value
    return out


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


#: dscore.runningReplicas' lookup of the live StatefulSet (_helpers.tpl), which chart_copy replaces
LOOKUP_STATEFULSET = (
    '{{- $sts := lookup "apps/v1" "StatefulSet" .Release.Namespace (include "dscore.nodeName" .) -}}'
)
_copies = itertools.count()


def chart_copy(tmp: Path, *, running: int | None = None, files: Mapping[str, str] | None = None) -> Path:
    """A copy of the chart: with `running`, its lookup of the live StatefulSet finds one with that many
    replicas (as in an upgrade of a release that runs it); `files` (path in the chart -> text) are written
    over the copy's."""
    chart = tmp / f"chart-{next(_copies)}" / "dscore"
    shutil.copytree(CHART, chart)
    if running is not None:
        helpers = chart / "templates" / "_helpers.tpl"
        text = helpers.read_text()
        assert text.count(LOOKUP_STATEFULSET) == 1, (
            "dscore.runningReplicas changed: update LOOKUP_STATEFULSET"
        )
        found = '{{- $sts := dict "spec" (dict "replicas" ' + str(running) + ") -}}"
        helpers.write_text(text.replace(LOOKUP_STATEFULSET, found))
    for path, text in (files or {}).items():
        (chart / path).write_text(text)
    return chart


def render_chart(
    helm: Path, tmp: Path, chart: Path, vals: Mapping[str, Any] | None = None, *, upgrade: bool = False
) -> list[Obj]:
    """`helm template` of `chart` (release demo, namespace dscore), as an upgrade with `upgrade`."""
    args = ["template", "demo", str(chart), "--namespace", "dscore", "--kube-version", KUBE_VERSION]
    args += ["--is-upgrade"] if upgrade else []
    args += values_args(vals, tmp)
    return [doc for doc in yaml.safe_load_all(run_helm(helm, *args, env=helm_env(tmp / "helm-home"))) if doc]


def render_upgrade(helm: Path, tmp: Path, vals: Mapping[str, Any], *, running: int) -> list[Obj]:
    """What `helm upgrade` with `vals` renders over a running StatefulSet of `running` replicas."""
    return render_chart(helm, tmp, chart_copy(tmp, running=running), vals, upgrade=True)


def notes(helm: Path, tmp: Path, vals: Mapping[str, Any], *, running: int | None = None) -> str:
    """NOTES.txt as helm prints it after an install (or, with `running`, an upgrade over that many)."""
    return notes_and_objects(helm, tmp, vals, running=running)[0]


def notes_and_objects(
    helm: Path, tmp: Path, vals: Mapping[str, Any], *, running: int | None = None
) -> tuple[str, list[Obj]]:
    """`notes`, and the objects rendered with them (the same draw of the Secret's random values)."""
    wrapped = {
        "templates/_test_notes.tpl": '{{- define "test.notes" -}}\n'
        + (CHART / "templates" / "NOTES.txt").read_text()
        + "{{- end -}}\n",
        "templates/test-notes.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: test-notes\n"
        'data:\n  notes: {{ include "test.notes" . | quote }}\n',
    }
    chart = chart_copy(tmp, running=running, files=wrapped)
    objects = render_chart(helm, tmp, chart, vals, upgrade=running is not None)
    return str(one(objects, "ConfigMap", "test-notes")["data"]["notes"]), objects


# -- lint and validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("ci_values", CI_VALUES, ids=lambda p: p.name)
def test_helm_lint_strict(helm_bin: Path, tmp: Path, ci_values: Path) -> None:
    out = run_helm(
        helm_bin,
        "lint",
        "--strict",
        str(CHART),
        "--values",
        str(ci_values),
        "--kube-version",
        "1.35.0",
        env=helm_env(tmp),
    )
    assert "1 chart(s) linted, 0 chart(s) failed" in out


@pytest.mark.parametrize("ci_values", CI_VALUES, ids=lambda p: p.name)
def test_every_rendered_object_is_valid(helm_bin: Path, tmp: Path, ci_values: Path) -> None:
    objects = render(helm_bin, tmp, files=[ci_values])
    custom = crd_schemas()
    problems = []
    for obj in objects:
        try:
            validate(obj, custom)
        except AssertionError as error:
            problems.append(str(error))
    assert not problems, "\n".join(problems)
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Service", "ConfigMap", "Pod"} <= kinds


def test_validation_catches_a_misspelt_field(helm_bin: Path, tmp: Path) -> None:
    # The validation above would be worthless if it let unknown fields through.
    sts = one(render(helm_bin, tmp, values()), "StatefulSet")
    sts["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(AssertionError, match="readinessProbes"):
        validate(sts)
    monitor = one(render(helm_bin, tmp, values(**{"metrics.serviceMonitor.enabled": True})), "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["intervall"] = "5s"
    with pytest.raises(AssertionError, match="intervall"):
        validate(monitor)


def test_default_objects(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, values())
    names = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
    assert names == sorted(
        [
            "ConfigMap/demo-dscore-dscore-availability",
            "ConfigMap/demo-dscore-dscore-consensus",
            "ConfigMap/demo-dscore-dscore-transport",
            "ConfigMap/demo-dscore-node-ids",
            "ConfigMap/demo-dscore-scripts",
            "ConfigMap/demo-dscore-topology",
            "Deployment/demo-dscore-gateway",
            "NetworkPolicy/demo-dscore-gateway",
            "NetworkPolicy/demo-dscore-jobs",
            "NetworkPolicy/demo-dscore-node",
            "Pod/demo-dscore-test-cluster",
            "PodDisruptionBudget/demo-dscore-gateway",
            "PodDisruptionBudget/demo-dscore-node",
            "Secret/demo-dscore-auth",
            "Service/demo-dscore-gateway",
            "Service/demo-dscore-node-peers",
            "StatefulSet/demo-dscore-node",
        ]
    )
    # No ServiceMonitor, PrometheusRule, chaos or dev Kafka unless asked; no hook Job (nor its account)
    # without a scale.
    assert not find(objects, "Job")


# -- nodes: replicas, ids, peers, quorum -------------------------------------------------------------------


@pytest.mark.parametrize(("replicas", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)])
def test_replicas_and_the_quorum_the_pdb_keeps(helm_bin: Path, tmp: Path, replicas: int, quorum: int) -> None:
    objects = render(helm_bin, tmp, values(**{"node.replicas": replicas}))
    sts = one(objects, "StatefulSet", "demo-dscore-node")
    assert sts["spec"]["replicas"] == replicas
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == "demo-dscore-node-peers"
    topology = one(objects, "ConfigMap", "demo-dscore-topology")["data"]
    assert topology["replicas"] == str(replicas)
    # `helm template` is an install: every member founds the cluster.
    assert topology["founding-members"] == str(replicas)
    pdb = one(objects, "PodDisruptionBudget", "demo-dscore-node")
    assert pdb["spec"]["minAvailable"] == quorum
    assert pdb["spec"]["selector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    test_pod = one(objects, "Pod", "demo-dscore-test-cluster")
    members = env_of(container(test_pod["spec"], "test"))["NODES"].split(",")
    assert members == [f"demo-dscore-node-{i}" for i in range(replicas)]


@pytest.mark.parametrize(
    ("protocol", "replicas", "faults", "quorum"),
    [
        ("raft", 3, None, 2),
        ("raft", 5, None, 3),
        ("paxos", 3, None, 2),
        ("paxos", 5, None, 3),
        # PBFT: n - f with f = floor((n - 1) / 3), not a majority
        ("pbft", 4, None, 3),
        ("pbft", 5, None, 4),
        ("pbft", 7, None, 5),
        # f set for the nodes (DSCORE_PBFT__FAULTS_TOLERATED, through node.extraEnv)
        ("pbft", 7, "1", 6),
        ("pbft", 5, "0", 5),
    ],
)
def test_the_pdb_keeps_the_quorum_of_the_protocol(
    helm_bin: Path, tmp: Path, protocol: str, replicas: int, faults: str | None, quorum: int
) -> None:
    from dscore.settings import PbftSettings

    if protocol == "pbft":  # what the nodes compute (PbftNode: quorum = n - f)
        f = PbftSettings(faults_tolerated=None if faults is None else int(faults)).tolerated(replicas)
        assert quorum == replicas - f
    overrides: dict[str, Any] = {"cluster.protocol": protocol, "node.replicas": replicas}
    if faults is not None:
        overrides["node.extraEnv"] = [{"name": "DSCORE_PBFT__FAULTS_TOLERATED", "value": faults}]
    pdb = one(render(helm_bin, tmp, values(**overrides)), "PodDisruptionBudget", "demo-dscore-node")
    assert pdb["spec"]["minAvailable"] == quorum
    assert f"(quorum {quorum}" in notes(helm_bin, tmp, values(**overrides))


def test_pbft_refuses_more_faults_than_its_members_tolerate(helm_bin: Path, tmp: Path) -> None:
    # the nodes would refuse to start (dscore.settings.check_pbft_members)
    env = [{"name": "DSCORE_PBFT__FAULTS_TOLERATED", "value": "2"}]
    with pytest.raises(HelmError, match=r"pbft needs n >= 3f \+ 1 .*FAULTS_TOLERATED=2 .* at least 7, .* 5"):
        render(
            helm_bin, tmp, values(**{"cluster.protocol": "pbft", "node.replicas": 5, "node.extraEnv": env})
        )


@pytest.mark.parametrize(
    ("protocol", "running", "wanted"), [("paxos", 3, 5), ("paxos", 5, 3), ("pbft", 4, 5), ("pbft", 7, 4)]
)
def test_paxos_and_pbft_refuse_a_replica_change(
    helm_bin: Path, tmp: Path, protocol: str, running: int, wanted: int
) -> None:
    # Their membership is fixed: a PBFT Job would wait for a "leader" forever, Paxos answers 409.
    message = rf"cluster\.protocol={protocol} .*node\.replicas={wanted} .* {running} replicas"
    for membership in (True, False):
        scaled = values(
            **{"cluster.protocol": protocol, "node.replicas": wanted, "membership.enabled": membership}
        )
        with pytest.raises(HelmError, match=message):
            render_upgrade(helm_bin, tmp, scaled, running=running)
    # The same count: an upgrade like any other, no hook.
    same = values(**{"cluster.protocol": protocol, "node.replicas": running})
    objects = render_upgrade(helm_bin, tmp, same, running=running)
    assert one(objects, "StatefulSet")["spec"]["replicas"] == running
    assert not find(objects, "Job")
    text = notes(helm_bin, tmp, same, running=running)
    assert "Scale with" not in text and "hook Jobs" not in text
    assert f"cluster.protocol={protocol} runs a fixed set of {running} members" in text


def test_a_raft_scale_renders_the_hook_jobs_after_their_account(helm_bin: Path, tmp: Path) -> None:
    objects = render_upgrade(helm_bin, tmp, values(**{"node.replicas": 5}), running=3)
    custom = crd_schemas()
    for obj in objects:
        validate(obj, custom)
    jobs = {job["metadata"]["name"]: job for job in find(objects, "Job")}
    assert sorted(jobs) == ["demo-dscore-membership-post-scale", "demo-dscore-membership-pre-scale"]
    command = container(jobs["demo-dscore-membership-pre-scale"]["spec"]["template"]["spec"], "membership")
    assert "--replicas=5" in command["command"] and "--running-replicas=3" in command["command"]
    # The Jobs' account and its rights are hooks of the same events, created first (a lower weight): an
    # upgrade that turns membership.enabled on and scales at once finds them, and a rollback to a revision
    # that rendered the Jobs brings them back with them.
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        obj = one(objects, kind, "demo-dscore-membership")
        annotations = obj["metadata"]["annotations"]
        for job in jobs.values():
            job_annotations = job["metadata"]["annotations"]
            assert set(job_annotations["helm.sh/hook"].split(",")) <= set(
                annotations["helm.sh/hook"].split(",")
            )
            assert int(annotations["helm.sh/hook-weight"]) < int(job_annotations["helm.sh/hook-weight"])
            assert job["spec"]["template"]["spec"]["serviceAccountName"] == "demo-dscore-membership"
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    text = notes(helm_bin, tmp, values(**{"node.replicas": 5}), running=3)
    assert "Scale with `helm upgrade --set node.replicas=N` only: hook Jobs" in text
    # No scale: no Jobs, and nothing for them (a hook and a release object must not share a name).
    objects = render_upgrade(helm_bin, tmp, values(**{"node.replicas": 3}), running=3)
    assert not [o for o in objects if o["metadata"]["name"] == "demo-dscore-membership"]
    # membership.enabled=false: a raft scale is left to the operator
    off = render_upgrade(
        helm_bin, tmp, values(**{"node.replicas": 5, "membership.enabled": False}), running=3
    )
    assert not [o for o in off if o["metadata"]["name"].startswith("demo-dscore-membership")]


def test_the_required_host_spread_honours_taints(helm_bin: Path, tmp: Path) -> None:
    # A tainted host the nodes cannot go to is no empty domain that would hold the other pods Pending.
    sts = one(render(helm_bin, tmp, values()), "StatefulSet")
    spread = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
    by_key = {c["topologyKey"]: c for c in spread}
    assert by_key["kubernetes.io/hostname"]["nodeTaintsPolicy"] == "Honor"
    assert by_key["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"


def test_node_update_strategy(helm_bin: Path, tmp: Path) -> None:
    sts = one(render(helm_bin, tmp, values()), "StatefulSet")
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    sts = one(render(helm_bin, tmp, values(**{"node.updateStrategy": "OnDelete"})), "StatefulSet")
    assert sts["spec"]["updateStrategy"] == {"type": "OnDelete"}


def test_a_script_change_restarts_only_the_pods_that_run_it(helm_bin: Path, tmp: Path) -> None:
    def checksums(chart: Path) -> tuple[str, str]:
        objects = render_chart(helm_bin, tmp, chart, values())
        node = one(objects, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
        gateway = one(objects, "Deployment", "demo-dscore-gateway")["spec"]["template"]["metadata"]
        return node["checksum/scripts"], gateway["annotations"]["checksum/scripts"]

    def edited(name: str) -> Path:
        return chart_copy(tmp, files={name: (CHART / name).read_text() + "\n# edited\n"})

    node, gateway = checksums(CHART)
    after_gateway_edit = checksums(edited("files/gateway-start.sh"))
    assert after_gateway_edit[0] == node, "editing the gateway's script would restart every node"
    assert after_gateway_edit[1] != gateway
    after_node_edit = checksums(edited("files/node-start.sh"))
    assert after_node_edit[0] != node and after_node_edit[1] == gateway
    assert checksums(edited("files/membership.py")) == (node, gateway)


def test_three_replicas_spread_over_hosts_by_default(helm_bin: Path, tmp: Path) -> None:
    sts = one(render(helm_bin, tmp, values()), "StatefulSet")
    assert sts["spec"]["replicas"] == 3
    spread = sts["spec"]["template"]["spec"]["topologySpreadConstraints"]
    by_key = {c["topologyKey"]: c for c in spread}
    assert by_key["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert by_key["kubernetes.io/hostname"]["maxSkew"] == 1
    assert by_key["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert (
        by_key["kubernetes.io/hostname"]["labelSelector"]["matchLabels"]
        == sts["spec"]["selector"]["matchLabels"]
    )


@pytest.mark.parametrize("release", ["a", "prod", "dscore", "a-very-long-release-name-for-dscore-x"])
def test_node_ids_are_valid_ids_and_kafka_topic_names(helm_bin: Path, tmp: Path, release: str) -> None:
    objects = render(helm_bin, tmp, values(**{"node.replicas": 15}), release=release, namespace="n")
    topology = next(o for o in find(objects, "ConfigMap") if o["metadata"]["name"].endswith("-topology"))
    sts, cluster_id = topology["data"]["statefulset"], topology["data"]["cluster-id"]
    assert cluster_id == f"n.{release}"
    assert NODE_ID.match(cluster_id)
    for ordinal in range(15):
        pod = f"{sts}-{ordinal}"
        for node_id in (pod, f"{pod}.g99"):  # a renamed member (membership.py) too
            assert NODE_ID.match(node_id), node_id
            assert KAFKA_TOPIC.match(f"dscore.{cluster_id}.inbox.{node_id}")
        # a pod name is a DNS label, and the StatefulSet's revision label must fit 63 characters
        assert re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", pod) and len(pod) <= 63
    assert len(sts) <= 52


def test_a_name_too_long_for_node_ids_fails_with_the_reason(helm_bin: Path, tmp: Path) -> None:
    with pytest.raises(HelmError, match=r"StatefulSet name .* at most 52 .* fullnameOverride"):
        render(helm_bin, tmp, values(), release="r" * 50)


def test_node_container_wiring(helm_bin: Path, tmp: Path) -> None:
    sts = one(render(helm_bin, tmp, values()), "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    node = container(spec, "node")
    env = env_of(node)
    assert node["command"] == ["/usr/bin/tini", "--", "/bin/sh", "/etc/dscore/scripts/node-start.sh"]
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["DSCORE_CLUSTER_ID"] == "dscore.demo"
    assert env["DSCORE_PROTOCOL"] == "raft"
    assert env["DSCORE_KAFKA__BOOTSTRAP_SERVERS"] == "kafka.kafka.svc:9092"
    assert env["DSCORE_REDIS__URL"] == "redis://127.0.0.1:6379/0"
    assert env["DSCORE_HTTP__HOST"] == "0.0.0.0"
    assert env["DSCORE_HTTP__PORT"] == "8080"
    # Unset cluster settings are left to the service's defaults.
    assert not any(name.startswith("DSCORE_RAFT__") for name in env)
    assert node["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert node["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert node["startupProbe"]["httpGet"]["path"] == "/healthz"
    # Redis: a native sidecar beside the node, loopback only, every write fsynced, on its own claim.
    redis = container(spec, "redis")
    assert redis in spec["initContainers"] and redis["restartPolicy"] == "Always"
    args = redis["command"]
    assert args[args.index("--bind") + 1] == "127.0.0.1"
    assert args[args.index("--appendfsync") + 1] == "always"
    assert args[args.index("--appendonly") + 1] == "yes"
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "redis-data"
    assert {"name": "redis-data", "mountPath": "/data"} in redis["volumeMounts"]
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }


def test_cluster_settings_reach_every_node_as_written(helm_bin: Path, tmp: Path) -> None:
    sts = one(
        render(
            helm_bin,
            tmp,
            values(
                **{
                    "cluster.protocol": "paxos",
                    "cluster.tickIntervalS": 0.02,
                    "cluster.maxEnvelopeBytes": 4194304,
                    "cluster.maxSessions": 1000000,
                    "cluster.raft.electionTimeoutTicks": 20,
                    "cluster.raft.preVote": False,
                    "cluster.raft.readOnlyOption": "lease",
                }
            ),
        ),
        "StatefulSet",
    )
    env = env_of(container(sts["spec"]["template"]["spec"], "node"))
    assert env["DSCORE_PROTOCOL"] == "paxos"
    assert env["DSCORE_TICK_INTERVAL_S"] == "0.02"
    # Integers stay integers (helm's values are floats: 4194304 must not become 4.194304e+06).
    assert env["DSCORE_MAX_ENVELOPE_BYTES"] == "4194304"
    assert env["DSCORE_MAX_SESSIONS"] == "1000000"
    assert env["DSCORE_RAFT__ELECTION_TIMEOUT_TICKS"] == "20"
    assert env["DSCORE_RAFT__PRE_VOTE"] == "false"
    assert env["DSCORE_RAFT__READ_ONLY_OPTION"] == "lease"


@pytest.mark.parametrize(("protocol", "replicas"), [("paxos", 3), ("pbft", 4)])
def test_paxos_and_pbft_reach_the_nodes_and_the_gateway(
    helm_bin: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch, protocol: str, replicas: int
) -> None:
    from dscore_gateway.settings import load_gateway_settings

    objects = render(helm_bin, tmp, values(**{"cluster.protocol": protocol, "node.replicas": replicas}))
    sts = one(objects, "StatefulSet", "demo-dscore-node")
    assert sts["spec"]["replicas"] == replicas
    assert env_of(container(sts["spec"]["template"]["spec"], "node"))["DSCORE_PROTOCOL"] == protocol
    gateway_spec = one(objects, "Deployment", "demo-dscore-gateway")["spec"]["template"]["spec"]
    gateway_env = env_of(container(gateway_spec, "gateway"))
    assert gateway_env["DSCORE_PROTOCOL"] == protocol
    # the gateway reads it (and, for pbft, waits for f + 1 = 2 matching replies of the 4 nodes)
    for name in [n for n in __import__("os").environ if n.startswith("DSCORE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DSCORE_PROTOCOL", gateway_env["DSCORE_PROTOCOL"])
    monkeypatch.setenv("DSCORE_NODES", ",".join(f"n{i}" for i in range(replicas)))
    monkeypatch.setenv("DSCORE_AUTH_KEY", "k" * 32)
    assert load_gateway_settings().reply_quorum() == (2 if protocol == "pbft" else 1)


def test_cluster_settings_are_the_ones_dscore_reads(helm_bin: Path, tmp: Path) -> None:
    # Every DSCORE_ name the chart can set for a node is one that dscore.settings accepts.
    from dscore.settings import load_settings

    sts = one(
        render(helm_bin, tmp, files=[CHART / "ci" / "full-values.yaml"]), "StatefulSet", "demo-dscore-node"
    )
    env = env_of(container(sts["spec"]["template"]["spec"], "node"))
    cluster_env = {
        k: v
        for k, v in env.items()
        if k.startswith("DSCORE_")
        and isinstance(v, str)
        and not k.startswith(("DSCORE_KAFKA__", "DSCORE_REDIS__", "DSCORE_HTTP__"))
        and k not in ("DSCORE_LOG_LEVEL", "DSCORE_HANDOVER_TIMEOUT_S")
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster_env.items():
            patch.setenv(name, value)
        settings = load_settings()
    assert settings.cluster_id == "prod-kv"
    assert settings.raft.election_timeout_ticks == 20
    assert settings.tick_interval_s == 0.02


# -- the cluster key ---------------------------------------------------------------------------------------


def _auth_refs(objects: list[dict[str, Any]]) -> dict[str, Any]:
    refs = {}
    for where, spec in pod_specs(objects):
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            value = env_of(c).get("DSCORE_AUTH_KEY")
            if value is not None:
                refs[f"{where}/{c['name']}"] = value
    return refs


def test_generated_key_secret_is_wired_to_every_process(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, values(**{"chaos.enabled": False}))
    secret = one(objects, "Secret", "demo-dscore-auth")
    key = base64.b64decode(secret["data"]["auth-key"])
    assert len(key) == 64 and key.isalnum()
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    refs = _auth_refs(objects)
    assert set(refs) == {"StatefulSet/demo-dscore-node/node", "Deployment/demo-dscore-gateway/gateway"}
    for ref in refs.values():
        assert ref == {"secretKeyRef": {"name": "demo-dscore-auth", "key": "auth-key"}}
    # Never in plain text anywhere in a rendered object but its Secret.
    rendered = json.dumps([o for o in objects if o["kind"] != "Secret"])
    assert key.decode() not in rendered


def test_admin_token_comes_from_the_secret_and_reaches_only_the_nodes(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, values(**{"chaos.enabled": True}))
    secret = one(objects, "Secret", "demo-dscore-auth")
    token = base64.b64decode(secret["data"]["admin-token"])
    assert len(token) == 48 and token.isalnum()
    holders = {
        f"{where}/{c['name']}": env_of(c)["DSCORE_HTTP__ADMIN_TOKEN"]
        for where, spec in pod_specs(objects)
        for c in spec["containers"]
        if "DSCORE_HTTP__ADMIN_TOKEN" in env_of(c)
    }
    assert holders == {
        "StatefulSet/demo-dscore-node/node": {
            "secretKeyRef": {"name": "demo-dscore-auth", "key": "admin-token"}
        }
    }
    assert token.decode() not in json.dumps([o for o in objects if o["kind"] != "Secret"])
    # without /admin the nodes get no token
    objects = render(helm_bin, tmp, values(**{"node.admin": False}))
    node = container(one(objects, "StatefulSet", "demo-dscore-node")["spec"]["template"]["spec"], "node")
    assert env_of(node)["DSCORE_HTTP__ADMIN"] == "false" and "DSCORE_HTTP__ADMIN_TOKEN" not in env_of(node)
    # an existing Secret names the token's key too
    objects = render(
        helm_bin, tmp, values(**{"auth.existingSecret": "mine", "auth.existingSecretAdminTokenKey": "adm"})
    )
    node = container(one(objects, "StatefulSet", "demo-dscore-node")["spec"]["template"]["spec"], "node")
    assert env_of(node)["DSCORE_HTTP__ADMIN_TOKEN"] == {"secretKeyRef": {"name": "mine", "key": "adm"}}


def test_the_charts_own_secret_gives_the_admin_token_under_its_own_key(helm_bin: Path, tmp: Path) -> None:
    # auth.existingSecretAdminTokenKey names a key of auth.existingSecret; the chart's Secret has its own.
    scaled = values(**{"auth.existingSecretAdminTokenKey": "adm", "node.replicas": 5})
    objects = render_upgrade(helm_bin, tmp, scaled, running=3)
    assert "admin-token" in one(objects, "Secret", "demo-dscore-auth")["data"]
    refs = {
        f"{where}/{c['name']}": env_of(c)["DSCORE_HTTP__ADMIN_TOKEN"]
        for where, spec in pod_specs(objects)
        for c in spec["containers"]
        if "DSCORE_HTTP__ADMIN_TOKEN" in env_of(c)
    }
    assert sorted(refs) == [
        "Job/demo-dscore-membership-post-scale/membership",
        "Job/demo-dscore-membership-pre-scale/membership",
        "StatefulSet/demo-dscore-node/node",
    ]
    for ref in refs.values():
        assert ref == {"secretKeyRef": {"name": "demo-dscore-auth", "key": "admin-token"}}


def _chaos_token_refs(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        f"{where}/{c['name']}": env_of(c)["DSCORE_CHAOS__API_TOKEN"]
        for where, spec in pod_specs(objects)
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]
        if "DSCORE_CHAOS__API_TOKEN" in env_of(c)
    }


def test_chaos_token_comes_from_the_secret_and_reaches_only_the_chaos_service(
    helm_bin: Path, tmp: Path
) -> None:
    objects = render(helm_bin, tmp, values(**{"chaos.enabled": True}))
    secret = one(objects, "Secret", "demo-dscore-auth")
    token = base64.b64decode(secret["data"]["chaos-token"])
    assert len(token) == 48 and token.isalnum()  # DSCORE_CHAOS__API_TOKEN: 32 at least, no whitespace
    assert token != base64.b64decode(secret["data"]["admin-token"])
    assert _chaos_token_refs(objects) == {
        "Deployment/demo-dscore-chaos/chaos": {
            "secretKeyRef": {"name": "demo-dscore-auth", "key": "chaos-token"}
        }
    }
    # never in plain text anywhere but the Secret
    assert token.decode() not in json.dumps([o for o in objects if o["kind"] != "Secret"])
    # without the chaos service nobody gets it (the Secret holds it all the same, for a later enable)
    objects = render(helm_bin, tmp, values(**{"chaos.enabled": False}))
    assert _chaos_token_refs(objects) == {}
    assert "chaos-token" in one(objects, "Secret", "demo-dscore-auth")["data"]


def test_chaos_token_from_an_existing_secret_under_its_key(helm_bin: Path, tmp: Path) -> None:
    objects = render(
        helm_bin,
        tmp,
        values(
            **{
                "chaos.enabled": True,
                "auth.existingSecret": "mine",
                "auth.existingSecretChaosTokenKey": "chaos",
            }
        ),
    )
    assert not find(objects, "Secret")
    assert _chaos_token_refs(objects) == {
        "Deployment/demo-dscore-chaos/chaos": {"secretKeyRef": {"name": "mine", "key": "chaos"}}
    }
    # the default key name, with an existing Secret
    objects = render(helm_bin, tmp, values(**{"chaos.enabled": True, "auth.existingSecret": "mine"}))
    assert _chaos_token_refs(objects)["Deployment/demo-dscore-chaos/chaos"] == {
        "secretKeyRef": {"name": "mine", "key": "chaos-token"}
    }
    # the key names one of *your* Secret's: the chart's own keeps chaos-token
    objects = render(
        helm_bin, tmp, values(**{"chaos.enabled": True, "auth.existingSecretChaosTokenKey": "x"})
    )
    assert _chaos_token_refs(objects)["Deployment/demo-dscore-chaos/chaos"] == {
        "secretKeyRef": {"name": "demo-dscore-auth", "key": "chaos-token"}
    }


#: the Secret template's lookup of itself, which `_secret_found` replaces
LOOKUP_SECRET = '{{- $existing := lookup "v1" "Secret" .Release.Namespace $name }}'


def _secret_found(tmp: Path, data: dict[str, str]) -> Path:
    """A copy of the chart whose Secret template finds a live Secret holding `data` (as at an upgrade)."""
    template = (CHART / "templates" / "secret.yaml").read_text()
    assert template.count(LOOKUP_SECRET) == 1, "the Secret's lookup changed: update LOOKUP_SECRET"
    found = " ".join(f'"{k}" "{base64.b64encode(v.encode()).decode()}"' for k, v in data.items())
    text = template.replace(LOOKUP_SECRET, '{{- $existing := dict "data" (dict ' + found + ") }}")
    return chart_copy(tmp, files={"templates/secret.yaml": text})


def test_the_secrets_values_are_drawn_once_and_kept(helm_bin: Path, tmp: Path) -> None:
    kept = {"auth-key": "k" * 64, "admin-token": "a" * 48, "chaos-token": "c" * 48}
    chart = _secret_found(tmp, kept)
    data = one(render_chart(helm_bin, tmp, chart, values(**{"chaos.enabled": True}), upgrade=True), "Secret")[
        "data"
    ]
    assert {k: base64.b64decode(v).decode() for k, v in data.items()} == kept
    # a Secret from before the chaos token: the key and the admin token kept, a chaos token drawn
    chart = _secret_found(tmp, {"auth-key": "k" * 64, "admin-token": "a" * 48})
    data = one(render_chart(helm_bin, tmp, chart, values(**{"chaos.enabled": True}), upgrade=True), "Secret")[
        "data"
    ]
    got = {k: base64.b64decode(v).decode() for k, v in data.items()}
    assert got["auth-key"] == "k" * 64 and got["admin-token"] == "a" * 48
    assert len(got["chaos-token"]) == 48 and got["chaos-token"].isalnum()


def _resolved_env(c: dict[str, Any], namespace: str, secrets: dict[str, str]) -> dict[str, str]:
    """A container's environment as the kubelet would give it: field refs and secret refs filled in."""
    out: dict[str, str] = {}
    for name, value in env_of(c).items():
        if isinstance(value, str):
            out[name] = value
        elif "fieldRef" in value and value["fieldRef"]["fieldPath"] == "metadata.namespace":
            out[name] = namespace
        elif "secretKeyRef" in value:
            out[name] = secrets[value["secretKeyRef"]["key"]]
    return out


def test_the_services_accept_the_environment_the_chart_gives_them(
    helm_bin: Path, tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each service's own settings loader reads what the chart sets: a misspelt or unknown DSCORE_ name
    fails here (the services refuse unknown nested settings), not in a crash-looping pod."""
    from dscore_chaos.settings import load_chaos_settings
    from dscore_node.settings import load_service_settings

    objects = render(helm_bin, tmp, values(**{"chaos.enabled": True}))
    secret = one(objects, "Secret", "demo-dscore-auth")
    secrets = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    def load_with(env: dict[str, str], loader: Any) -> Any:
        for name in [n for n in __import__("os").environ if n.startswith("DSCORE_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return loader()

    chaos_spec = one(objects, "Deployment", "demo-dscore-chaos")["spec"]["template"]["spec"]
    chaos = load_with(_resolved_env(container(chaos_spec, "chaos"), "dscore", secrets), load_chaos_settings)
    assert chaos.chaos.kubernetes.enabled and chaos.chaos.port == 8080
    assert chaos.chaos.host == "0.0.0.0"  # the service's default is loopback: the pod must say so
    assert chaos.chaos.api_token is not None and not chaos.chaos.insecure_no_auth
    assert chaos.chaos.api_token.get_secret_value() == secrets["chaos-token"]
    assert chaos.kubernetes_namespace() == "dscore"
    assert chaos.chaos.kubernetes.label_selector == (
        "app.kubernetes.io/instance=demo,app.kubernetes.io/component=node"
    )

    node_spec = one(objects, "StatefulSet", "demo-dscore-node")["spec"]["template"]["spec"]
    env = _resolved_env(container(node_spec, "node"), "dscore", secrets)
    # node-start.sh sets these from the pod's name and the members at start
    env |= {"DSCORE_NODE_ID": "demo-dscore-node-0", "DSCORE_PEERS": "demo-dscore-node-1,demo-dscore-node-2"}
    env.setdefault("DSCORE_REDIS__URL", "redis://127.0.0.1:6379/0")
    node = load_with(env, load_service_settings)
    assert node.http.admin and node.http.admin_token is not None
    assert node.http.admin_token.get_secret_value() == secrets["admin-token"]
    assert node.http.port == 8080


def test_existing_secret(helm_bin: Path, tmp: Path) -> None:
    objects = render(
        helm_bin, tmp, values(**{"auth.existingSecret": "my-key", "auth.existingSecretKey": "hmac"})
    )
    assert not find(objects, "Secret")
    refs = _auth_refs(objects)
    assert refs and all(r == {"secretKeyRef": {"name": "my-key", "key": "hmac"}} for r in refs.values())


def test_notes_never_print_the_key(helm_bin: Path, tmp: Path) -> None:
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    assert "auth-key" not in notes.replace('include "dscore.authSecretKey"', "")
    # No template action reads a Secret (the `.data` of the kubectl line is the reader's jsonpath).
    actions = " ".join(re.findall(r"{{.*?}}", notes, flags=re.S))
    assert ".data" not in actions and "b64dec" not in actions and "lookup" not in actions
    # Rendered: none of the Secret's values, whatever the chaos service's lines say.
    text, objects = notes_and_objects(helm_bin, tmp, values(**{"chaos.enabled": True}))
    secret = one(objects, "Secret", "demo-dscore-auth")
    for key, value in secret["data"].items():
        assert value not in text and base64.b64decode(value).decode() not in text, key


def test_notes_tell_how_to_read_the_chaos_token(helm_bin: Path, tmp: Path) -> None:
    text = notes(helm_bin, tmp, values(**{"chaos.enabled": True}))
    assert (
        "TOKEN=$(kubectl -n dscore get secret demo-dscore-auth -o jsonpath='{.data.chaos-token}' | base64 -d)"
    ) in text
    assert "kubectl -n dscore port-forward svc/demo-dscore-chaos 8090:8080 &" in text
    assert 'curl -H "Authorization: Bearer $TOKEN" localhost:8090/v1/faults' in text
    # your Secret, your key (a dot escaped for the jsonpath)
    text = notes(
        helm_bin,
        tmp,
        values(
            **{
                "chaos.enabled": True,
                "auth.existingSecret": "mine",
                "auth.existingSecretChaosTokenKey": "chaos.tok",
            }
        ),
    )
    assert "get secret mine -o jsonpath='{.data.chaos\\.tok}' | base64 -d)" in text
    assert "your Secret must hold it" in text
    assert "TOKEN=" not in notes(helm_bin, tmp, values(**{"chaos.enabled": False}))


# -- Kafka, Redis modes ------------------------------------------------------------------------------------


def test_kafka_is_required_unless_the_dev_broker_is_on(helm_bin: Path, tmp: Path) -> None:
    with pytest.raises(HelmError, match=r"kafka.bootstrapServers is required .* kafka.dev.enabled=true"):
        render(helm_bin, tmp, {})
    objects = render(helm_bin, tmp, {"kafka": {"dev": {"enabled": True}}})
    kafka = one(objects, "StatefulSet", "demo-dscore-kafka")
    env = env_of(container(kafka["spec"]["template"]["spec"], "kafka"))
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    node_env = env_of(
        container(one(objects, "StatefulSet", "demo-dscore-node")["spec"]["template"]["spec"], "node")
    )
    assert node_env["DSCORE_KAFKA__BOOTSTRAP_SERVERS"] == "demo-dscore-kafka.dscore.svc:9092"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://demo-dscore-kafka.dscore.svc:9092"


def test_external_redis_per_node(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, files=[CHART / "ci" / "external-redis-values.yaml"])
    sts = one(objects, "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    assert "initContainers" not in spec and "volumeClaimTemplates" not in sts["spec"]
    env = env_of(container(spec, "node"))
    names = [e["name"] for e in container(spec, "node")["env"]]
    # $(VAR) expands only variables defined before it.
    assert names.index("POD_INDEX") < names.index("DSCORE_REDIS__URL")
    assert names.index("REDIS_PASSWORD") < names.index("DSCORE_REDIS__URL")
    assert env["POD_INDEX"] == {"fieldRef": {"fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}}
    assert (
        env["DSCORE_REDIS__URL"]
        == "redis://:$(REDIS_PASSWORD)@redis-$(POD_INDEX).redis.dscore-dev.svc:6379/0"
    )
    with pytest.raises(HelmError, match=r"redis\.mode=external needs redis\.external\.urlTemplate"):
        render(helm_bin, tmp, values(**{"redis.mode": "external"}))


def test_without_persistence_redis_uses_an_empty_dir(helm_bin: Path, tmp: Path) -> None:
    sts = one(render(helm_bin, tmp, values(**{"redis.persistence.enabled": False})), "StatefulSet")
    assert "volumeClaimTemplates" not in sts["spec"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["redis-data"] == {"name": "redis-data", "emptyDir": {}}


# -- security ----------------------------------------------------------------------------------------------


def test_every_pod_runs_as_non_root_with_a_read_only_root(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, files=[CHART / "ci" / "full-values.yaml"])
    for where, spec in pod_specs(objects):
        if where.startswith("StatefulSet/r-dscore-kafka") or where == "StatefulSet/demo-dscore-kafka":
            continue  # the dev broker's image writes its config at start (checked below)
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            ctx = c["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, f"{where}/{c['name']}"
            assert ctx["allowPrivilegeEscalation"] is False, f"{where}/{c['name']}"
            assert ctx["capabilities"] == {"drop": ["ALL"]}, f"{where}/{c['name']}"
            assert "resources" in c and c["resources"].get("limits", {}).get("memory"), f"{where}/{c['name']}"
    kafka = one(objects, "StatefulSet", "demo-dscore-kafka")["spec"]["template"]["spec"]
    assert kafka["securityContext"]["runAsNonRoot"] is True
    assert container(kafka, "kafka")["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_only_the_chaos_service_and_the_membership_jobs_get_a_token(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, files=[CHART / "ci" / "full-values.yaml"])
    with_token = sorted(
        where for where, spec in pod_specs(objects) if spec.get("automountServiceAccountToken")
    )
    assert with_token == ["Deployment/demo-dscore-chaos"]  # the hook Jobs render only during an upgrade


def test_chaos_rbac_is_limited_to_its_namespace(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, values(**{"chaos.enabled": True}))
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    role = one(objects, "Role", "demo-dscore-chaos")
    assert role["metadata"]["namespace"] == "dscore"
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): r for r in role["rules"]}
    assert set(rules[("",), ("pods",)]["verbs"]) == {"get", "list", "watch", "delete"}
    sts_rule = rules[("apps",), ("statefulsets",)]
    assert sts_rule["verbs"] == ["get"] and sts_rule["resourceNames"] == ["demo-dscore-node"]
    binding = one(objects, "RoleBinding", "demo-dscore-chaos")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "demo-dscore-chaos", "namespace": "dscore"}
    ]
    deployment = one(objects, "Deployment", "demo-dscore-chaos")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "demo-dscore-chaos"
    env = env_of(container(deployment["spec"]["template"]["spec"], "chaos"))
    assert env["DSCORE_CHAOS__KUBERNETES__LABEL_SELECTOR"] == (
        "app.kubernetes.io/instance=demo,app.kubernetes.io/component=node"
    )
    assert "DSCORE_AUTH_KEY" not in env


def test_network_policy_is_closed_by_default(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, values(**{"chaos.enabled": True}))
    node = one(objects, "NetworkPolicy", "demo-dscore-node")["spec"]
    assert node["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = node["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]  # nothing reaches Redis (6379)
    release_peer = ingress["from"][-1]["podSelector"]
    assert release_peer["matchExpressions"] == [
        {"key": "app.kubernetes.io/component", "operator": "In", "values": ["membership", "chaos", "test"]}
    ]
    egress_ports = sorted(p["port"] for rule in node["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 9092]
    gateway = one(objects, "NetworkPolicy", "demo-dscore-gateway")["spec"]
    assert "from" not in gateway["ingress"][0]  # clients: anyone, unless networkPolicy.gatewayFrom
    chaos = one(objects, "NetworkPolicy", "demo-dscore-chaos")["spec"]
    assert {p["port"] for rule in chaos["egress"] for p in rule["ports"]} == {53, 443, 6443, 9092, 8080}
    # Every pod of the chart is selected by some policy.
    selected = [o["spec"]["podSelector"] for o in find(objects, "NetworkPolicy")]
    for where, _spec in pod_specs(objects):
        owner = next(o for o in objects if f"{o['kind']}/{o['metadata']['name']}" == where)
        labels = (
            owner["metadata"]["labels"]
            if owner["kind"] == "Pod"
            else owner["spec"]["template"]["metadata"]["labels"]
        )
        assert any(_selects(s, labels) for s in selected), where


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        if expression["operator"] == "In" and labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


# -- monitoring --------------------------------------------------------------------------------------------


def test_packaged_rules_and_dashboards_are_the_generated_ones() -> None:
    rules = REPO_ROOT / "deploy" / "prometheus" / "dscore-rules.yaml"
    assert (CHART / "files" / "prometheus" / "dscore-rules.yaml").read_bytes() == rules.read_bytes(), (
        "charts/dscore/files differs from deploy/: run charts/dscore/sync-from-deploy.sh"
    )
    generated = sorted(p.name for p in (REPO_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    packaged = sorted(p.name for p in (CHART / "files" / "dashboards").glob("*.json"))
    assert packaged == generated, "run charts/dscore/sync-from-deploy.sh"
    for name in generated:
        assert (CHART / "files" / "dashboards" / name).read_bytes() == (
            REPO_ROOT / "deploy" / "grafana" / "dashboards" / name
        ).read_bytes(), f"{name}: run charts/dscore/sync-from-deploy.sh"


def test_prometheus_rule_is_deploys_rules(helm_bin: Path, tmp: Path) -> None:
    objects = render(
        helm_bin,
        tmp,
        values(
            **{
                "metrics.prometheusRule.enabled": True,
                "metrics.prometheusRule.additionalLabels": {"release": "kps"},
            }
        ),
    )
    rule = one(objects, "PrometheusRule")
    deployed = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "dscore-rules.yaml").read_text())
    assert rule["spec"]["groups"] == deployed["groups"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 11 and all(
        a["annotations"]["runbook_url"].startswith("docs/runbook.md#") for a in alerts
    )


def test_runbook_base_url(helm_bin: Path, tmp: Path) -> None:
    base = "https://git.example/dscore/blob/main/docs/runbook.md"
    rule = one(
        render(
            helm_bin,
            tmp,
            values(**{"metrics.prometheusRule.enabled": True, "metrics.prometheusRule.runbookBaseUrl": base}),
        ),
        "PrometheusRule",
    )
    urls = [
        r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r
    ]
    assert urls and all(u.startswith(base + "#dscore") for u in urls)
    deployed = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "dscore-rules.yaml").read_text())
    exprs = [r["expr"] for g in deployed["groups"] for r in g["rules"]]
    assert [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]] == exprs


def test_service_monitor_with_user_labels_and_a_job_the_rules_select(helm_bin: Path, tmp: Path) -> None:
    objects = render(
        helm_bin,
        tmp,
        values(
            **{
                "metrics.serviceMonitor.enabled": True,
                "metrics.serviceMonitor.additionalLabels": {"release": "kube-prometheus-stack"},
            }
        ),
        release="kv",
    )
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["jobLabel"] == "dscore.io/job"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    job_regex = re.compile(".*dscore.*")  # deploy/prometheus/generate.py's default selector
    scraped = [
        s for s in find(objects, "Service") if _selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    ]
    assert sorted(s["metadata"]["name"] for s in scraped) == ["kv-dscore-gateway", "kv-dscore-node-peers"]
    for service in scraped:
        job = service["metadata"]["labels"]["dscore.io/job"]
        assert job_regex.fullmatch(job), job
        assert any(p["name"] == "http" for p in service["spec"]["ports"])
    peers = one(objects, "Service", "kv-dscore-node-peers")["spec"]
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
    # A fullnameOverride without "dscore" still gets a job the rules select.
    other = render(helm_bin, tmp, values(**{"fullnameOverride": "kv"}))
    assert one(other, "Service", "kv-node-peers")["metadata"]["labels"]["dscore.io/job"] == "dscore-kv"


def test_service_monitor_scrapes_the_chaos_service_when_it_runs(helm_bin: Path, tmp: Path) -> None:
    objects = render(
        helm_bin, tmp, values(**{"metrics.serviceMonitor.enabled": True, "chaos.enabled": True}), release="kv"
    )
    monitor = one(objects, "ServiceMonitor")
    scraped = {
        s["metadata"]["name"]: s
        for s in find(objects, "Service")
        if _selects(monitor["spec"]["selector"], s["metadata"]["labels"])
    }
    assert sorted(scraped) == ["kv-dscore-chaos", "kv-dscore-gateway", "kv-dscore-node-peers"]
    jobs = [s["metadata"]["labels"].get("dscore.io/job") for s in scraped.values()]
    assert all(job and re.fullmatch(".*dscore.*", job) for job in jobs), jobs
    assert len(set(jobs)) == 3, jobs
    assert scraped["kv-dscore-chaos"]["metadata"]["labels"]["dscore.io/job"] == "kv-dscore-chaos"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert any(p["name"] == endpoint["port"] for p in scraped["kv-dscore-chaos"]["spec"]["ports"])
    assert endpoint["path"] in SERVED_GET_PATHS["chaos"]


METRICS_FROM_DEFAULT = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
]


@pytest.mark.parametrize(
    "metrics_from", [None, [{"namespaceSelector": {"matchLabels": {"team": "observability"}}}]]
)
def test_the_network_policy_lets_the_scrapers_reach_every_scraped_component(
    helm_bin: Path, tmp: Path, metrics_from: list[dict[str, Any]] | None
) -> None:
    overrides: dict[str, Any] = {
        "chaos.enabled": True,
        "metrics.serviceMonitor.enabled": True,
        "networkPolicy.gatewayFrom": [{"namespaceSelector": {"matchLabels": {"role": "apps"}}}],
        "networkPolicy.chaosFrom": [{"podSelector": {"matchLabels": {"role": "drill"}}}],
    }
    if metrics_from is not None:
        overrides["networkPolicy.metricsFrom"] = metrics_from
    objects = render(helm_bin, tmp, values(**overrides))
    scrapers = metrics_from or METRICS_FROM_DEFAULT
    monitor = one(objects, "ServiceMonitor")
    policies = find(objects, "NetworkPolicy")
    for service in find(objects, "Service"):
        if not _selects(monitor["spec"]["selector"], service["metadata"]["labels"]):
            continue
        pods = {**service["spec"]["selector"]}
        (policy,) = [p for p in policies if _selects(p["spec"]["podSelector"], pods)]
        rules = [r for r in policy["spec"]["ingress"] if {"port": "http", "protocol": "TCP"} in r["ports"]]
        assert rules, policy["metadata"]["name"]
        assert all("from" not in rule or all(peer in rule["from"] for peer in scrapers) for rule in rules), (
            f"{policy['metadata']['name']} keeps the scrapers out"
        )


def test_dashboards_as_configmaps_for_grafanas_sidecar(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, values(**{"metrics.dashboards.folder": "consensus"}))
    boards = [o for o in find(objects, "ConfigMap") if "grafana_dashboard" in o["metadata"]["labels"]]
    assert len(boards) == 3
    for board in boards:
        assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert board["metadata"]["annotations"]["k8s-sidecar-target-directory"] == "consensus"
        ((name, text),) = board["data"].items()
        source = REPO_ROOT / "deploy" / "grafana" / "dashboards" / name
        assert json.loads(text) == json.loads(source.read_text())


# -- probes ------------------------------------------------------------------------------------------------

#: GET paths each component's process serves, as its code routes them: the node's `build_app`
#: (services/node/src/dscore_node/http.py), the gateway's `router` (services/gateway/src/dscore_gateway/app.py)
#: and the chaos service's `create_app` (services/chaos/src/dscore_chaos/app.py); held to them below.
SERVED_GET_PATHS = {
    "node": {"/metrics", "/healthz", "/readyz", "/debug/state"},
    "gateway": {"/healthz", "/readyz", "/metrics", "/v1/cluster"},
    "chaos": {"/healthz", "/metrics", "/v1/faults"},
}


def test_the_served_paths_are_the_services_own_routes() -> None:
    from unittest.mock import MagicMock

    from prometheus_client import CollectorRegistry
    from pydantic import SecretStr

    from dscore_chaos.app import create_app
    from dscore_gateway.app import router
    from dscore_node.http import build_app

    node = build_app(
        MagicMock(), MagicMock(), CollectorRegistry(), admin=True, admin_token=SecretStr("t" * 32)
    )
    served = {
        "node": {r.resource.canonical for r in node.router.routes() if r.method == "GET" and r.resource},
        "gateway": {r.path for r in router.routes if "GET" in getattr(r, "methods", ())},
        "chaos": {
            r.path
            for r in create_app(MagicMock(), api_token=SecretStr("t" * 32), manage_lifecycle=False).routes
            if "GET" in (getattr(r, "methods", None) or ())
        },
    }
    for component, paths in SERVED_GET_PATHS.items():
        assert paths <= served[component], f"{component} does not serve {paths - served[component]}"


@pytest.mark.parametrize("ci_values", CI_VALUES, ids=lambda p: p.name)
def test_every_probe_asks_a_path_its_service_serves(helm_bin: Path, tmp: Path, ci_values: Path) -> None:
    objects = render(helm_bin, tmp, {"chaos": {"enabled": True}}, files=[ci_values])
    probed: set[str] = set()
    problems = []
    for obj in objects:
        if obj["kind"] == "Pod":
            labels, spec = obj["metadata"]["labels"], obj["spec"]
        elif obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            labels, spec = obj["spec"]["template"]["metadata"]["labels"], obj["spec"]["template"]["spec"]
        else:
            continue
        component = labels.get("app.kubernetes.io/component", "")
        for c in [*spec.get("containers", []), *spec.get("initContainers", [])]:
            ports = {p.get("name") for p in c.get("ports", [])}
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                get = c.get(kind, {}).get("httpGet")
                if get is None:
                    continue
                where = f"{obj['kind']}/{obj['metadata']['name']}/{c['name']} {kind}"
                probed.add(component)
                if get["path"] not in SERVED_GET_PATHS.get(component, set()):
                    problems.append(
                        f"{where} asks {get['path']}, which the {component} service does not serve"
                    )
                if get["port"] not in ports:
                    problems.append(f"{where} asks port {get['port']}, not one of {sorted(ports)}")
    assert not problems, "\n".join(problems)
    gateway = yaml.safe_load(ci_values.read_text()).get("gateway", {}).get("enabled", True)
    assert probed == {"node", "chaos"} | ({"gateway"} if gateway else set())


# -- helm tests (templates: kwok cannot run them, so they are checked rendered) ---------------------------


def test_helm_test_pod(helm_bin: Path, tmp: Path) -> None:
    objects = render(helm_bin, tmp, values())
    pod = one(objects, "Pod", "demo-dscore-test-cluster")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    env = env_of(container(spec, "test"))
    assert env["GATEWAY"] == "http://demo-dscore-gateway.dscore.svc:8080"
    assert env["HEADLESS"] == "demo-dscore-node-peers.dscore.svc"
    script = container(spec, "test")["command"][2]
    compile(script, "helm-test", "exec")  # the test's Python at least parses
    assert "/readyz" in script and "/v1/kv/" in script
    assert not find(render(helm_bin, tmp, values(**{"tests.enabled": False})), "Pod")


# -- the values schema -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"node.replicas": 0}, r"at '/node/replicas': minimum: got 0, want 1"),
        ({"node.replicas": "three"}, r"at '/node/replicas': got string, want integer"),
        ({"node.replica": 3}, r"additional properties 'replica' not allowed"),
        (
            {"cluster.protocol": "zab"},
            r"at '/cluster/protocol': value must be one of 'raft', 'paxos', 'pbft'(?!,)",
        ),
        # the simulator's baseline: the node service refuses it (dscore.runtime.protocols)
        (
            {"cluster.protocol": "sequencer"},
            r"at '/cluster/protocol': value must be one of 'raft', 'paxos', 'pbft'(?!,)",
        ),
        ({"cluster.protocol": "pbft"}, r"at '/node/replicas': minimum: got 3, want 4"),
        ({"cluster.protocol": "pbft", "node.replicas": 3}, r"at '/node/replicas': minimum: got 3, want 4"),
        ({"cluster.id": "bad id!"}, r"at '/cluster/id'"),
        ({"cluster.raft.readOnlyOption": "fast"}, r"at '/cluster/raft/readOnlyOption'"),
        ({"redis.mode": "shared"}, r"at '/redis/mode': value must be one of 'sidecar', 'external'"),
        ({"kafka.bootstrapServers": "kafka"}, r"at '/kafka/bootstrapServers'"),
        ({"node.image.digest": "latest"}, r"at '/node/image/digest'"),
        ({"metrics.serviceMonitor.interval": "often"}, r"at '/metrics/serviceMonitor/interval'"),
        ({"node.updateStrategy": "Recreate"}, r"at '/node/updateStrategy': value must be one of"),
    ],
)
def test_schema_rejects_bad_values_with_a_clear_message(
    helm_bin: Path, tmp: Path, bad: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmError, match=message):
        render(helm_bin, tmp, values(**bad))


def test_schema_covers_every_default_value() -> None:
    # values.yaml and values.schema.json name the same keys (a key the schema misses would be refused).
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, node: dict[str, Any], path: str) -> None:
        if "anyOf" in node:
            return
        if isinstance(value, dict) and node.get("properties") is not None:
            assert node.get("additionalProperties") is False, path
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is not in values.schema.json"
                walk(child, node["properties"][key], f"{path}.{key}")

    walk(defaults, schema, "")
    jsonschema_validate(defaults, schema)


def jsonschema_validate(instance: Any, schema: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(instance, schema)
