"""`dscore-gateway`: run the HTTP gateway (uvicorn) in front of a dscore cluster.

    dscore-gateway                 # settings from DSCORE_* (see dscore_gateway.settings), Kafka transport
    dscore-gateway --embedded 3    # development: a 3-node embedded Raft cluster in this process, no Kafka

Exit codes: 0 after a clean shutdown (SIGTERM or SIGINT), 2 for bad settings (the message names the
environment variable), 1 if the transport cannot start.

SIGTERM: uvicorn stops accepting connections and the gateway starts draining at once (`/readyz` turns
503, requests arriving on open keep-alive connections get 503 `shutting_down` with Retry-After), the
requests in flight finish (at most `drain_timeout_s`), then the endpoint (and its transport) is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import secrets
import signal
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn
import uvloop

from dscore.core.errors import ConfigError, DscoreError
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore.runtime.gc_tuning import tune_gc
from dscore_gateway.app import GatewayApp, create_app
from dscore_gateway.http_fast import fast_put_protocol
from dscore_gateway.service import Gateway
from dscore_gateway.settings import GatewaySettings, load_gateway_settings
from dscore_gateway.transport import make_endpoint, open_transport

log = logging.getLogger("dscore_gateway")


class _GatewayServer(uvicorn.Server):
    """uvicorn's server, which also tells the gateway to drain the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self._gateway = gateway

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._gateway.draining = True
        super().handle_exit(sig, frame)


def _uvicorn_config(app: GatewayApp, settings: GatewaySettings) -> uvicorn.Config:
    options = settings.gateway
    return uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=max(1, math.ceil(options.drain_timeout_s)),
        server_header=False,
        # httptools (C) instead of h11 (pure Python): the HTTP parsing was ~10% of a write's CPU here;
        # plain PUTs served on the protocol itself, below ASGI (dscore_gateway.http_fast)
        http=fast_put_protocol(app.front) if options.http_fast_path else "httptools",
        proxy_headers=options.proxy_headers,
        forwarded_allow_ips=options.forwarded_allow_ips,
    )


async def serve(settings: GatewaySettings) -> None:
    """Run the gateway on the Kafka transport until SIGTERM / SIGINT."""
    transport = open_transport(settings)
    endpoint = make_endpoint(settings, transport)
    await endpoint.start()
    gateway = Gateway(
        endpoint,
        settings.gateway,
        cluster_id=settings.cluster_id,
        close=endpoint.close,
        protocol=settings.protocol,
    )
    await _GatewayServer(_uvicorn_config(create_app(gateway), settings), gateway).serve()


async def serve_embedded(settings: GatewaySettings, size: int) -> None:
    """Development: an embedded Raft cluster of `size` nodes in this process, the gateway in front."""
    cluster = EmbeddedCluster(raft_factory(), size, auth_key=secrets.token_bytes(32))
    await cluster.start()
    endpoint = await cluster.client_endpoint(settings.gateway.endpoint_id)
    gateway = Gateway(endpoint, settings.gateway, cluster_id=settings.cluster_id, close=cluster.stop)
    log.info("embedded cluster of %d nodes: %s", size, ",".join(cluster.node_ids))
    await _GatewayServer(_uvicorn_config(create_app(gateway), settings), gateway).serve()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dscore-gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--embedded",
        type=int,
        metavar="N",
        default=0,
        help="run an embedded N-node Raft cluster in this process instead of using Kafka (development)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    overrides: dict[str, object] = {}
    if args.embedded:
        if not 1 <= args.embedded <= 9:
            print("dscore-gateway: --embedded takes 1 to 9 nodes", file=sys.stderr)
            return 2
        # The embedded cluster makes its own ids and key; settings for them are not needed.
        overrides = {"nodes": tuple(f"n{i}" for i in range(1, args.embedded + 1)), "auth_key": "x" * 32}
    try:
        settings = load_gateway_settings(**overrides)
    except ConfigError as error:
        print(f"dscore-gateway: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.gateway.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # uvicorn re-raises the stop signal once it has shut down; with these handlers that ends the process
    # with our cleanup done and exit code 0 instead of a kill by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: None)
    tune_gc(settings.gc_gen0_threshold)
    # uvloop: the event loop in C; the pure-Python loop's own bookkeeping was a tenth of the gateway's CPU
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            if args.embedded:
                runner.run(serve_embedded(settings, args.embedded))
            else:
                runner.run(serve(settings))
    except DscoreError as error:
        print(f"dscore-gateway: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
