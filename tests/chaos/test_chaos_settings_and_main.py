"""Settings (every bad one named by its variable, secrets never shown) and the `dscore-chaos` process:
bad settings exit 2; SIGTERM stops every fault (a paused process is resumed) and exits 0."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from chaos_helpers import MARKER, WAIT_S, Children, running, stopped, wait_state

from dscore.core.errors import ConfigError
from dscore_chaos.main import build_service
from dscore_chaos.settings import load_chaos_settings

SECRET = "s3cret-" + "x" * 40


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DSCORE_"):
            monkeypatch.delenv(name)


def test_defaults_enable_nothing() -> None:
    settings = load_chaos_settings()
    assert build_service(settings).kinds == []
    assert settings.chaos.port == 8090 and settings.kubernetes_namespace() == "default"


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DSCORE_NODES", "n1, n2,n3")
    monkeypatch.setenv("DSCORE_AUTH_KEY", SECRET)
    monkeypatch.setenv("DSCORE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DSCORE_CHAOS__PROCESSES__ENABLED", "true")
    monkeypatch.setenv("DSCORE_CHAOS__PROCESSES__RUN_DIR", str(tmp_path))
    monkeypatch.setenv("DSCORE_CHAOS__PROCESSES__NODE_URLS", "node-n1=http://127.0.0.1:1,node-n2=http://h:2/")
    monkeypatch.setenv("DSCORE_CHAOS__KUBERNETES__NAMESPACE", "dscore")
    monkeypatch.setenv("DSCORE_RAFT__PRE_VOTE", "false")  # a node's setting: ignored here
    settings = load_chaos_settings()
    assert settings.nodes == ("n1", "n2", "n3")
    assert settings.auth_key_bytes() == SECRET.encode()
    assert settings.chaos.processes.node_urls == {"node-n1": "http://127.0.0.1:1", "node-n2": "http://h:2/"}
    assert settings.kubernetes_namespace() == "dscore"
    service = build_service(settings)
    assert [k.value for k in service.kinds] == [
        "process_kill",
        "process_pause",
        "omission",
        "delay",
        "partition",
    ]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DSCORE_KAFKA__BOOTSTRAP_SERVERS": "kafka"}, "DSCORE_KAFKA__BOOTSTRAP_SERVERS"),
        ({"DSCORE_KAFKA__BOOTSTRAP_SERVERS": "k:1"}, "DSCORE_AUTH_KEY is required for transport faults"),
        ({"DSCORE_AUTH_KEY": "short"}, "DSCORE_AUTH_KEY"),
        ({"DSCORE_NODES": "n1,n1"}, "DSCORE_NODES"),
        ({"DSCORE_CHAOS__PORT": "0"}, "DSCORE_CHAOS__PORT"),
        ({"DSCORE_CHAOS__MAX_DURATION_S": "7200"}, "DSCORE_CHAOS__MAX_DURATION_S"),
        ({"DSCORE_CHAOS__PROCESSES__NODE_URLS": "node-n1"}, "DSCORE_CHAOS__PROCESSES__NODE_URLS"),
        ({"DSCORE_CHAOS__KUBERNETES__LEADER_LOOKUP": "guess"}, "DSCORE_CHAOS__KUBERNETES__LEADER_LOOKUP"),
        ({"DSCORE_CHAOS__GRAFANA__URL": "http://grafana:3000"}, "DSCORE_CHAOS__GRAFANA__TOKEN"),
        ({"DSCORE_CHAOS__COLOUR": "red"}, "DSCORE_CHAOS__COLOUR"),
    ],
)
def test_a_bad_setting_is_named(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=named):
        load_chaos_settings()


def test_secrets_never_appear_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_AUTH_KEY", "tooshort-secret")
    monkeypatch.setenv("DSCORE_CHAOS__GRAFANA__TOKEN", "")
    monkeypatch.setenv("DSCORE_CHAOS__GRAFANA__URL", "not a url")
    with pytest.raises(ConfigError) as caught:
        load_chaos_settings()
    assert "tooshort-secret" not in str(caught.value)
    assert "DSCORE_CHAOS__GRAFANA__URL" in str(caught.value)


def test_kubernetes_without_credentials_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DSCORE_CHAOS__KUBERNETES__ENABLED", "true")
    monkeypatch.setenv("DSCORE_CHAOS__KUBERNETES__KUBECONFIG", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no Kubernetes credentials"):
        build_service(load_chaos_settings())


# -- the process ------------------------------------------------------------------------------------


def _chaos_bin() -> str:
    return str(Path(sys.executable).parent / "dscore-chaos")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _request(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_bad_settings_exit_2_naming_the_variable() -> None:
    env = {**os.environ, "DSCORE_CHAOS__PORT": "99999"}
    done = subprocess.run([_chaos_bin()], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "DSCORE_CHAOS__PORT" in done.stderr


def test_sigterm_resumes_a_paused_process_and_exits_0(children: Children) -> None:
    child = children.start("node-n1")
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DSCORE_")},
        "DSCORE_CHAOS__HOST": "127.0.0.1",
        "DSCORE_CHAOS__PORT": str(port),
        "DSCORE_CHAOS__PROCESSES__ENABLED": "true",
        "DSCORE_CHAOS__PROCESSES__RUN_DIR": str(children.run_dir),
        "DSCORE_CHAOS__PROCESSES__CMDLINE_MARKER": MARKER,
    }
    service = subprocess.Popen(
        [_chaos_bin()],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # until it listens (or died)
            assert service.poll() is None, service.stdout.read() if service.stdout else ""
            try:
                status, health = _request("GET", f"{base}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "dscore-chaos did not listen within 60 s"
                time.sleep(0.05)
        assert status == 200 and health["kinds"] == ["process_kill", "process_pause"]
        status, fault = _request(
            "POST",
            f"{base}/v1/faults",
            {"kind": "process_pause", "target": "node-n1", "params": {"duration_s": 300}},
        )
        assert status == 201 and fault["state"] == "active", fault
        wait_state(child.pid, stopped, "paused")
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=WAIT_S * 3) == 0
        wait_state(child.pid, running, "resumed at the service's shutdown")
        output = service.stdout.read() if service.stdout else ""
        assert f"fault {fault['id']} stopped" in output
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(timeout=WAIT_S)
        if service.stdout is not None:
            service.stdout.close()
