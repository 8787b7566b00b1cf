"""The gateway's cost per request, against the same cluster driven without HTTP, in the same run.

    .venv/bin/python services/gateway/bench/bench_gateway.py [--ops 3000] [--concurrency 32]

One process: a 3-node embedded Raft cluster (memory transport, real codec and MACs). First `KvClient`s
put directly over a `ClientEndpoint` (the wire protocol, no HTTP), then the same puts go through the
gateway's ASGI app, called directly with a minimal ASGI driver (FastAPI routing and validation, the
middleware, sessions, metrics; no socket and no HTTP client, whose cost would be the client's, not the
gateway's). Each phase reports ops/s and the process's CPU µs per op (the nodes' CPU included: the
difference between the two phases is the gateway's)."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from dscore.runtime.client import ClientConfig, KvClient
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore_gateway.app import create_app
from dscore_gateway.service import Gateway
from dscore_gateway.settings import GatewayOptions


async def _phase(name: str, ops: int, concurrency: int, one: object) -> None:
    assert callable(one)
    counter = iter(range(ops))

    async def worker(w: int) -> None:
        for i in counter:
            await one(w, i)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name:<28} {ops / wall:>9.0f} ops/s  {cpu / ops * 1e6:>7.0f} CPU µs/op")


async def main(ops: int, concurrency: int) -> None:
    async with EmbeddedCluster(raft_factory(), 3, seed=1) as cluster:
        await cluster.wait_for_leader(10)
        endpoint = await cluster.client_endpoint("bench-direct")
        clients = [KvClient(endpoint, f"c{w}", config=ClientConfig()) for w in range(concurrency)]

        async def direct(w: int, i: int) -> None:
            assert (await clients[w].put(f"k{i}", "v")).ok

        gw_endpoint = await cluster.client_endpoint("gw-bench")
        gateway = Gateway(
            gw_endpoint, GatewayOptions(endpoint_id="gw-bench", probe_interval_s=0), cluster_id="b"
        )
        await gateway.start()
        app = create_app(gateway)

        async def through_gateway(w: int, i: int) -> None:
            status = await _put(app, f"k{i}", b'{"value": "v"}')
            assert status == 204, status

        for _ in range(2):  # warm-up, then measured; alternated so both see the same machine
            await _phase("direct (KvClient, no HTTP)", ops, concurrency, direct)
            await _phase("gateway (ASGI app)", ops, concurrency, through_gateway)
        await gateway.stop()


async def _put(app: Any, key: str, body: bytes) -> int:
    """One PUT through the ASGI app, as a server would hand it over."""
    path = f"/v1/kv/{key}"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("gateway", 80),
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # a client that stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.ops, args.concurrency))
