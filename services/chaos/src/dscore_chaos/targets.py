"""Who a fault hits: the members a backend can reach (pods, processes) and how the leader among them is
found.

The leader is whoever says so: every node serves `GET /debug/state` (the node service) with its `role`
and `term`; `HttpLeaderFinder` asks every member at once and takes the one that says `leader` (PBFT's
`primary`), the highest term (ballot, view) winning (an old leader cut off from the others may still
believe it leads, in an older term). A member that does not answer in time (paused, dead, starting) is
skipped. Where the nodes' HTTP is out of reach (the k8s tests, whose kwok pods run nothing),
`AnnotationLeaderFinder` takes the member whose annotation says `true`, set by whoever knows.

Random choices draw from the seeded `random.Random` the service is given, among members sorted by
name, so a seed replays which pod a "random" fault hit.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from dscore.core.errors import DscoreError

log = logging.getLogger("dscore_chaos.targets")

#: the node service's state endpoint
STATE_PATH = "/debug/state"

#: what the node that orders commands calls itself: Raft and Multi-Paxos `leader`, PBFT `primary`
_LEADER_ROLES = frozenset({"leader", "primary"})


class TargetError(DscoreError):
    """No member to hit: none selected, no leader found, an unknown name."""


@dataclass(frozen=True, slots=True)
class Member:
    """One thing a fault can hit: a pod or a process."""

    name: str
    #: the node's HTTP base URL (`http://10.0.0.7:8080`), if known
    base_url: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: the node id, if known without asking (a process named after its node)
    node_id: str | None = None
    #: the pod's uid (deletes are made with it as a precondition)
    uid: str | None = None


@dataclass(frozen=True, slots=True)
class Leader:
    member: Member
    #: the leader's node id (from its state, else the member's)
    node_id: str | None
    term: int | None = None


class LeaderFinder(Protocol):
    async def find(self, members: Sequence[Member]) -> Leader | None: ...


class HttpLeaderFinder:
    """Asks every member's `/debug/state` (concurrently, each bounded by `timeout_s`)."""

    def __init__(self, *, timeout_s: float, client: httpx.AsyncClient | None = None) -> None:
        self._timeout_s = timeout_s
        self._client = client

    async def find(self, members: Sequence[Member]) -> Leader | None:
        reachable = [m for m in members if m.base_url]
        if not reachable:
            return None
        client = self._client or httpx.AsyncClient(timeout=self._timeout_s)
        try:
            states = await asyncio.gather(*(self._state(client, m) for m in reachable))
        finally:
            if self._client is None:
                await client.aclose()
        leaders: list[tuple[int, str, Member, dict[str, Any]]] = []
        for member, state in zip(reachable, states, strict=True):
            if state is not None and state.get("role") in _LEADER_ROLES:
                term = state.get("term")
                leaders.append((term if type(term) is int else -1, member.name, member, state))
        if not leaders:
            return None
        term, _, member, state = max(leaders, key=lambda item: (item[0], item[1]))
        node_id = state.get("node_id")
        return Leader(
            member, node_id if isinstance(node_id, str) else member.node_id, term if term >= 0 else None
        )

    async def _state(self, client: httpx.AsyncClient, member: Member) -> dict[str, Any] | None:
        url = f"{(member.base_url or '').rstrip('/')}{STATE_PATH}"
        try:
            response = await client.get(url, timeout=self._timeout_s)
            if response.status_code != 200:
                return None
            body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            log.debug("no state from %s (%s): %r", member.name, url, error)
            return None
        return body if isinstance(body, dict) else None


class AnnotationLeaderFinder:
    """The member whose annotation `key` is "true" (the first by name if several say so)."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def find(self, members: Sequence[Member]) -> Leader | None:
        for member in sorted(members, key=lambda m: m.name):
            if member.annotations.get(self.key, "").lower() == "true":
                return Leader(member, member.node_id)
        return None


async def choose(
    members: Sequence[Member], target: str, *, finder: LeaderFinder, rng: random.Random
) -> tuple[Member, str | None]:
    """The member `target` names (`leader`, `random`, or a member's name) and its node id if known."""
    if not members:
        raise TargetError("no members to choose from")
    if target == "leader":
        leader = await finder.find(members)
        if leader is None:
            raise TargetError(f"no leader found among {', '.join(sorted(m.name for m in members))}")
        return leader.member, leader.node_id
    if target == "random":
        member = rng.choice(sorted(members, key=lambda m: m.name))
        return member, member.node_id
    for member in members:
        if member.name == target:
            return member, member.node_id
    raise TargetError(f"{target!r} is not one of {', '.join(sorted(m.name for m in members))}")
