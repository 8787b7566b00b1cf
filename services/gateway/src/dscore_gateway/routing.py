"""Where the gateway sends a request, and what it knows about the cluster's leadership. No I/O: the
caller passes the time (`now`, the event loop's monotonic clock) and carries out the I/O.

The leader is learned from replies, never configured:

- the **leader** is the node that last *served* a request only a leader can serve (a write, a
  registration or a linearizable read answered `OK` or `CAS_MISMATCH`): a confirmed fact, shown by
  `GET /v1/cluster` and counted in `dscore_gateway_leader_changes_total` when it moves to another node;
- a **guess** comes from a `NOT_LEADER` reply's `leader_hint`; it only steers the next attempt (a
  follower's hint can name a leader that just died);
- without either, requests go round the members in turn.

The leader is **lost** when the node believed to lead fails an attempt: no answer in time, `NOT_LEADER`,
or `UNKNOWN` while naming another leader (it stepped down with the request pending). The next success
then ends the gap: `failover_s` is the time from the last success before the loss to the first success
after it (what `dscore_failover_seconds` observes). It is measured from the gateway's traffic, so it is
what clients saw; with sparse traffic it also contains the idle time before the loss, and the gateway's
probe (a read whenever nothing succeeded for `probe_interval_s`) bounds that.

A node is **silent** when it has been asked something and answered nothing for `silence_s`
(`silent_nodes`): a dead or cut-off leader shows this long before each attempt's own timeout runs out.
The caller then ends its attempts there as timeouts (`ClientEndpoint.expire`) and marks it `suspect`: its
attempts time out (so a silent leader is lost), and for `suspect_for_s` the round-robin passes it over and
hints naming it are not followed; any answer from it clears it. During an election the followers still
name the dead leader; following them back to it would cost one silence per round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dscore.core.client_messages import ClientResponse, Outcome
from dscore.core.errors import LocalError
from dscore.core.ids import NodeId

#: the outcome label of an attempt that got no answer in time
TIMEOUT = "timeout"


@dataclass(slots=True)
class NodeObservation:
    """What the gateway last saw of one node (monotonic times)."""

    #: the last attempt's outcome (`Outcome` name in lower case, or "timeout"); None: never asked
    last_outcome: str | None = None
    last_attempt_at: float | None = None
    #: the last time the node answered anything
    last_answer_at: float | None = None
    #: the leader this node named in its last NOT_LEADER / UNKNOWN reply
    leader_hint: NodeId | None = None
    #: the first attempt at the node since it last answered anything (None: nothing asked since)
    waiting_since: float | None = None


@dataclass(frozen=True, slots=True)
class LeadershipEvent:
    """What one served request changed: a new leader and / or the end of a failover gap."""

    #: the leader before (None if the gateway never knew one)
    previous: NodeId | None
    leader: NodeId
    #: seconds from the last success before a leader loss to this success (None: no loss was seen)
    failover_s: float | None


class LeaderTracker:
    """Routing and leadership knowledge shared by every request of one gateway (see the module doc)."""

    def __init__(self, nodes: Callable[[], Sequence[NodeId]], *, suspect_for_s: float = 0.0) -> None:
        self._nodes = nodes
        #: the confirmed leader (None: unknown or lost)
        self.leader: NodeId | None = None
        #: when the current leader was first confirmed
        self.leader_since: float | None = None
        #: the last leader before it was lost (None while a leader is known)
        self.lost_leader: NodeId | None = None
        #: when the leader was lost (None while a leader is known)
        self.lost_at: float | None = None
        #: the last time a leader served a request
        self.last_success_at: float | None = None
        self._guess: NodeId | None = None
        #: the latest time the tracker was told (`_passed_over` compares suspicions with it)
        self._now = 0.0
        self._cursor = 0
        self._stale_cursor = 0
        self.observations: dict[NodeId, NodeObservation] = {}
        #: leader changes seen (the first leader learned is not a change)
        self.leader_changes = 0
        self.leader_losses = 0
        #: nodes found silent and not heard from since -> when last found so (see the module doc)
        self.suspects: dict[NodeId, float] = {}
        #: how long a node found silent is passed over (`suspect`)
        self.suspect_for_s = suspect_for_s

    def members(self) -> Sequence[NodeId]:
        return self._nodes()

    # -- routing ------------------------------------------------------------------------------------

    def target(self) -> NodeId:
        """The node a leader-only request goes to next."""
        nodes = self._nodes()
        if not nodes:
            raise LocalError("the gateway knows no node to talk to")
        for candidate in (self.leader, self._guess):
            if candidate is not None and candidate in nodes:
                return candidate
        if self.suspects:
            for _ in range(len(nodes)):  # passed over while freshly silent, if another can be asked
                node = nodes[self._cursor % len(nodes)]
                if not self._passed_over(node):
                    return node
                self._cursor += 1
        return nodes[self._cursor % len(nodes)]

    def stale_target(self) -> NodeId:
        """The node a stale read goes to next: each in turn (any node serves one)."""
        nodes = self._nodes()
        if not nodes:
            raise LocalError("the gateway knows no node to talk to")
        self._stale_cursor = (self._stale_cursor + 1) % len(nodes)
        return nodes[self._stale_cursor]

    # -- what attempts found -------------------------------------------------------------------------

    def attempted(self, node: NodeId, now: float) -> None:
        self._now = now
        observation = self._observation(node)
        observation.last_attempt_at = now
        if observation.waiting_since is None:
            observation.waiting_since = now

    def silent_nodes(self, now: float, silence_s: float) -> list[NodeId]:
        """The nodes asked something at least `silence_s` ago that answered nothing since."""
        self._now = now
        return [
            node
            for node, observation in self.observations.items()
            if observation.waiting_since is not None and now - observation.waiting_since >= silence_s
        ]

    def suspect(self, node: NodeId, now: float) -> bool:
        """`node` was found silent at `now`: for `suspect_for_s`, hints naming it are not followed and the
        round-robin passes it over (it is then asked again: it may be back, or the leader again). True
        if it was not a suspect already (it answered since it last was)."""
        if self._guess == node:
            self._guess = None
        new = node not in self.suspects
        self.suspects[node] = now
        self._now = now
        return new

    def _passed_over(self, node: NodeId) -> bool:
        since = self.suspects.get(node)
        return since is not None and self._now - since < self.suspect_for_s

    def served(self, node: NodeId, now: float, response: ClientResponse) -> LeadershipEvent | None:
        """`node` answered a leader-only request (OK or CAS_MISMATCH): it leads. Returns what changed."""
        self._answered(node, now, response)
        self._guess = None
        previous = self.leader if self.leader is not None else self.lost_leader
        failover_s = None
        if self.lost_at is not None and self.last_success_at is not None:
            failover_s = now - self.last_success_at
        self.last_success_at = now
        changed = self.leader != node
        self.lost_leader = None
        self.lost_at = None
        if not changed and failover_s is None:
            return None
        if changed:
            self.leader = node
            self.leader_since = now
            if previous is not None and previous != node:
                self.leader_changes += 1
        return LeadershipEvent(previous, node, failover_s)

    def answered(self, node: NodeId, now: float, response: ClientResponse) -> None:
        """`node` answered with anything but a leader's success (a stale read, a refusal)."""
        self._answered(node, now, response)
        outcome = response.outcome
        hint = response.leader_hint
        if outcome is Outcome.NOT_LEADER or (outcome is Outcome.UNKNOWN and hint != node):
            if node == self.leader:
                self._lose(now)
            nodes = self._nodes()
            if hint is not None and hint != node and hint in nodes and not self._passed_over(hint):
                self._guess = hint
            else:
                self._move_on(node)

    def timed_out(self, node: NodeId, now: float) -> None:
        """No answer from `node` within the attempt's timeout."""
        self._observation(node).last_outcome = TIMEOUT
        if node == self.leader:
            self._lose(now)
        self._move_on(node)

    # -- internals -----------------------------------------------------------------------------------

    def _answered(self, node: NodeId, now: float, response: ClientResponse) -> None:
        observation = self._observation(node)
        observation.last_outcome = response.outcome.name.lower()
        observation.last_answer_at = now
        self._now = now
        observation.waiting_since = None
        if self.suspects:
            self.suspects.pop(node, None)
        if response.outcome in (Outcome.NOT_LEADER, Outcome.UNKNOWN):
            observation.leader_hint = response.leader_hint

    def _lose(self, now: float) -> None:
        self.lost_leader = self.leader
        self.lost_at = now
        self.leader = None
        self.leader_since = None
        self.leader_losses += 1

    def _move_on(self, node: NodeId) -> None:
        """Forget a guess that failed and point the round-robin cursor past `node`."""
        if self._guess == node:
            self._guess = None
        nodes = self._nodes()
        if nodes and node in nodes:
            self._cursor = (nodes.index(node) + 1) % len(nodes)

    def _observation(self, node: NodeId) -> NodeObservation:
        observation = self.observations.get(node)
        if observation is None:
            if len(self.observations) > 4 * len(self._nodes()) + 64:  # bound: drop departed members
                members = set(self._nodes())
                self.observations = {n: o for n, o in self.observations.items() if n in members}
            observation = self.observations[node] = NodeObservation()
        return observation
