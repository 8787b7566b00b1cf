"""The chart's membership Job (charts/dscore/files/membership.py) against real `dscore-node` processes on
Kafka and Redis: what `helm upgrade` with another `node.replicas` runs, minus Kubernetes (pods are node
processes named like the StatefulSet's; the node-ids ConfigMap is a dict).

Scale 3 -> 4 (pre: introduce and add a learner; the "pod" starts; post: promote once caught up), the same
upgrade again (nothing to do: every step idempotent), 4 -> 3 (pre: the leader removes the member), and
3 -> 4 again: the removed id is never reused, so the Job names the ordinal `kv-node-3.g2`. A Job with the
wrong admin token is refused (401) and says so."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from jepsen import e2e_cluster

from dscore.stack import ProcessCluster

pytestmark = [pytest.mark.timeout(300)]

MEMBERSHIP_PY = Path(__file__).resolve().parents[2] / "charts" / "dscore" / "files" / "membership.py"
STATEFULSET = "kv-node"


def _membership() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_membership_e2e", MEMBERSHIP_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


membership = _membership()


def nodes_of(cluster: ProcessCluster, node_ids: dict[str, str], token: str) -> Any:
    """The Job's `Nodes`, each pod reached at its node process (a pod that is not running: unreachable,
    as a pod the StatefulSet has not made yet has no DNS name)."""

    def base_url(pod: str) -> str:
        node = cluster.nodes.get(node_ids.get(pod, pod))
        if node is None or not node.alive or node.http_port is None:
            raise OSError(f"{pod}: no such host")
        return node.url("")

    return membership.Nodes(STATEFULSET, f"{STATEFULSET}-peers", "ns", 8080, token, base_url=base_url)


async def run_job(
    phase: str, cluster: ProcessCluster, node_ids: dict[str, str], replicas: int, running: int
) -> list[tuple[str, str]]:
    args = SimpleNamespace(statefulset=STATEFULSET, replicas=replicas, running_replicas=running)
    nodes = nodes_of(cluster, node_ids, cluster.admin_token)
    done = await asyncio.to_thread(
        membership.run,
        phase,
        args,
        nodes,
        node_ids,
        set_node_id=node_ids.__setitem__,
        deadline=time.monotonic() + 120,
    )
    return [(a.kind, a.node_id) for a in done.actions]


async def leader_state(cluster: ProcessCluster) -> dict[str, Any]:
    leader = await cluster.leader()
    return (await cluster.states([leader]))[leader]


async def test_the_chart_membership_job_scales_real_nodes_up_down_and_up_again(
    namespace: str, kafka_bootstrap: str, redis_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    founders = tuple(f"{STATEFULSET}-{i}" for i in range(3))
    async with e2e_cluster(
        founders,
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, redis):
        await cluster.wait_ready()
        ids: dict[str, str] = {}

        # 3 -> 4: pre-upgrade adds the learner, the StatefulSet starts the pod, post-upgrade promotes it
        redis["kv-node-3"] = redis_server_factory(name=f"{namespace[:20]}-kv3")
        cluster.add_node("kv-node-3", redis["kv-node-3"].url)
        assert await run_job("pre", cluster, ids, 4, 3) == [("add_learner", "kv-node-3")]
        assert (await leader_state(cluster))["learners"] == ["kv-node-3"]
        await cluster.start_node("kv-node-3")
        assert await run_job("post", cluster, ids, 4, 4) == [("promote", "kv-node-3")]
        state = await leader_state(cluster)
        assert sorted(state["voters"]) == [*founders, "kv-node-3"] and state["learners"] == []

        # the same upgrade again: nothing to do; the API itself answers a repeated change with 200
        assert await run_job("pre", cluster, ids, 4, 4) == []
        assert await run_job("post", cluster, ids, 4, 4) == []
        leader = await cluster.leader()
        nodes = nodes_of(cluster, ids, cluster.admin_token)
        again = await asyncio.to_thread(nodes.change, leader, "POST", "/admin/members/kv-node-3?learner=true")
        assert again is True

        # a Job without the right token changes nothing and says why
        intruder = nodes_of(cluster, ids, "x" * 43)
        with pytest.raises(membership.MembershipError, match="401"):
            await asyncio.to_thread(intruder.change, leader, "DELETE", "/admin/members/kv-node-3")
        assert "kv-node-3" in (await leader_state(cluster))["voters"]

        # 4 -> 3: the leader removes the member before the StatefulSet deletes its pod
        assert await run_job("pre", cluster, ids, 3, 4) == [("remove", "kv-node-3")]
        await cluster.terminate("kv-node-3")
        state = await leader_state(cluster)
        assert sorted(state["voters"]) == list(founders) and state["removed"] == ["kv-node-3"]

        # 3 -> 4 again: kv-node-3 was removed, the ordinal joins under a new id (ids are never reused)
        assert await run_job("pre", cluster, ids, 4, 3) == [
            ("rename", "kv-node-3.g2"),
            ("add_learner", "kv-node-3.g2"),
        ]
        assert ids == {"kv-node-3": "kv-node-3.g2"}
        redis["kv-node-3.g2"] = redis_server_factory(name=f"{namespace[:20]}-kv3g2")
        cluster.add_node("kv-node-3.g2", redis["kv-node-3.g2"].url)
        await cluster.start_node("kv-node-3.g2")
        assert await run_job("post", cluster, ids, 4, 4) == [("promote", "kv-node-3.g2")]
        state = await leader_state(cluster)
        assert sorted(state["voters"]) == [*founders, "kv-node-3.g2"]
        assert state["removed"] == ["kv-node-3"]
        await cluster.wait_ready(["kv-node-3.g2"])
