"""The gateway's transport: Kafka, through `dscore.transport.kafka` (one single-partition inbox topic per
endpoint, `dscore.<cluster_id>.inbox.<endpoint_id>`; the nodes answer a client by producing to its
endpoint id's inbox).

The gateway is a client endpoint: it keeps no storage, so it starts reading its inbox from the end (replies
already there answer a previous process's requests, and nobody waits for them), and it creates its own
inbox topic at start so the nodes can answer it. Its request ids start at a random point
(`first_request_id`), so a restarted gateway with the same endpoint id never takes a late reply to its
predecessor's request for the answer to its own.
"""

from __future__ import annotations

import secrets

from dscore.runtime.client import ClientEndpoint
from dscore.transport.base import Transport
from dscore.transport.kafka import open_kafka_transport
from dscore.transport.kafka_config import KafkaTransportConfig, StartWithoutPosition
from dscore_gateway.settings import GatewaySettings


def open_transport(settings: GatewaySettings) -> Transport:
    """The gateway's transport on Kafka, as its settings describe (not started)."""
    config = KafkaTransportConfig(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        cluster_id=settings.cluster_id,
        # a client endpoint: only new replies matter
        start_without_position=StartWithoutPosition.LATEST,
    )
    return open_kafka_transport(config, settings.gateway.endpoint_id)


def first_request_id() -> int:
    """A random start for request ids (see the module doc): 2^48 values apart from any other process's
    start with probability ~1 - n / 2^16 for n requests, which is plenty for restarts."""
    return secrets.randbits(48) << 8


def make_endpoint(settings: GatewaySettings, transport: Transport) -> ClientEndpoint:
    """The gateway's client endpoint on `transport`: the configured members, the cluster key, and the
    matching replies an answer needs (PBFT: f + 1; the endpoint counts them, `ClientEndpoint._believed`,
    the same code the embedded cluster's clients use)."""
    nodes = settings.nodes
    return ClientEndpoint(
        transport,
        lambda: nodes,
        key=settings.auth_key_bytes(),
        first_request_id=first_request_id(),
        reply_quorum=settings.reply_quorum(),
        max_envelopes_in_flight=settings.envelopes_in_flight(),
        max_gather_s=settings.gather_s(),
    )
