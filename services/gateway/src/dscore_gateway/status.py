"""What `GET /v1/cluster` reports, and the seam for what the nodes will report themselves.

Today the nodes publish no status over the transport, so the gateway reports what it knows from its own
traffic: the members (from settings), the leader it follows (the node that last served a leader-only
request), and, per node, the outcome of the last attempt and how long ago it was made and answered.
Role, term and commit index as *the nodes* see them need a status exchange (a small status message each
node sends to the gateways, added with the node service). When it exists, it plugs in here: a
`NodeStatusSource` handed to the `Gateway` returns the latest report of each node, and the view shows
`term`, `commit_index` and the reported `role` next to the gateway's own observations, with
`source: "nodes"`. Nothing else changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from dscore.core.ids import NodeId
from dscore.runtime.protocols import PROTOCOLS, StackProtocol
from dscore_gateway.routing import TIMEOUT, LeaderTracker


@dataclass(frozen=True, slots=True)
class NodeReport:
    """One node's own report of itself (from a status exchange)."""

    role: str
    term: int | None
    commit_index: int | None
    leader_id: NodeId | None = None
    #: seconds since the report was made
    age_s: float | None = None


class NodeStatusSource(Protocol):
    """The latest report of each node that sent one (the seam for a node status exchange)."""

    def reports(self) -> Mapping[NodeId, NodeReport]: ...


class NodeView(BaseModel):
    id: str
    #: `leader` (served the gateway's last leader-only request; `primary` for PBFT), `not_leader` (refused
    #: with NOT_LEADER),
    #: `unreachable` (the last attempt got no answer), `unknown` (not asked yet); a node's own report
    #: (`follower`, `candidate`, ...) when a status source provides one
    role: str
    #: the node's term and commit index as it last reported them (None until nodes report status)
    term: int | None = None
    commit_index: int | None = None
    #: the outcome of the gateway's last attempt on this node (a wire Outcome in lower case, or timeout)
    last_outcome: str | None = None
    last_attempt_s_ago: float | None = None
    last_answer_s_ago: float | None = None
    #: whom this node named as leader in its last refusal
    leader_hint: str | None = None
    report_age_s: float | None = None


class ClusterView(BaseModel):
    cluster_id: str
    #: this gateway's endpoint id (its reply inbox)
    gateway: str
    #: the nodes' protocol: `raft`, `paxos` or `pbft`
    protocol: str = "raft"
    #: what the protocol calls the node that orders commands: `leader` (Raft, Paxos) or `primary` (PBFT)
    leader_role: str = "leader"
    #: what `term` counts: Raft's `term`, Paxos's `ballot`, PBFT's `view`
    term_name: str = "term"
    #: matching answers from distinct nodes the gateway takes a result on (PBFT: f + 1, else 1)
    reply_quorum: int = 1
    members: list[str]
    #: the node the gateway follows as leader (PBFT: the primary the replies' views name; None: not
    #: known now)
    leader: str | None = None
    leader_for_s: float | None = None
    #: the highest term (ballot, view) a node reported (None until nodes report status)
    term: int | None = None
    #: seconds since a leader last served one of this gateway's requests
    last_success_s_ago: float | None = None
    #: while no leader is known after one was lost: seconds since it was lost
    leader_lost_s_ago: float | None = None
    #: `gateway`: from the gateway's own traffic; `nodes`: with the nodes' own status reports
    source: Literal["gateway", "nodes"] = "gateway"
    nodes: list[NodeView] = Field(default_factory=list)


def _ago(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 6)


def cluster_view(
    cluster_id: str,
    gateway_id: str,
    tracker: LeaderTracker,
    now: float,
    source: NodeStatusSource | None = None,
    *,
    protocol: StackProtocol = PROTOCOLS["raft"],
    reply_quorum: int = 1,
) -> ClusterView:
    reports = source.reports() if source is not None else {}
    nodes = []
    for node in tracker.members():
        seen = tracker.observations.get(node)
        report = reports.get(node)
        if node == tracker.leader:
            role = protocol.leader_role
        elif report is not None:
            role = report.role
        elif seen is None or seen.last_outcome is None:
            role = "unknown"
        elif seen.last_outcome == TIMEOUT:
            role = "unreachable"
        elif seen.last_outcome == "not_leader":
            role = "not_leader"
        else:
            role = "unknown"
        nodes.append(
            NodeView(
                id=node,
                role=role,
                term=report.term if report is not None else None,
                commit_index=report.commit_index if report is not None else None,
                last_outcome=seen.last_outcome if seen is not None else None,
                last_attempt_s_ago=_ago(now, seen.last_attempt_at) if seen is not None else None,
                last_answer_s_ago=_ago(now, seen.last_answer_at) if seen is not None else None,
                leader_hint=seen.leader_hint if seen is not None else None,
                report_age_s=report.age_s if report is not None else None,
            )
        )
    terms = [r.term for r in reports.values() if r.term is not None]
    return ClusterView(
        cluster_id=cluster_id,
        gateway=gateway_id,
        protocol=protocol.name,
        leader_role=protocol.leader_role,
        term_name=protocol.term_name,
        reply_quorum=reply_quorum,
        members=list(tracker.members()),
        leader=tracker.leader,
        leader_for_s=_ago(now, tracker.leader_since),
        term=max(terms) if terms else None,
        last_success_s_ago=_ago(now, tracker.last_success_at),
        leader_lost_s_ago=_ago(now, tracker.lost_at),
        source="nodes" if reports else "gateway",
        nodes=nodes,
    )
