"""The Tiltfile, loaded by a real Starlark interpreter (starlark-rust, from PyPI's starlark-pyo3) with Tilt's
functions stubbed to record their calls: it loads, names only files that exist, and what it asks of Tilt fits
what the chart and k8s/ make (resource names, ports, live-update paths, the chart's values).

Tilt itself is not run (no Tilt, Docker or kind on this machine): how Tilt carries these calls out is Tilt's.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import starlark as sl
import yaml
from chart_helpers import CHART, REPO_ROOT, container, env_of, find, render, validate

TILTFILE = REPO_ROOT / "Tiltfile"
SERVICES = ("node", "gateway", "chaos")


@dataclass
class Call:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class TiltRun:
    calls: list[Call] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def of(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.name == name]


def load_tiltfile(exists: Any = None, args: dict[str, Any] | None = None) -> TiltRun:
    """Evaluate the Tiltfile with Tilt's API stubbed; `exists(path)` answers os.path.exists."""
    run = TiltRun()
    exists = exists or (lambda path: (REPO_ROOT / path).exists())
    module = sl.Module()

    def recorder(name: str, result: Any = None) -> Any:
        def record(*a: Any, **k: Any) -> Any:
            run.calls.append(Call(name, a, k))
            return {"tilt": name, "args": list(a), "kwargs": k} if result is None else result

        return record

    for name in (
        "version_settings",
        "allow_k8s_contexts",
        "custom_build",
        "k8s_yaml",
        "kustomize",
        "helm",
        "k8s_resource",
        "local_resource",
        "watch_file",
        "local",
        "sync",
        "run",
        "fall_back_on",
    ):
        module.add_callable(name, recorder(name))
    module.add_callable("warn", run.warnings.append)

    def fail(message: str) -> None:
        raise AssertionError(f"the Tiltfile called fail(): {message}")

    module.add_callable("fail", fail)
    module.add_callable("_exists", lambda path: bool(exists(path)))
    module.add_callable("_define", recorder("config.define"))
    module.add_callable("_parse", lambda: dict(args or {}))
    module["TRIGGER_MODE_MANUAL"] = "manual"
    module["TRIGGER_MODE_AUTO"] = "auto"
    extensions = [sl.LibraryExtension.StructType, sl.LibraryExtension.Print]
    globals_ = sl.Globals.extended_by(extensions)
    dialect = sl.Dialect.extended()
    dialect.enable_top_level_stmt = True
    prelude = (
        "os = struct(path = struct(exists = _exists))\n"
        "config = struct(define_string = _define, define_bool = _define, parse = _parse)\n"
    )
    sl.eval(module, sl.parse("prelude.star", prelude, dialect), globals_)
    sl.eval(module, sl.parse("Tiltfile", TILTFILE.read_text(), dialect), globals_)
    return run


def all_services_present(path: str) -> bool:
    if path.startswith(tuple(f"services/{s}/" for s in SERVICES)):
        return True
    return (REPO_ROOT / path).exists()


@pytest.fixture(scope="module")
def tilt() -> TiltRun:
    return load_tiltfile()


@pytest.fixture(scope="module")
def tilt_full() -> TiltRun:
    """As on a tree with every service (node and chaos come from other branches)."""
    return load_tiltfile(all_services_present)


def named_paths(run: TiltRun) -> list[str]:
    """Every repository path the Tiltfile hands Tilt or runs."""
    paths: list[str] = []
    for call in run.of("custom_build"):
        paths.append(shlex.split(call.args[1])[0])
        paths += call.kwargs["deps"]
    for call in run.of("sync"):
        paths.append(call.args[0])
    for call in run.of("fall_back_on"):
        paths += call.args[0]
    for call in run.of("helm"):
        paths.append(call.args[0])
        paths += call.kwargs.get("values", [])
    for call in run.of("kustomize"):
        paths.append(call.args[0])
    for call in run.of("watch_file"):
        paths.append(call.args[0])
    for call in [*run.of("local"), *run.of("local_resource")]:
        command = call.args[0] if call.name == "local" else call.kwargs["cmd"]
        paths.append(shlex.split(command)[0])
    return paths


def test_it_loads_and_names_only_files_that_exist(tilt: TiltRun) -> None:
    paths = named_paths(tilt)
    assert paths
    missing = [p for p in paths if not (REPO_ROOT / p).exists()]
    assert not missing, f"the Tiltfile names files that do not exist: {missing}"
    for script in {p for p in paths if p.endswith(".sh")}:
        assert os.access(REPO_ROOT / script, os.X_OK), f"{script} is not executable"
        done = subprocess.run(
            ["bash", "-n", str(REPO_ROOT / script)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr


def test_services_missing_from_the_tree_are_skipped_with_a_warning(tilt: TiltRun) -> None:
    built = {call.args[0] for call in tilt.of("custom_build")}
    for service in SERVICES:
        present = (REPO_ROOT / "services" / service / "src").exists()
        assert (f"dscore/{service}" in built) == present
        assert any(f"services/{service}" in w for w in tilt.warnings) == (not present)


def test_with_every_service_it_still_names_only_real_paths(tilt_full: TiltRun) -> None:
    built = {call.args[0] for call in tilt_full.of("custom_build")}
    assert built == {f"dscore/{s}" for s in SERVICES}
    missing = [
        p
        for p in named_paths(tilt_full)
        if not (REPO_ROOT / p).exists() and not p.startswith(tuple(f"services/{s}/" for s in SERVICES))
    ]
    assert not missing
    assert not tilt_full.warnings


def test_live_update_syncs_where_the_chart_puts_the_overlay(
    tilt_full: TiltRun, helm_bin: Path, tmp_path: Path
) -> None:
    (helm_call,) = tilt_full.of("helm")
    objects = render(
        helm_bin,
        tmp_path,
        release=helm_call.kwargs["name"],
        namespace=helm_call.kwargs["namespace"],
        files=[REPO_ROOT / v for v in helm_call.kwargs["values"]],
        extra=[arg for s in helm_call.kwargs["set"] for arg in ("--set", s)],
    )
    python_paths = {}
    for obj in objects:
        if obj["kind"] in ("StatefulSet", "Deployment") and obj["metadata"]["name"].startswith("dscore-"):
            service = obj["metadata"]["name"].removeprefix("dscore-")
            main = container(obj["spec"]["template"]["spec"], service)
            python_paths[service] = env_of(main)["PYTHONPATH"].split(":")
    assert set(python_paths) == set(SERVICES)
    for call in tilt_full.of("custom_build"):
        service = call.args[0].removeprefix("dscore/")
        steps = call.kwargs["live_update"]
        synced = [step["args"][1] for step in steps if step["tilt"] == "sync"]
        assert synced == python_paths[service], service
        assert steps[0]["tilt"] == "fall_back_on" and "uv.lock" in steps[0]["args"][0]
        assert steps[-1] == {"tilt": "run", "args": ["kill -TERM 1"], "kwargs": {}}
        assert call.kwargs["skips_local_docker"] is True
    # The overlay is a development switch: the chart's default leaves it off.
    defaults = render(helm_bin, tmp_path, {"kafka": {"bootstrapServers": "k:9092"}})
    assert "dscore-src" not in yaml.safe_dump_all(defaults)


def test_resources_name_real_workloads_with_their_ports(
    tilt_full: TiltRun, helm_bin: Path, tmp_path: Path
) -> None:
    (helm_call,) = tilt_full.of("helm")
    chart = render(
        helm_bin,
        tmp_path,
        release=helm_call.kwargs["name"],
        namespace=helm_call.kwargs["namespace"],
        files=[REPO_ROOT / v for v in helm_call.kwargs["values"]],
        extra=[arg for s in helm_call.kwargs["set"] for arg in ("--set", s)],
    )
    for obj in chart:
        validate(obj)
    kubectl = subprocess.run(
        [str(REPO_ROOT / "scripts/k8s-build.sh"), "path", "kubectl"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (kustomize_call,) = tilt_full.of("kustomize")
    deps = subprocess.run(
        [kubectl, "kustomize", *kustomize_call.kwargs["flags"], str(REPO_ROOT / kustomize_call.args[0])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    workloads = {
        o["metadata"]["name"]: o
        for o in [*chart, *yaml.safe_load_all(deps)]
        if o and o["kind"] in ("StatefulSet", "Deployment")
    }
    resources = {call.args[0]: call.kwargs for call in tilt_full.of("k8s_resource")}
    assert set(resources) == set(workloads), (
        "every workload gets a resource, and every resource is a workload"
    )
    local_resources = {call.args[0] for call in tilt_full.of("local_resource")}
    for name, options in resources.items():
        for dep in options.get("resource_deps", []):
            assert dep in resources or dep in local_resources, f"{name} depends on unknown {dep}"
        for forward in options.get("port_forwards", []):
            _, remote = forward.split(":")
            ports = [
                p["containerPort"]
                for c in workloads[name]["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])
            ]
            assert int(remote) in ports, f"{name}: {forward} forwards to no container port ({ports})"
    forwards = {name: o["port_forwards"] for name, o in resources.items() if o.get("port_forwards")}
    assert forwards == {
        "dscore-gateway": ["8080:8080"],
        "grafana": ["3000:3000"],
        "prometheus": ["9090:9090"],
    }
    assert resources["dscore-node"]["resource_deps"] == ["kafka"]
    assert resources["dscore-gateway"]["resource_deps"] == ["dscore-node"]
    # Chaos on when its image is built; its release values select it.
    assert find(chart, "Deployment", "dscore-chaos")
    # The key comes from the Secret tilt-secret.sh makes, never from a render (which would draw a new one).
    assert not find(chart, "Secret")


def test_the_failover_drill_button(tilt: TiltRun) -> None:
    (drill,) = tilt.of("local_resource")
    assert drill.args[0] == "failover-drill"
    assert drill.kwargs["trigger_mode"] == "manual" and drill.kwargs["auto_init"] is False
    command = shlex.split(drill.kwargs["cmd"])
    assert command[0] == "k8s/failover-drill.sh"
    assert command[1:] == ["dscore-dev", "dscore-node", "http://localhost:8080"]


def test_cluster_size_from_the_command_line() -> None:
    run = load_tiltfile(args={"replicas": "5"})
    (helm_call,) = run.of("helm")
    assert "node.replicas=5" in helm_call.kwargs["set"]
    assert helm_call.args[0] == os.path.relpath(CHART, REPO_ROOT)
