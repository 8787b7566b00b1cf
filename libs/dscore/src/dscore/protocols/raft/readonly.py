"""A leader's linearizable reads without writing the log (dissertation 6.4): ReadIndex and leases.

ReadIndex
---------

`read_index(request_id)` on the leader records the commit index, confirms leadership with a heartbeat round
(a quorum of heartbeat responses carrying the round number) and only after the leader committed an entry
of its term (until then the read waits); `Ready.read_states` then releases `(request_id, index)`. Reads
that wait when the leader steps down are failed (`Ready.failed_reads`). Followers do not forward reads:
`read_index` raises `NotLeaderError` with the leader hint (as `propose` does), and the client retries on the
leader. Heartbeat rounds are numbered within a leadership; a read registered now is confirmed by the next
round (`round + 1`) or any later one.

Lease reads and the clock-drift bound
-------------------------------------

With `ReadOnlyOption.LEASE` (which requires `check_quorum=True`), a heartbeat round broadcast at leader
tick `t` and acknowledged by a quorum gives the leader a lease until tick `t + lease_ticks`, and a read is
served at once, with the commit index, while the lease holds (otherwise it waits for a heartbeat round as
above). It relies on leader stickiness: a voter that received that heartbeat ignores (pre)vote requests
until `election_timeout_ticks` of its own ticks have passed since (and a restarted node ignores them for its
first `election_timeout_ticks` ticks), so no other leader can be elected before then. Counting from when
the heartbeat was *sent* makes message delay irrelevant; tick granularity costs up to one tick, so the
lease is safe if `lease_ticks` leader ticks never take longer in real time than
`election_timeout_ticks - 1` ticks of any other node: ticks on different nodes must not drift apart in
rate by more than `(election_timeout_ticks - 1) / lease_ticks - 1` (12.5% with the defaults 10 and 8).
The lease is always shorter than the minimum election timeout (`lease_ticks < election_timeout_ticks`).
A leader stops serving lease reads for the rest of its term once it starts a leadership transfer (a
TimeoutNow bypasses stickiness), and re-earns its lease after a configuration change.
`max_tick_drift(election_timeout_ticks, lease_ticks)` is that bound; the simulator draws per-node tick
rates within it (`dscore.sim`), and shows lease reads break beyond it while ReadIndex reads do not.

The lease counts ticks, so every tick that passes in real time must be counted, stalls included: a
driver that stalled (GC, CPU starvation) and replays only some of the ticks it missed must tell the core
how many it dropped (`RaftNode.skip_ticks`), and must count the ticks due *before* it hands the core the
messages and reads that arrived meanwhile. A leader that missed 50 ticks and counted 2 would hold its
lease 48 ticks too long, while its followers' stickiness ran out on time and a new leader served
writes (the simulator's `pause` fault finds that; see `tests/sim/test_sim_lease.py`).
"""

from __future__ import annotations

from collections import deque

from dscore.protocols.contract import ReadState

__all__ = ["ReadOnly", "max_tick_drift"]


def max_tick_drift(election_timeout_ticks: int, lease_ticks: int) -> float:
    """The largest drift in tick rate between two nodes that a lease of `lease_ticks` tolerates: the
    leader's `lease_ticks` ticks must not outlast `election_timeout_ticks - 1` ticks of any voter (see the
    module doc). 0.125 with the defaults (10 and 8); 0 (no drift at all) for the longest lease,
    `election_timeout_ticks - 1`."""
    return (election_timeout_ticks - 1) / lease_ticks - 1


class ReadOnly:
    """The leader's reads in flight and its heartbeat rounds (and lease). `lease_ticks` is None for
    `ReadOnlyOption.READ_INDEX`. The node collects `released` and `failed` into its `Ready`."""

    __slots__ = (
        "broadcast_wanted",
        "confirmed_round",
        "failed",
        "lease_blocked",
        "lease_start",
        "lease_ticks",
        "pending",
        "released",
        "round",
        "round_ticks",
        "waiting",
    )

    def __init__(self, lease_ticks: int | None) -> None:
        self.lease_ticks = lease_ticks
        #: the latest heartbeat round broadcast, and the latest a quorum acknowledged
        self.round = 0
        self.confirmed_round = 0
        #: a read waits for the next round: broadcast it with the next `Ready`
        self.broadcast_wanted = False
        #: (round that confirms it, request_id, index), in round order
        self.pending: deque[tuple[int, int, int]] = deque()
        #: request ids waiting until the leader commits an entry of its term
        self.waiting: list[int] = []
        #: (round, tick it was sent), LEASE only
        self.round_ticks: deque[tuple[int, int]] = deque()
        #: the tick the latest confirmed round was sent (the lease runs from there), LEASE only
        self.lease_start: int | None = None
        #: no lease reads for the rest of this leadership (a transfer started)
        self.lease_blocked = False
        #: output: reads that may be served, and reads that failed
        self.released: list[ReadState] = []
        self.failed: list[int] = []

    def reset(self) -> None:
        """A new leadership: rounds count from 0 again, no lease yet."""
        self.round = 0
        self.confirmed_round = 0
        self.pending.clear()
        self.waiting = []
        self.round_ticks.clear()
        self.lease_start = None
        self.lease_blocked = False

    def start_round(self, now: int) -> int:
        """A heartbeat round is broadcast at tick `now`; returns its number."""
        self.broadcast_wanted = False
        self.round += 1
        if self.lease_ticks is not None:
            self.round_ticks.append((self.round, now))
        return self.round

    def wait_for_term_commit(self, request_id: int) -> None:
        self.waiting.append(request_id)

    def take_waiting(self) -> list[int]:
        """The reads that waited for an entry of the leader's term to commit."""
        waiting = self.waiting
        self.waiting = []
        return waiting

    def register(self, request_id: int, commit: int, now: int, *, sole_voter: bool) -> None:
        """A read at commit index `commit`: released at once if this node is the only voter or its lease
        holds, otherwise when the next heartbeat round is confirmed."""
        if sole_voter or (self.lease_ticks is not None and self.lease_valid(now)):
            self.released.append(ReadState(request_id, commit))
            return
        self.pending.append((self.round + 1, request_id, commit))
        self.broadcast_wanted = True

    def lease_valid(self, now: int) -> bool:
        start = self.lease_start
        return (
            start is not None
            and not self.lease_blocked
            and self.lease_ticks is not None
            and now < start + self.lease_ticks
        )

    def confirm(self, confirmed: int) -> None:
        """A quorum of voters acknowledged every round up to `confirmed`: extend the lease, release the
        reads those rounds confirm."""
        if confirmed <= self.confirmed_round:
            return
        self.confirmed_round = confirmed
        if self.lease_ticks is not None:
            sent_at = None
            ticks = self.round_ticks
            while ticks and ticks[0][0] <= confirmed:
                sent_at = ticks.popleft()[1]
            if sent_at is not None and (self.lease_start is None or sent_at > self.lease_start):
                self.lease_start = sent_at
        pending = self.pending
        while pending and pending[0][0] <= confirmed:
            _, request_id, index = pending.popleft()
            self.released.append(ReadState(request_id, index))

    def restart_lease(self) -> None:
        """The configuration changed: re-earn the lease from a round of the new configuration."""
        self.lease_start = None
        self.round_ticks.clear()

    def fail_all(self) -> None:
        """Leadership is lost: every read not released fails."""
        self.failed.extend(request_id for _, request_id, _ in self.pending)
        self.failed.extend(self.waiting)
        self.pending.clear()
        self.waiting = []
