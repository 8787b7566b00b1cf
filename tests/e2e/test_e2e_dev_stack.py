"""`make up` / `make down` (scripts/dev.sh): one Redis per node, three `dscore-node` processes and a
gateway in the background, each with its pid in `<run dir>/<name>.pid`; the gateway's URL and the log
folder printed; a write and a read through the gateway; `down` stops every process and removes the pid
files. Ports and the run folder are this test's own (free ports, `tmp_path`), so it never meets a
person's `make up` or another checkout's run; the broker is the test session's
(`DSCORE_DEV_KAFKA_BOOTSTRAP`), which `down` leaves running."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
NODES = ("n1", "n2", "n3")


def _free_block(size: int) -> int:
    """A base port whose base+1 .. base+size are free on 127.0.0.1 now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(30000, 39000)
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


def test_make_up_starts_redis_nodes_and_a_gateway_and_make_down_stops_them(
    tmp_path: Path, kafka_bootstrap: str, namespace: str
) -> None:
    run_dir = tmp_path / "run"
    gateway_port = _free_block(1) + 1
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DSCORE_")},
        "DSCORE_RUN_DIR": str(run_dir),
        "DSCORE_DEV_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DSCORE_CLUSTER_ID": namespace,
        "DSCORE_REDIS_PORT": str(_free_block(len(NODES))),
        "DSCORE_NODE_HTTP_PORT": str(_free_block(len(NODES))),
        "DSCORE_GATEWAY_PORT": str(gateway_port),
    }
    pids: dict[str, int] = {}
    try:
        up = _dev("up", env)
        assert up.returncode == 0, up.stderr[-3000:]
        url = f"http://127.0.0.1:{gateway_port}"
        assert f"Gateway: {url}" in up.stdout and f"Logs: {run_dir / 'logs'}/" in up.stdout, up.stdout
        for name in ("gateway", *(f"node-{n}" for n in NODES), *(f"redis-{n}" for n in NODES)):
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
    finally:
        down = _dev("down", env)
    assert down.returncode == 0, down.stderr[-2000:]
    assert not [name for name, pid in pids.items() if _alive(pid)]
    assert not list(run_dir.glob("*.pid")), list(run_dir.glob("*.pid"))
