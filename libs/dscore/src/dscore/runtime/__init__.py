"""The asyncio driver of protocol cores (`NodeRuntime`), the embedded cluster and its client."""

from dscore.runtime.client import ClientConfig, ClientStats, KvClient, OpResult, Outcome
from dscore.runtime.cluster import EmbeddedCluster, raft_factory
from dscore.runtime.errors import (
    LeadershipLostError,
    OutcomeUnknownError,
    OverloadedError,
    ReadFailedError,
    RuntimeStoppedError,
)
from dscore.runtime.node import CoreFactory, NodeRuntime, NodeStatus, RuntimeConfig

__all__ = [
    "ClientConfig",
    "ClientStats",
    "CoreFactory",
    "EmbeddedCluster",
    "KvClient",
    "LeadershipLostError",
    "NodeRuntime",
    "NodeStatus",
    "OpResult",
    "Outcome",
    "OutcomeUnknownError",
    "OverloadedError",
    "ReadFailedError",
    "RuntimeConfig",
    "RuntimeStoppedError",
    "raft_factory",
]
