"""`make up` / `make down` (scripts/dev.sh): one Redis per node, three `dscore-node` processes, a
gateway, the chaos service and a Prometheus in the background, each with its pid in
`<run dir>/<name>.pid`; the URLs and the log folder printed; a write and a read through the gateway;
Prometheus scrapes all five services and evaluates dscore's rules; the README's failover drill (the
chaos service's HTTP API, with the bearer token `up` made in `<run dir>/chaos.token` (mode 600; no
token: 401), kills the leader's process) leaves a cluster that still serves writes; `down`
stops every process and removes the pid files. `DSCORE_PROTOCOL=pbft` starts four replicas by itself,
serves through the gateway and survives the primary's kill (a view change). Ports and the run folder are
this test's own (free ports, `tmp_path`), so it never meets a person's `make up` or another checkout's
run; the broker is the test session's (`DSCORE_DEV_KAFKA_BOOTSTRAP`), which `down` leaves running."""

from __future__ import annotations

import json
import os
import random
import socket
import stat
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
NODES = ("n1", "n2", "n3")


def _free_block(size: int) -> int:
    """A base port whose base+1 .. base+size are free on 127.0.0.1 now, below the kernel's ephemeral range:
    the services bind their ports one after another while clients (Kafka, Redis) open connections, and an
    ephemeral source port once took a node's HTTP port between this check and its bind."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, ephemeral_low - size - 1)
        sockets = []
        try:
            for offset in range(1, size + 1):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free block of ports")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _json(
    url: str, method: str = "GET", body: dict[str, Any] | None = None, *, token: str | None = None
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers=headers,
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")
    except OSError:
        return 0, None


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    status, body = _json(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert status == 200, body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Re-check `condition` (it asks a service) until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.2)


def _dev(args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / "scripts" / "dev.sh"), args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _dev_env(
    run_dir: Path, nodes: int, kafka_bootstrap: str, namespace: str
) -> tuple[dict[str, str], tuple[int, int, int]]:
    """dev.sh's environment on ports of this test's own, and (gateway, chaos, Prometheus) ports. One block
    for every port, so the services' ports cannot overlap each other: base+1..+n Redis, base+n+1..+2n
    the nodes' HTTP, then the gateway, the chaos service and Prometheus."""
    base = _free_block(2 * nodes + 3)
    ports = (base + 2 * nodes + 1, base + 2 * nodes + 2, base + 2 * nodes + 3)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DSCORE_")},
        "DSCORE_RUN_DIR": str(run_dir),
        "DSCORE_DEV_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DSCORE_CLUSTER_ID": namespace,
        "DSCORE_REDIS_PORT": str(base),
        "DSCORE_NODE_HTTP_PORT": str(base + nodes),
        "DSCORE_GATEWAY_PORT": str(ports[0]),
        "DSCORE_CHAOS_PORT": str(ports[1]),
        "DSCORE_PROMETHEUS_PORT": str(ports[2]),
    }
    return env, ports


def test_make_up_starts_redis_nodes_and_a_gateway_and_make_down_stops_them(
    tmp_path: Path, kafka_bootstrap: str, namespace: str
) -> None:
    run_dir = tmp_path / "run"
    env, (gateway_port, chaos_port, prometheus_port) = _dev_env(
        run_dir, len(NODES), kafka_bootstrap, namespace
    )
    env["DSCORE_PROMETHEUS_SCRAPE_INTERVAL"] = "1s"
    pids: dict[str, int] = {}
    try:
        up = _dev("up", env)
        assert up.returncode == 0, up.stderr[-3000:]
        url = f"http://127.0.0.1:{gateway_port}"
        assert f"Gateway: {url}" in up.stdout and f"Logs: {run_dir / 'logs'}/" in up.stdout, up.stdout
        chaos = f"http://127.0.0.1:{chaos_port}"
        prometheus = f"http://127.0.0.1:{prometheus_port}"
        assert f"Chaos:   {chaos}/v1/faults" in up.stdout and f"Prometheus: {prometheus}" in up.stdout
        names = (
            "gateway",
            "chaos",
            "prometheus",
            *(f"node-{n}" for n in NODES),
            *(f"redis-{n}" for n in NODES),
        )
        for name in names:
            pids[name] = int((run_dir / f"{name}.pid").read_text())
            assert _alive(pids[name]), name
            assert (run_dir / "logs" / f"{name}.log").exists(), name
        put = urllib.request.Request(
            f"{url}/v1/kv/greeting",
            data=json.dumps({"value": "hello"}).encode(),
            headers={"Content-Type": "application/json"},
            method="PUT",
        )
        with urllib.request.urlopen(put, timeout=10) as response:
            assert response.status == 204
        with urllib.request.urlopen(f"{url}/v1/kv/greeting", timeout=10) as response:
            assert json.loads(response.read()) == {"key": "greeting", "value": "hello"}
        again = _dev("up", env)  # idempotent: what runs is kept
        assert again.returncode == 0, again.stderr[-2000:]
        assert int((run_dir / "node-n1.pid").read_text()) == pids["node-n1"]
        assert int((run_dir / "prometheus.pid").read_text()) == pids["prometheus"]

        # Prometheus scrapes the three nodes, the gateway and the chaos service, and runs dscore's rules.
        def scraped() -> bool:
            up = _query(prometheus, "up == 1")
            leader = _query(prometheus, "job_protocol:dscore_has_leader:max == 1")
            return len(up) == len(NODES) + 2 and len(leader) == 1

        _wait(scraped, "Prometheus scrapes all five and the has-leader rule says 1")
        jobs = {r["metric"]["job"] for r in _query(prometheus, "up")}
        assert jobs == {"dscore-node", "dscore-gateway", "dscore-chaos"}, jobs

        # The chaos service's token: made by `up` in the run folder, owner-only, and what `up` prints
        # tells how to send it (never the token itself).
        token_file = run_dir / "chaos.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32 and token not in up.stdout and token not in up.stderr
        assert f"Authorization: Bearer $(cat '{token_file}')" in up.stdout, up.stdout
        assert f"DSCORE_CHAOS_TOKEN_FILE={token_file}" in (run_dir / "dev.env").read_text().splitlines()
        assert token not in (run_dir / "logs" / "chaos.log").read_text()
        kill = {"kind": "process_kill", "target": "leader"}
        assert _json(f"{chaos}/v1/faults", "POST", kill)[0] == 401
        assert _json(f"{chaos}/v1/faults", "POST", kill, token="x" * 44)[0] == 401
        # The README's failover drill: the chaos service kills the leader's process; writes go on.
        status, fault = _json(f"{chaos}/v1/faults", "POST", kill, token=token)
        assert status == 201 and fault["injections"][0]["outcome"] == "injected", fault
        killed = fault["injections"][0]["target"]
        assert killed in {f"node-{n}" for n in NODES}, fault
        # SIGKILL is delivered asynchronously: the process may still be tearing down right after the kill
        _wait(lambda: not _alive(pids[killed]), f"{killed} (pid {pids[killed]}) is gone", timeout_s=10)
        _wait(lambda: _json(f"{url}/v1/kv/greeting", "PUT", {"value": "again"})[0] == 204, "a write after")
        _wait(
            lambda: bool(_query(prometheus, 'dscore_chaos_faults_injected_total{kind="kill"} == 1')), "kill"
        )
    finally:
        down = _dev("down", env)
    assert down.returncode == 0, down.stderr[-2000:]
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert not list(run_dir.glob("*.pid")), list(run_dir.glob("*.pid"))


def test_make_up_with_pbft_starts_four_replicas_that_serve_through_the_gateway(
    tmp_path: Path, kafka_bootstrap: str, namespace: str
) -> None:
    """`DSCORE_PROTOCOL=pbft make up`: four replicas (n = 3f + 1) without DSCORE_NODES, the gateway waits
    for f + 1 matching replies; a write and a read, the primary killed by the chaos service and a write
    in the next view; `down` stops all. No Prometheus (the Raft test above covers it)."""
    run_dir = tmp_path / "run"
    nodes = ("n1", "n2", "n3", "n4")
    env, (gateway_port, chaos_port, _) = _dev_env(run_dir, len(nodes), kafka_bootstrap, namespace)
    env.update(DSCORE_PROTOCOL="pbft", DSCORE_DEV_PROMETHEUS="0")
    pids: dict[str, int] = {}
    try:
        up = _dev("up", env)
        assert up.returncode == 0, up.stderr[-3000:]
        assert [line.split()[1] for line in up.stdout.splitlines() if line.startswith("Node:")] == list(nodes)
        for name in ("gateway", "chaos", *(f"node-{n}" for n in nodes), *(f"redis-{n}" for n in nodes)):
            pids[name] = int((run_dir / f"{name}.pid").read_text())
            assert _alive(pids[name]), name
        assert not (run_dir / "prometheus.pid").exists()
        url = f"http://127.0.0.1:{gateway_port}"
        assert _json(f"{url}/v1/kv/greeting", "PUT", {"value": "hello"})[0] == 204
        assert _json(f"{url}/v1/kv/greeting") == (200, {"key": "greeting", "value": "hello"})
        status, cluster = _json(f"{url}/v1/cluster")
        assert status == 200 and (cluster["protocol"], cluster["leader_role"]) == ("pbft", "primary"), cluster
        primary = cluster["leader"]
        assert primary in nodes, cluster

        status, fault = _json(
            f"http://127.0.0.1:{chaos_port}/v1/faults",
            "POST",
            {"kind": "process_kill", "target": "leader"},
            token=(run_dir / "chaos.token").read_text().strip(),
        )
        assert status == 201 and fault["injections"][0]["target"] == f"node-{primary}", fault
        _wait(lambda: not _alive(pids[f"node-{primary}"]), "the primary's process is gone", timeout_s=10)
        _wait(lambda: _json(f"{url}/v1/kv/greeting", "PUT", {"value": "again"})[0] == 204, "a write after")
        assert _json(f"{url}/v1/kv/greeting") == (200, {"key": "greeting", "value": "again"})

        def next_primary() -> bool:
            status, cluster = _json(f"{url}/v1/cluster")
            return status == 200 and cluster["leader"] in set(nodes) - {primary}

        _wait(next_primary, "the gateway names the primary of a later view")
    finally:
        down = _dev("down", env)
    assert down.returncode == 0, down.stderr[-2000:]
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert not list(run_dir.glob("*.pid")), list(run_dir.glob("*.pid"))
