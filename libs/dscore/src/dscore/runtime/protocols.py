"""The protocols a replica process runs, by name: how to build its cores, and what clients and displays
need to know about it. One table for the node service, the embedded cluster, the gateway and the local
process stack, so a protocol is wired the same way everywhere.

- `raft`: Raft (`RaftCoreFactory`; the only one whose membership changes at run time);
- `paxos`: Multi-Paxos (`PaxosNode`; fixed members, the leader learned from replies like Raft's);
- `pbft`: PBFT (`PbftCoreFactory`): n = 3f + 1 replicas, each with its row of pair MAC keys derived from
  the cluster key (`pair_key_secret`); every replica answers, and a client accepts a result only once
  f + 1 replicas sent the same one (`reply_quorum`), Castro and Liskov section 4.1.

`term` means each protocol's epoch: Raft's term, Paxos's highest promised ballot, PBFT's view
(`StackProtocol.term_name`); `leader` is Raft's and Paxos's leader and PBFT's primary.
"""

from __future__ import annotations

from dataclasses import dataclass

from dscore.core.errors import ConfigError
from dscore.metrics import PAXOS_ROLES, PBFT_ROLES, RAFT_ROLES
from dscore.protocols.paxos import PaxosConfig, PaxosNode
from dscore.protocols.pbft import PbftConfig
from dscore.protocols.raft import RaftConfig
from dscore.runtime.cluster import PbftCoreFactory, RaftCoreFactory, pair_key_secret
from dscore.runtime.node import CoreFactory


@dataclass(frozen=True, slots=True)
class StackProtocol:
    """What the services need to know about one protocol besides its cores."""

    name: str
    #: the name reports give it
    label: str
    #: the roles its nodes report (`NodeStatus.role`), "down" included
    roles: tuple[str, ...]
    #: the role of the node that orders commands (`leader`, or PBFT's `primary`)
    leader_role: str
    #: what its `term` is: `term`, `ballot` or `view`
    term_name: str
    #: its membership changes at run time (`/admin/members`, joining nodes)
    changes_membership: bool = False
    #: every replica answers a client, which waits for f + 1 matching answers
    byzantine: bool = False


PROTOCOLS: dict[str, StackProtocol] = {
    "raft": StackProtocol(
        "raft",
        "Raft",
        RAFT_ROLES,
        "leader",
        "term",
        changes_membership=True,
    ),
    "paxos": StackProtocol(
        "paxos",
        "Multi-Paxos",
        PAXOS_ROLES,
        "leader",
        "ballot",
    ),
    "pbft": StackProtocol(
        "pbft",
        "PBFT",
        PBFT_ROLES,
        "primary",
        "view",
        byzantine=True,
    ),
}


def stack_protocol(name: str) -> StackProtocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        known = ", ".join(PROTOCOLS)
        raise ConfigError(f"DSCORE_PROTOCOL={name}: the node service runs {known}") from None


def core_factory(
    name: str,
    *,
    auth_key: bytes | None,
    raft: RaftConfig | None = None,
    paxos: PaxosConfig | None = None,
    pbft: PbftConfig | None = None,
) -> CoreFactory:
    """The core factory of protocol `name` with its settings; PBFT's pair keys come from `auth_key`
    (required for it: `ConfigError` without one)."""
    stack_protocol(name)
    if name == "raft":
        return RaftCoreFactory(raft if raft is not None else RaftConfig())
    if name == "paxos":
        return PaxosNode.factory(paxos)
    if auth_key is None:
        raise ConfigError(
            "DSCORE_PROTOCOL=pbft needs DSCORE_AUTH_KEY: its replicas' pair MAC keys are derived from it"
        )
    return PbftCoreFactory(pbft if pbft is not None else PbftConfig()).with_secret(pair_key_secret(auth_key))


def reply_quorum(name: str, members: int, faults_tolerated: int | None = None) -> int:
    """Matching replies from distinct replicas a client waits for: f + 1 for PBFT (f = `faults_tolerated`,
    else (n - 1) // 3), one (the leader's) otherwise."""
    if not stack_protocol(name).byzantine:
        return 1
    f = faults_tolerated if faults_tolerated is not None else (members - 1) // 3
    return f + 1
