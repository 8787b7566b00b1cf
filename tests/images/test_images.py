"""Each service image: how it is made (user, entry point, labels, no HEALTHCHECK), that its environment
works as copied in (offline, read-only root, non-root), and the gateway as a container on the real Kafka
broker: it serves, and `podman stop` ends it with status 0 (SIGTERM reached it through tini)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import subprocess
from pathlib import Path

import pytest
from podman_helpers import REPO, SERVICE_USER, Podman, free_port, http_get

#: run inside each image with its own interpreter: where things are, who runs it, what may be written
ENV_CHECK = r"""
import importlib, importlib.util, os, pathlib, sys, sysconfig
service = sys.argv[1]
assert os.getuid() == 10001 and os.getgid() == 10001, (os.getuid(), os.getgid())
assert sys.prefix == "/opt/dscore" and sys.base_prefix == "/usr", (sys.prefix, sys.base_prefix)
assert sys.executable == "/opt/dscore/bin/python", sys.executable
assert sys.version_info[:2] == (3, 11), sys.version
site = pathlib.Path(sysconfig.get_paths()["purelib"])
assert site == pathlib.Path("/opt/dscore/lib/python3.11/site-packages"), site
for module in ("dscore", "dscore.check", "dscore_" + service + ".main", "msgpack", "pydantic_core",
               "confluent_kafka", "redis", "prometheus_client", "ssl", "sqlite3"):
    importlib.import_module(module)
# every script names the image's interpreter; nothing points at the folder the environment was built in
for script in pathlib.Path("/opt/dscore/bin").iterdir():
    if script.is_file() and not script.is_symlink():
        first = script.read_bytes().split(b"\n", 1)[0]
        assert first == b"#!/opt/dscore/bin/python", (script, first)
assert os.readlink("/opt/dscore/bin/python") == "/usr/bin/python3.11"
# bytecode is in the image: a read-only root could not cache it
source = importlib.util.find_spec("dscore_" + service + ".main").origin
assert os.path.exists(importlib.util.cache_from_source(source)), source
# the code is root's: the service cannot change it, even without a read-only root
for path in ("/opt/dscore/lib/python3.11/site-packages/dscore/__init__.py", "/opt/dscore/bin/x", "/x"):
    try:
        open(path, "a").close()
    except OSError:
        pass
    else:
        raise AssertionError(f"{path} is writable")
with open("/tmp/scratch", "w") as scratch:
    scratch.write("ok")
print("env ok")
"""


def _git_head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_images_are_tagged_labelled_and_non_root(built_images: dict[str, str], podman: Podman) -> None:
    assert "gateway" in built_images
    head = _git_head()
    for service, ref in built_images.items():
        assert ref.split(":")[-1].removesuffix("-dirty") == head[:12], ref
        image = podman.image_inspect(ref)
        dev = podman.image_inspect(f"localhost/dscore/{service}:dev")
        assert dev["Id"] == image["Id"], "the :dev tag names the last build"
        config = image["Config"]
        assert config["User"] == SERVICE_USER
        assert config["Entrypoint"] == ["/usr/bin/tini", "--", f"/opt/dscore/bin/dscore-{service}"]
        assert config.get("StopSignal") == "SIGTERM"
        assert "8080/tcp" in config.get("ExposedPorts", {})
        assert "Healthcheck" not in config, "probes are Kubernetes' job"
        labels = image["Labels"]
        assert labels["org.opencontainers.image.title"] == f"dscore-{service}"
        assert labels["org.opencontainers.image.revision"] == head
        assert labels["org.opencontainers.image.base.name"].startswith("localhost/dscore/base:")
        assert labels["org.opencontainers.image.version"]
        assert labels["org.opencontainers.image.created"]
        assert len(labels["dev.dscore.inputs"]) == 32


def test_environment_runs_offline_on_a_read_only_root(built_images: dict[str, str], podman: Podman) -> None:
    for service, ref in built_images.items():
        name = f"dscore-test-env-{service}-{secrets.token_hex(4)}"
        done = podman.run(
            ref,
            name,
            entrypoint="/opt/dscore/bin/python",
            args=["-c", ENV_CHECK, service],
            detach=False,
            network="none",
        )
        assert done.returncode == 0 and done.stdout.strip() == "env ok", (
            f"{service}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        )


#: run inside each image: the sha-256 of every file of the given packages' installed sources
SOURCE_DIGESTS = r"""
import hashlib, importlib.util, json, pathlib, sys
digests = {}
for package in sys.argv[1:]:
    root = pathlib.Path(importlib.util.find_spec(package).origin).parent
    for path in sorted(root.rglob("*.py")):
        digests[f"{package}/{path.relative_to(root)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
print(json.dumps(digests))
"""


def _tree_digests(package: str, source_root: Path) -> dict[str, str]:
    return {
        f"{package}/{path.relative_to(source_root)}": hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(source_root.rglob("*.py"))
    }


def test_image_holds_this_trees_code(built_images: dict[str, str], podman: Podman) -> None:
    """What runs is what is checked out: every source file of dscore and the service, byte for byte
    (uv reuses a cached build of a workspace package unless told otherwise; this catches a stale one)."""
    for service, ref in built_images.items():
        package = f"dscore_{service}"
        expected = {
            **_tree_digests("dscore", REPO / "libs" / "dscore" / "src" / "dscore"),
            **_tree_digests(package, REPO / "services" / service / "src" / package),
        }
        done = podman.run(
            ref,
            f"dscore-test-code-{service}-{secrets.token_hex(4)}",
            entrypoint="/opt/dscore/bin/python",
            args=["-c", SOURCE_DIGESTS, "dscore", package],
            detach=False,
            network="none",
        )
        assert done.returncode == 0, done.stderr
        installed = json.loads(done.stdout)
        assert installed.keys() == expected.keys()
        stale = sorted(name for name in expected if installed[name] != expected[name])
        assert not stale, f"{service}: the image's copy differs from the tree: {stale[:10]}"


def test_rebuild_without_changes_keeps_the_image(built_images: dict[str, str], podman: Podman) -> None:
    """An unchanged tree is not rebuilt: same reference, same image id."""
    before = {service: podman.image_inspect(ref)["Id"] for service, ref in built_images.items()}
    done = subprocess.run(
        [str(REPO / "scripts" / "images.sh"), "build", *built_images],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    assert done.stdout.split() == list(built_images.values())
    assert "is up to date" in done.stderr
    assert {service: podman.image_inspect(ref)["Id"] for service, ref in built_images.items()} == before


def test_gateway_container_on_kafka_serves_and_stops_on_sigterm(
    built_images: dict[str, str], podman: Podman, kafka_bootstrap: str, namespace: str
) -> None:
    port = free_port()
    name = f"dscore-test-gw-{namespace[:40]}"
    endpoint_id = f"gw-{secrets.token_hex(6)}"
    podman.start(
        built_images["gateway"],
        name,
        env={
            "DSCORE_NODES": "n1,n2,n3",
            "DSCORE_CLUSTER_ID": namespace,
            "DSCORE_AUTH_KEY": secrets.token_urlsafe(48),
            "DSCORE_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "DSCORE_GATEWAY__HOST": "127.0.0.1",
            "DSCORE_GATEWAY__PORT": str(port),
            "DSCORE_GATEWAY__ENDPOINT_ID": endpoint_id,
        },
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert podman.wait_http(name, f"{base}/healthz") == '{"status":"ok"}'
        status, metrics = http_get(f"{base}/metrics")
        assert status == 200 and "dscore_gateway_leader_known 0.0" in metrics
        # no node runs in this cluster: the gateway is up on Kafka but not ready
        assert http_get(f"{base}/readyz")[0] == 503
        state = podman.inspect(name)
        assert state["Config"]["User"] == SERVICE_USER
        assert state["HostConfig"]["ReadonlyRootfs"] is True
        # PID 1 is tini; the gateway is its child, which gets the SIGTERM
        processes = podman.processes(name)
        assert processes[0][0] == 1 and processes[0][1].startswith("/usr/bin/tini -- "), processes
        assert any("dscore-gateway" in args for pid, args in processes if pid != 1), processes

        code = podman.stop(name, timeout_s=30)
        logs = podman.logs(name)
        # 0: the gateway drained and exited on SIGTERM; 137 would mean podman had to SIGKILL it
        assert code == 0, f"exit status {code}:\n{logs[-4000:]}"
        assert "stopped (drained)" in logs, logs[-4000:]
    finally:
        with contextlib.suppress(Exception):
            _delete_topics(kafka_bootstrap, namespace, [endpoint_id])


def _delete_topics(bootstrap: str, cluster_id: str, endpoints: list[str]) -> None:
    import asyncio

    from dscore.transport.kafka_config import KafkaTransportConfig
    from dscore.transport.kafka_layout import delete_topics

    config = KafkaTransportConfig(bootstrap_servers=bootstrap, cluster_id=cluster_id)
    asyncio.run(delete_topics(config, endpoints))


@pytest.mark.parametrize("service", ["gateway"])
def test_exit_status_comes_through_tini(built_images: dict[str, str], podman: Podman, service: str) -> None:
    """The service's own exit status comes out of tini unchanged: a bad setting is the service's 2."""
    name = f"dscore-test-bad-{service}-{secrets.token_hex(4)}"
    done = podman.run(built_images[service], name, env={"DSCORE_GATEWAY__PORT": "not-a-port"}, detach=False)
    assert done.returncode == 2, f"{done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "DSCORE_GATEWAY__PORT" in done.stderr, done.stderr
