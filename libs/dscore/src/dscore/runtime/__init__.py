"""The asyncio driver of protocol cores (`NodeRuntime`), the embedded cluster and its client."""

from dscore.runtime.client import ClientConfig, ClientStats, KvClient, OpResult, Outcome
from dscore.runtime.cluster import EmbeddedCluster, RaftCoreFactory, raft_factory
from dscore.runtime.errors import (
    LeadershipLostError,
    MembershipChangeRejectedError,
    OutcomeUnknownError,
    OverloadedError,
    ReadFailedError,
    RuntimeStoppedError,
)
from dscore.runtime.node import (
    CoreFactory,
    HasMembership,
    NodeRuntime,
    NodeStatus,
    Reconfigurable,
    RuntimeConfig,
)

__all__ = [
    "ClientConfig",
    "ClientStats",
    "CoreFactory",
    "EmbeddedCluster",
    "HasMembership",
    "KvClient",
    "LeadershipLostError",
    "MembershipChangeRejectedError",
    "NodeRuntime",
    "NodeStatus",
    "OpResult",
    "Outcome",
    "OutcomeUnknownError",
    "OverloadedError",
    "RaftCoreFactory",
    "ReadFailedError",
    "Reconfigurable",
    "RuntimeConfig",
    "RuntimeStoppedError",
    "raft_factory",
]
