"""Rendering charts/dscore with the real helm, and validating Kubernetes objects offline.

Built-in kinds are validated with `kubernetes-validate` (the API's JSON schemas for the control plane's
version, strict: an unknown field is an error); the Prometheus Operator's kinds against the CRDs in
crds/ with unknown fields refused wherever the schema lists properties.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "dscore"
CRDS = Path(__file__).resolve().parent / "crds"
#: the local control plane's version (scripts/k8s-build.sh)
KUBE_VERSION = "1.35.0"
HELM_TIMEOUT_S = 120

Obj = dict[str, Any]


class HelmError(AssertionError):
    """helm exited non-zero; the message holds its stderr."""


def run_helm(helm: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=HELM_TIMEOUT_S, env=env, check=False
    )
    if done.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def helm_env(home: Path) -> dict[str, str]:
    """helm's caches and settings in the test's folder, not the user's home."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }


def values_args(values: Mapping[str, Any] | None, tmp: Path) -> list[str]:
    if not values:
        return []
    path = tmp / f"values-{abs(hash(yaml.safe_dump(dict(values))))}.yaml"
    path.write_text(yaml.safe_dump(dict(values)))
    return ["--values", str(path)]


def render(
    helm: Path,
    tmp: Path,
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "demo",
    namespace: str = "dscore",
    files: Iterable[Path] = (),
    extra: Iterable[str] = (),
) -> list[Obj]:
    """`helm template` of the chart; every object, in order (hooks and tests included)."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for file in files:
        args += ["--values", str(file)]
    args += values_args(values, tmp)
    args += list(extra)
    out = run_helm(helm, *args, env=helm_env(tmp / "helm-home"))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(objects: Iterable[Obj], kind: str, name: str | None = None) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: Iterable[Obj], kind: str, name: str | None = None) -> Obj:
    found = find(objects, kind, name)
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def container(pod_spec: Obj, name: str) -> Obj:
    for c in [*pod_spec.get("containers", []), *pod_spec.get("initContainers", [])]:
        if c["name"] == name:
            return c
    raise AssertionError(f"no container {name} in {[c['name'] for c in pod_spec.get('containers', [])]}")


def env_of(c: Obj) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def pod_specs(objects: Iterable[Obj]) -> list[tuple[str, Obj]]:
    """(kind/name, pod spec) of every pod template and bare pod."""
    out = []
    for o in objects:
        if o["kind"] == "Pod":
            out.append((f"Pod/{o['metadata']['name']}", o["spec"]))
        elif o["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            out.append((f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]))
    return out


# -- validation ------------------------------------------------------------------------------------------


def _strict(schema: Any) -> Any:
    """An openAPIV3Schema with unknown fields refused wherever it lists properties (metadata aside)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def crd_schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) -> JSON schema, from crds/."""
    schemas: dict[tuple[str, str], Obj] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                schema["properties"]["metadata"] = {"type": "object"}
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def validate(obj: Obj, custom: Mapping[tuple[str, str], Obj] | None = None) -> None:
    """Raise AssertionError naming the object and the problem."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    custom = custom if custom is not None else crd_schemas()
    try:
        if key in custom:
            jsonschema.validate(obj, custom[key])
        else:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError as error:
        raise AssertionError(f"{name}: {error.message}") from None
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        raise AssertionError(f"{name}: at {where or '(top)'}: {error.message}") from None
