"""Settings (every bad one named by its variable, secrets never shown; no start without the API token
unless the explicit opt-out) and the `dscore-chaos` process: bad settings exit 2; the fault API needs the
bearer token over real HTTP; SIGTERM stops every fault (a paused process is resumed) and exits 0."""

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
from chaos_helpers import MARKER, TOKEN, WAIT_S, Children, running, stopped, wait_state

from dscore.core.errors import ConfigError
from dscore_chaos.main import build_service
from dscore_chaos.settings import MIN_API_TOKEN_CHARS, load_chaos_settings

SECRET = "s3cret-" + "x" * 40


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DSCORE_"):
            monkeypatch.delenv(name)


def test_defaults_enable_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_CHAOS__API_TOKEN", TOKEN)
    settings = load_chaos_settings()
    assert build_service(settings).kinds == []
    assert settings.chaos.port == 8090 and settings.kubernetes_namespace() == "default"
    # private unless told otherwise (the chart and the image set 0.0.0.0)
    assert settings.chaos.host == "127.0.0.1"
    assert settings.chaos.api_token is not None and settings.chaos.api_token.get_secret_value() == TOKEN


# -- the API token --------------------------------------------------------------------------------------


def test_no_start_without_an_api_token() -> None:
    with pytest.raises(ConfigError) as caught:
        load_chaos_settings()
    message = str(caught.value)
    assert "DSCORE_CHAOS__API_TOKEN is required" in message
    assert "DSCORE_CHAOS__INSECURE_NO_AUTH=true" in message  # the way out, named


def test_the_clusters_insecure_switch_does_not_open_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    # DSCORE_INSECURE_NO_AUTH (a keyless cluster, shared by every service's ConfigMap) is another matter
    monkeypatch.setenv("DSCORE_INSECURE_NO_AUTH", "true")
    with pytest.raises(ConfigError, match="DSCORE_CHAOS__API_TOKEN is required"):
        load_chaos_settings()


def test_the_explicit_opt_out_starts_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_CHAOS__INSECURE_NO_AUTH", "true")
    settings = load_chaos_settings()
    assert settings.chaos.api_token is None and settings.chaos.insecure_no_auth


def test_a_token_is_required_even_with_the_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_CHAOS__INSECURE_NO_AUTH", "true")
    monkeypatch.setenv("DSCORE_CHAOS__API_TOKEN", TOKEN)
    token = load_chaos_settings().chaos.api_token
    assert token is not None and token.get_secret_value() == TOKEN


@pytest.mark.parametrize("around", [" ", "\n", "\t \r\n", "  \n"])
def test_surrounding_whitespace_is_stripped_at_load(monkeypatch: pytest.MonkeyPatch, around: str) -> None:
    # a token file ending in a newline, a value pasted with a space
    monkeypatch.setenv("DSCORE_CHAOS__API_TOKEN", f"{around}{TOKEN}{around}")
    token = load_chaos_settings().chaos.api_token
    assert token is not None and token.get_secret_value() == TOKEN


@pytest.mark.parametrize(
    ("token", "why"),
    [
        ("", "is blank"),
        ("   ", "is blank"),
        ("\n\t", "is blank"),
        ("a" * 20 + " " + "b" * 20, "contains whitespace"),
        ("a" * 20 + "\t" + "b" * 20, "contains whitespace"),
        ("a" * 20 + "\n" + "b" * 20, "contains whitespace"),
        ("a" * 20 + "\u00a0" + "b" * 20, "contains whitespace"),  # a no-break space
        ("a" * 20 + "é" + "b" * 20, "must be visible ASCII"),
        ("a" * 20 + "\x00" + "b" * 20, "must be visible ASCII"),
        ("x" * (MIN_API_TOKEN_CHARS - 1), f"must be at least {MIN_API_TOKEN_CHARS} characters"),
        (" " + "x" * (MIN_API_TOKEN_CHARS - 1) + " ", f"must be at least {MIN_API_TOKEN_CHARS} characters"),
    ],
)
def test_a_bad_api_token_is_refused_without_showing_it(
    monkeypatch: pytest.MonkeyPatch, token: str, why: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        if "\x00" in token:  # no environment variable holds one: as a keyword
            load_chaos_settings(chaos={"api_token": token})
        else:
            monkeypatch.setenv("DSCORE_CHAOS__API_TOKEN", token)
            load_chaos_settings()
    message = str(caught.value)
    assert f"DSCORE_CHAOS__API_TOKEN: {why}" in message, message
    assert "got" not in message  # neither the value nor its length
    if token.strip():
        assert token.strip() not in message


def test_the_shortest_token_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_CHAOS__API_TOKEN", "x" * MIN_API_TOKEN_CHARS)
    assert load_chaos_settings().chaos.api_token is not None
    assert MIN_API_TOKEN_CHARS == 32  # as the node's /admin token


def test_the_token_is_never_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSCORE_CHAOS__API_TOKEN", TOKEN)
    settings = load_chaos_settings()
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    assert TOKEN not in settings.model_dump_json()


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DSCORE_NODES", "n1, n2,n3")
    monkeypatch.setenv("DSCORE_AUTH_KEY", SECRET)
    monkeypatch.setenv("DSCORE_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv("DSCORE_CHAOS__PROCESSES__ENABLED", "true")
    monkeypatch.setenv("DSCORE_CHAOS__PROCESSES__RUN_DIR", str(tmp_path))
    monkeypatch.setenv("DSCORE_CHAOS__PROCESSES__NODE_URLS", "node-n1=http://127.0.0.1:1,node-n2=http://h:2/")
    monkeypatch.setenv("DSCORE_CHAOS__KUBERNETES__NAMESPACE", "dscore")
    monkeypatch.setenv("DSCORE_RAFT__PRE_VOTE", "false")  # a node's setting: ignored here
    monkeypatch.setenv("DSCORE_CHAOS__API_TOKEN", TOKEN)
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
    monkeypatch.setenv("DSCORE_CHAOS__API_TOKEN", "tooshort-api-token")
    monkeypatch.setenv("DSCORE_CHAOS__GRAFANA__TOKEN", "")
    monkeypatch.setenv("DSCORE_CHAOS__GRAFANA__URL", "not a url")
    with pytest.raises(ConfigError) as caught:
        load_chaos_settings()
    assert "tooshort-secret" not in str(caught.value)
    assert "tooshort-api-token" not in str(caught.value)
    assert "DSCORE_CHAOS__GRAFANA__URL" in str(caught.value)
    assert "DSCORE_CHAOS__API_TOKEN" in str(caught.value)


def test_kubernetes_without_credentials_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DSCORE_CHAOS__API_TOKEN", TOKEN)
    monkeypatch.setenv("DSCORE_CHAOS__KUBERNETES__ENABLED", "true")
    monkeypatch.setenv("DSCORE_CHAOS__KUBERNETES__KUBECONFIG", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no Kubernetes credentials"):
        build_service(load_chaos_settings())


# -- the process ------------------------------------------------------------------------------------


def _chaos_bin() -> str:
    return str(Path(sys.executable).parent / "dscore-chaos")


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _text(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _request(
    method: str, url: str, body: Any = None, *, token: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read()), _lower(response.headers.items())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), _lower(error.headers.items())


def _lower(headers: Any) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def test_bad_settings_exit_2_naming_the_variable() -> None:
    env = {**os.environ, "DSCORE_CHAOS__PORT": "99999", "DSCORE_CHAOS__API_TOKEN": TOKEN}
    done = subprocess.run([_chaos_bin()], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "DSCORE_CHAOS__PORT" in done.stderr


def test_no_token_exits_2_naming_the_setting_and_its_opt_out() -> None:
    done = subprocess.run(
        [_chaos_bin()], env=dict(os.environ), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "DSCORE_CHAOS__API_TOKEN is required" in done.stderr
    assert "DSCORE_CHAOS__INSECURE_NO_AUTH=true" in done.stderr


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
        "DSCORE_CHAOS__API_TOKEN": f"{TOKEN}\n",  # as read from a file: stripped at load
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
                status, health, _ = _request("GET", f"{base}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "dscore-chaos did not listen within 60 s"
                time.sleep(0.05)
        assert status == 200 and health["kinds"] == ["process_kill", "process_pause"]
        pause = {"kind": "process_pause", "target": "node-n1", "params": {"duration_s": 300}}
        # over real HTTP: no token, a wrong one: 401 and nothing done
        status, body, headers = _request("POST", f"{base}/v1/faults", pause)
        assert status == 401 and body["error"] == "unauthorized", body
        assert headers["www-authenticate"].startswith("Bearer"), headers
        status, body, _ = _request("POST", f"{base}/v1/faults", pause, token="x" * len(TOKEN))
        assert status == 401 and body == {"error": "unauthorized", "message": "bad bearer token"}
        assert running(_state(child.pid))
        status, metrics = _text(f"{base}/metrics")
        assert status == 200 and 'dscore_chaos_requests_rejected_total{reason="bad_token"} 1.0' in metrics
        status, fault, _ = _request("POST", f"{base}/v1/faults", pause, token=TOKEN)
        assert status == 201 and fault["state"] == "active", fault
        wait_state(child.pid, stopped, "paused")
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=WAIT_S * 3) == 0
        wait_state(child.pid, running, "resumed at the service's shutdown")
        output = service.stdout.read() if service.stdout else ""
        assert f"fault {fault['id']} stopped" in output
        assert "API auth bearer token" in output and TOKEN not in output  # never logged
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(timeout=WAIT_S)
        if service.stdout is not None:
            service.stdout.close()
