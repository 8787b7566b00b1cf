"""The asyncio driver of protocol cores (`NodeRuntime`), the embedded cluster and its client."""

from dscore.runtime.client import ClientConfig, ClientEndpoint, ClientStats, KvClient, OpOutcome, OpResult
from dscore.runtime.cluster import EmbeddedCluster, RaftCoreFactory, raft_factory
from dscore.runtime.errors import (
    LeadershipLostError,
    MembershipChangeRejectedError,
    OutcomeUnknownError,
    OverloadedError,
    ReadFailedError,
    RuntimeStoppedError,
)
from dscore.runtime.node import CoreFactory, NodeRuntime, NodeStatus, RuntimeConfig

__all__ = [
    "ClientConfig",
    "ClientEndpoint",
    "ClientStats",
    "CoreFactory",
    "EmbeddedCluster",
    "KvClient",
    "LeadershipLostError",
    "MembershipChangeRejectedError",
    "NodeRuntime",
    "NodeStatus",
    "OpOutcome",
    "OpResult",
    "OutcomeUnknownError",
    "OverloadedError",
    "RaftCoreFactory",
    "ReadFailedError",
    "RuntimeConfig",
    "RuntimeStoppedError",
    "raft_factory",
]
