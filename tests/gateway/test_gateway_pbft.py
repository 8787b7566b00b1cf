"""The gateway in front of PBFT: a result is taken only once f + 1 replicas sent the same one.

A real embedded 4-node PBFT cluster (f = 1; real cores, real executor, authenticated frames) where one
replica is Byzantine: its state machine keeps the correct state (so its checkpoints agree and the
protocol runs on) but every answer it sends a client is forged, and it is the client's nearest replica:
the honest replicas' replies reach the gateway 50 ms later (an asynchronous network may always do that).
Through the gateway's HTTP API every read must still return what was written. The second test is the same
cluster with a client that takes the first reply (`reply_quorum=1`, what a gateway written for Raft does):
it is fooled, which shows that the first test's liar really lies in time to matter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import httpx
from gw_harness import TEST_OPTIONS, TIMEOUT_S

from dscore.protocols.contract import LogEntry
from dscore.runtime.cluster import EmbeddedCluster, pbft_factory
from dscore.statemachine.kv import KvResult, KvStateMachine
from dscore_gateway.app import create_app
from dscore_gateway.service import Gateway
from dscore_gateway.settings import GatewayOptions

FORGED = "forged-by-n1"
NODES = ("n1", "n2", "n3", "n4")
#: the Byzantine replica: the primary of view 0 (its answers tend to arrive first)
LIAR = "n1"


class LyingStateMachine(KvStateMachine):
    """Applies every command correctly, then lies about the result of each one it answers."""

    lies = 0

    def apply_entry(self, entry: LogEntry) -> Sequence[KvResult]:
        results = super().apply_entry(entry)
        forged = []
        for result in results:
            if result.ok and result.client_id == 0:  # not a registration: a read or a write
                LyingStateMachine.lies += 1
                forged.append(KvResult(result.outcome, FORGED, result.error, result.client_id))
            else:
                forged.append(result)
        return forged


@asynccontextmanager
async def pbft_gateway(reply_quorum: int | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """4 PBFT replicas, `LIAR` Byzantine and nearest to the gateway, and a gateway (protocol pbft) in front;
    `reply_quorum` overrides the matching replies its endpoint waits for."""
    made: list[str] = []

    def make_state_machine() -> KvStateMachine:
        # nodes start in order: the k-th state machine is the k-th node's
        made.append(NODES[len(made)] if len(made) < len(NODES) else "restart")
        return LyingStateMachine() if made[-1] == LIAR else KvStateMachine()

    async with EmbeddedCluster(
        pbft_factory(), node_ids=NODES, seed=3, make_state_machine=make_state_machine, protocol="pbft"
    ) as cluster:
        await cluster.wait_for_leader(TIMEOUT_S)
        network = cluster.network
        deliver = network.deliver
        loop = asyncio.get_running_loop()

        def honest_replies_later(source: str, destination: str, data: bytes) -> bool:
            if destination == "gw-pbft" and source != LIAR:
                loop.call_later(0.05, deliver, source, destination, data)
                return True
            return deliver(source, destination, data)

        network.deliver = honest_replies_later  # type: ignore[method-assign]
        endpoint = await cluster.client_endpoint("gw-pbft")
        assert endpoint.reply_quorum == 2  # f + 1, from the embedded cluster's PBFT factory
        if reply_quorum is not None:
            endpoint.reply_quorum = reply_quorum
        gateway = Gateway(
            endpoint,
            GatewayOptions(**{**TEST_OPTIONS, "endpoint_id": "gw-pbft"}),
            cluster_id="test",
            protocol="pbft",
        )
        await gateway.start()
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=create_app(gateway)), base_url="http://gateway", timeout=60
            ) as http:
                yield http
        finally:
            await gateway.stop()


async def write_and_read(http: httpx.AsyncClient, rounds: int) -> list[str | None]:
    """Write a value, read it back (linearizable, then stale), `rounds` times; the values read."""
    seen: list[str | None] = []
    for i in range(rounds):
        value = f"v{i}"
        put = await http.put("/v1/kv/k", json={"value": value})
        assert put.status_code == 204, put.text
        for mode in ("linearizable", "stale"):
            got = await http.get("/v1/kv/k", params={"consistency": mode})
            assert got.status_code == 200, got.text
            seen.append(got.json()["value"])
            assert got.json()["value"] in (value, FORGED)
    return seen


async def test_a_byzantine_replica_cannot_make_the_gateway_return_its_answer() -> None:
    LyingStateMachine.lies = 0
    async with pbft_gateway() as http:
        seen = await write_and_read(http, 20)
        cluster = (await http.get("/v1/cluster")).json()
    assert LyingStateMachine.lies >= 40, "the liar never answered: the test proved nothing"
    assert FORGED not in seen
    assert cluster["protocol"] == "pbft" and cluster["leader_role"] == "primary"
    assert cluster["term_name"] == "view" and cluster["reply_quorum"] == 2
    assert cluster["leader"] in NODES
    assert [n["role"] for n in cluster["nodes"] if n["id"] == cluster["leader"]] == ["primary"]


async def test_a_client_that_takes_one_reply_is_fooled_by_the_same_replica() -> None:
    LyingStateMachine.lies = 0
    async with pbft_gateway(reply_quorum=1) as http:
        seen = await write_and_read(http, 20)
    assert seen.count(FORGED) > len(seen) // 2, seen
