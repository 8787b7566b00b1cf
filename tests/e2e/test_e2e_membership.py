"""A fourth node joins a running three-node cluster as etcd's members do: started with
`DSCORE_INITIAL_CLUSTER_STATE=existing` (it never campaigns, learns its configuration from the leader),
introduced to the members, added as a learner, caught up, promoted; clients write throughout. It then
counts for the quorum: with four voters a commit needs three, so with one of the original followers
killed every commit goes through the new node. The history stays linearizable and nothing acknowledged
is lost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jepsen import Workload, check_outcome, e2e_cluster

pytestmark = [pytest.mark.timeout(300)]


async def test_a_joining_node_is_added_caught_up_promoted_and_counts_for_the_quorum(
    namespace: str, kafka_bootstrap: str, redis_server_factory: Callable[..., Any], tmp_path: Path
) -> None:
    async with e2e_cluster(
        ("n1", "n2", "n3"),
        namespace=namespace,
        kafka_bootstrap=kafka_bootstrap,
        redis_server_factory=redis_server_factory,
        log_dir=tmp_path,
    ) as (cluster, redis):
        workload = Workload(cluster, seed=4)
        await cluster.wait_ready()
        await workload.start()
        try:
            await workload.wait_ok(20)
            redis["n4"] = redis_server_factory(name=f"{namespace[:20]}-n4")
            cluster.add_node("n4", redis["n4"].url)
            await cluster.start_node("n4")
            workload.nemesis("start n4 (joining)")
            await cluster.introduce("n4")
            added = await cluster.add_member("n4", learner=True)
            assert "n4" in added["learners"]
            await cluster.wait_ready(["n4"])
            promoted = await cluster.promote("n4")
            assert "n4" in promoted["voters"] and len(promoted["voters"]) == 4
            workload.nemesis("n4 added and promoted")
            await workload.wait_ok(10, writes_only=True)

            leader = await cluster.leader()
            follower = next(n for n in ("n1", "n2", "n3") if n != leader)
            workload.nemesis(f"kill -9 {follower}: commits now need n4")
            cluster.kill(follower)
            await cluster.wait_exit(follower)
            await workload.wait_ok(10, writes_only=True)
            state = (await cluster.states(["n4"]))["n4"]
            assert state["role"] in ("follower", "leader") and len(state["voters"]) == 4
            await cluster.restart(follower)
            workload.nemesis(f"restart {follower}")
            await workload.wait_checked()
        finally:
            await workload.stop()
        await check_outcome(cluster, workload)
