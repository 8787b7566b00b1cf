"""k8s/ (the development cluster's Kafka, Redis, Prometheus and Grafana): rendered with kustomize (the
kubectl built by scripts/k8s-build.sh), every object validated against Kubernetes' schemas and admitted by
the real API server (server-side dry run), the rules and dashboards exactly deploy/'s, Prometheus'
configuration checked by promtool."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_helpers import REPO_ROOT, container, env_of, pod_specs, validate

K8S_DIR = REPO_ROOT / "k8s"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "k8s-build.sh"
ENSURE_PROMTOOL = REPO_ROOT / "deploy" / "prometheus" / "ensure-tools.sh"


@pytest.fixture(scope="module")
def kubectl() -> Path:
    done = subprocess.run([str(BUILD_SCRIPT), "path", "kubectl"], capture_output=True, text=True, check=True)
    path = Path(done.stdout.strip())
    if not path.exists():
        subprocess.run([str(BUILD_SCRIPT)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def manifests(kubectl: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(kubectl), "kustomize", "--load-restrictor", "LoadRestrictionsNone", str(K8S_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_name(objects: list[dict[str, Any]], kind: str, prefix: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(prefix)]
    return found


def test_every_object_is_valid(manifests: list[dict[str, Any]]) -> None:
    problems = []
    for obj in manifests:
        try:
            validate(obj, {})
        except AssertionError as error:
            problems.append(str(error))
    assert not problems, "\n".join(problems)
    names = sorted(f"{o['kind']}/{o['metadata']['name'].split('-')[0]}" for o in manifests)
    for expected in ("StatefulSet/kafka", "StatefulSet/redis", "Deployment/prometheus", "Deployment/grafana"):
        assert expected in names
    assert all(o["metadata"].get("namespace") == "dscore-dev" for o in manifests if o["kind"] != "Namespace")


def test_rules_and_dashboards_are_deploys(manifests: list[dict[str, Any]]) -> None:
    rules = by_name(manifests, "ConfigMap", "prometheus-rules")["data"]
    assert rules == {"dscore-rules.yaml": (REPO_ROOT / "deploy/prometheus/dscore-rules.yaml").read_text()}
    boards = by_name(manifests, "ConfigMap", "grafana-dashboards")["data"]
    deployed = sorted((REPO_ROOT / "deploy/grafana/dashboards").glob("*.json"))
    assert sorted(boards) == [p.name for p in deployed], "a dashboard of deploy/ is missing from k8s/"
    for path in deployed:
        assert boards[path.name] == path.read_text()
    # Grafana reads them from the folder its provisioning names, and Prometheus from its data source.
    provisioning = by_name(manifests, "ConfigMap", "grafana-provisioning")["data"]
    provider = yaml.safe_load(provisioning["dashboards.yaml"])["providers"][0]
    grafana = by_name(manifests, "Deployment", "grafana")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in container(grafana, "grafana")["volumeMounts"]}
    assert mounts[provider["options"]["path"]] == "dashboards"
    datasource = yaml.safe_load(provisioning["datasources.yaml"])["datasources"][0]
    assert datasource["url"] == "http://prometheus.dscore-dev.svc:9090"
    for board in boards.values():
        assert any(v["type"] == "datasource" for v in json.loads(board)["templating"]["list"])


def test_prometheus_configuration_passes_promtool(manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    tools = subprocess.run(
        ["bash", str(ENSURE_PROMTOOL)], capture_output=True, text=True, timeout=900, check=True
    )
    promtool = tools.stdout.split()[0]
    config = yaml.safe_load(by_name(manifests, "ConfigMap", "prometheus-config")["data"]["prometheus.yml"])
    prometheus = by_name(manifests, "Deployment", "prometheus")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in container(prometheus, "prometheus")["volumeMounts"]}
    (rule_file,) = config["rule_files"]
    assert rule_file == f"{mounts['rules']}/dscore-rules.yaml"
    (tmp_path / "dscore-rules.yaml").write_text(
        by_name(manifests, "ConfigMap", "prometheus-rules")["data"]["dscore-rules.yaml"]
    )
    config["rule_files"] = [str(tmp_path / "dscore-rules.yaml")]
    # Debian's Prometheus is built without Kubernetes service discovery: promtool checks the rest of the
    # configuration (relabelling, rule files) with a static target in its place.
    (scrape,) = config["scrape_configs"]
    assert scrape.pop("kubernetes_sd_configs") == [
        {"role": "endpointslice", "namespaces": {"own_namespace": True}}
    ]
    scrape["static_configs"] = [{"targets": ["127.0.0.1:8080"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The job is the chart's dscore.io/job Service label: what the rules select.
    relabel = config["scrape_configs"][0]["relabel_configs"]
    assert {
        "source_labels": ["__meta_kubernetes_service_label_dscore_io_job"],
        "target_label": "job",
    } in relabel


def test_redis_fsyncs_every_write_and_kafka_creates_no_topic(manifests: list[dict[str, Any]]) -> None:
    redis = by_name(manifests, "StatefulSet", "redis")
    assert redis["spec"]["replicas"] == 3  # one per node of a 3-node release
    command = container(redis["spec"]["template"]["spec"], "redis")["command"]
    assert command[command.index("--appendfsync") + 1] == "always"
    kafka = env_of(container(by_name(manifests, "StatefulSet", "kafka")["spec"]["template"]["spec"], "kafka"))
    assert kafka["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_pods_run_as_non_root(manifests: list[dict[str, Any]]) -> None:
    for where, spec in pod_specs(manifests):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}, where


@pytest.mark.k8s
def test_the_api_server_admits_every_object(
    manifests: list[dict[str, Any]], kubectl: Path, kube_api: Path, namespace: str, tmp_path: Path
) -> None:
    # Into the test's namespace (the manifests name dscore-dev): a server-side dry run runs admission and
    # validation, and persists nothing.
    moved = []
    for obj in manifests:
        if obj["kind"] == "Namespace":
            continue
        obj = json.loads(json.dumps(obj))
        obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []):
            subject["namespace"] = namespace
        moved.append(obj)
    path = tmp_path / "k8s.yaml"
    path.write_text(yaml.safe_dump_all(moved))
    done = subprocess.run(
        [
            str(kubectl),
            "--kubeconfig",
            str(kube_api),
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(server dry run)") == len(moved)
