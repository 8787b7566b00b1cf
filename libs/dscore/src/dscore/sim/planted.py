"""Planted bugs: deliberately broken variants the simulator must catch, each by name and replayable.

A checker that never fails proves nothing. Each bug here breaks one rule the code depends on, in the
executor (the code every node runs) or in a protocol core; `dscore sim --protocol raft --plant NAME
--seeds 200` runs the default swarm against it, and every failure prints the command that replays its
seed. `make test-slow` checks that each is caught within 200 seeds of the default swarm
(`tests/sim/test_sim_planted.py`, which prints the replay command of the first catching seed); `make test`
replays each on a seed known to catch it.

Many of the Raft bugs live behind a setting (lease reads, small batches): the default swarm finds them
only because it draws every setting users can set (`dscore.sim.registry.draw_raft_options`).

Executor bugs (protocol: raft):

- `apply_before_persist`: committed entries are applied when a `Work` is handed out, before its write is
  durable (the `Ready` order broken at step 3 before step 1). Caught by the host's check that every
  applied entry is durable on that node.
- `send_before_persist`: protocol messages go out with the replies, before the write (step 2 before
  step 1): a vote or an acknowledgement promises what a crash forgets. Exposed by the `power_loss` fault
  (a node loses power while its write is in flight: the write is lost, what was sent before it has left)
  and caught by Raft's "acknowledged is durable" invariant: a leader counts a follower as storing entries
  that the follower's stable storage does not hold (first default seed: 6). Either half alone catches it
  later: the invariant with only the older mid-work kills (a kill after the replies left, before the
  write) at seed 12; the power loss with only the older invariants at seed 119 (leader completeness), and
  on seeds 16, 68, 109 the leader then probes the follower forever below the match it lost (a livelock
  only the run's event bound ends).
- `replay_served_as_new`: a client request read again after a restart (below where the inbox ended when
  the transport started) is served or refused like a new one. A leader that sent its appends while
  saving (`Work.send_during_write`) and lost power before the write landed comes back as a follower and
  refuses its own request NOT_LEADER ("no effect") while the others commit it. Runs with
  `SimConfig.replay_on_restart` (a restarted node is handed its inputs again, as from Kafka), which the bug
  turns on; caught by the linearizability check (first default seed: 59).
- `ack_on_propose`: a client command is answered OK as soon as it is proposed, not once applied. Caught
  by the linearizability check (an acknowledged write that never took effect, or a read that misses it).
- `unknown_as_not_leader`: a command pending on a leader that lost the lead is answered NOT_LEADER ("no
  effect") instead of UNKNOWN, though the next leader may still commit it. Caught by the linearizability
  check when a client records `fail` for a write that took effect.

Raft bugs (a `RaftNode` subclass replaces the core; the run's drawn settings still apply):

- `minority_commit`: a quorum counted as one fewer than a majority (two of five). Caught by the safety
  invariants (a committed entry missing from a later leader) or the linearizability check.
- `vote_without_election_restriction`: votes granted to candidates whose log is behind (5.4.1). Caught
  by leader completeness.
- `figure8_commit_by_counting`: entries of an earlier term committed by counting replicas (paper 5.4.2,
  Figure 8). Needs small batches (drawn) and leaders that fail at the moment they win or commit (the
  `flaky_leader` fault). Caught by leader completeness or state-machine safety.
- `append_ignores_prev_term`: a follower accepts an AppendEntries whose previous entry's term does not
  match its own (the consistency check of 5.3 reduced to "the index exists"). Caught by log matching.
- `commit_beyond_verified`: a follower takes the leader's commit index as is, not capped at the last
  entry the append verified, so it may apply an old entry the leader never had. Caught by state-machine
  safety.
- `read_index_without_heartbeat`: ReadIndex reads served at the commit index at once, without the
  heartbeat round that confirms leadership (6.4): a deposed leader that does not know it yet answers
  stale reads. Caught by the linearizability check.
- `lease_too_long`: the lease held ten times longer than configured (beyond the election timeout the
  followers' stickiness lasts). Caught by the linearizability check in lease-read runs.
- `vote_in_stale_term`: a vote request of an earlier term is granted in that term, although this node
  moved on (and may have voted for another candidate in that term). Caught by "at most one leader per
  term".
- `vote_not_persisted`: a node writes the term of a vote it grants but not the vote, so a restart
  forgets whom it voted for and may vote again in that term. Caught by "votes are durable" (each vote
  that elected a leader is in its voter's stable storage) at the first election (seed 0). Without that
  check the default swarm missed it on all of seeds 0..199: only a crash between a vote and a second
  candidate's request in the same term, then two leaders of that term, would show it.
- `early_send_beyond_leader`: the core vouches for every Ready's messages (`Ready.send_while_persisting`),
  not only for a leader's appends of its own log, so a follower's acknowledgement or a vote may leave
  while the write it promises is in flight (the simulator sends such messages before the write). Caught
  by "acknowledged is durable" after a power loss (first default seed: 1).
- `stall_uncounted`: the ticks a stalled node skips are not counted (`RaftNode.skip_ticks` does nothing),
  as before the lease/stall fix: a leader paused for 50 ticks counts 2, and holds its lease long after a
  new leader was elected. Caught by the linearizability check in lease-read runs with pauses.

Paxos bugs (a `PaxosNode` subclass replaces the core, through `PlantedBug.make_adapter`):

- `paxos_accept_without_quorum` (protocol: paxos): the leader takes a value as chosen once one acceptor
  fewer than a majority accepted it (itself alone in a cluster of three). Caught by `PaxosSafety` (a
  later leader's phase 1 misses the value and a majority chooses another at that slot), by state-machine
  safety, or by the linearizability check (an acknowledged write lost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from dscore.core.client_messages import ClientRequest, ClientResponse, Outcome
from dscore.core.errors import ConfigError
from dscore.core.ids import NodeId
from dscore.protocols.contract import ReadState, Ready
from dscore.protocols.paxos import PaxosNode
from dscore.protocols.raft import AppendEntries, RaftNode, VoteRequest, VoteResponse
from dscore.protocols.raft.messages import HardState
from dscore.replica.executor import Executor, Work, _PendingEntry, _Waiter
from dscore.sim.adapter import ProtocolAdapter
from dscore.sim.config import SimConfig
from dscore.sim.host import ExecutorFactory
from dscore.sim.registry import get_protocol, paxos_config, raft_config, run_simulation, swarm
from dscore.sim.simulator import SimResult

# -- executor bugs ----------------------------------------------------------------------------------


class ApplyBeforePersist(Executor):
    def poll(self) -> Work | None:
        work = super().poll()
        if work is not None and work.ready is not None and work.ready.committed:
            self._apply_ready(work.ready)  # `done` skips what is already applied
        return work


class SendBeforePersist(Executor):
    def poll(self) -> Work | None:
        work = super().poll()
        if work is not None and work.messages:
            work.replies.extend(work.messages)
            work.messages = []
        return work


class ReplayServedAsNew(Executor):
    def _on_replayed_requests(self, source: str, requests: Iterable[ClientRequest]) -> None:
        self._on_client_requests(source, requests)  # as if new: a follower's NOT_LEADER says "no effect"


class AckOnPropose(Executor):
    def _propose(self, data: bytes, waiters: list[_Waiter]) -> None:
        pending = len(self._pending)
        super()._propose(data, waiters)
        if len(self._pending) > pending:  # proposed: answer at once, and forget the waiters
            index = next(reversed(self._pending))
            entry = self._pending.pop(index)
            self._pending_count -= len(entry.waiters)
            for source, request_id in entry.waiters:
                self._reply(source, ClientResponse(request_id, Outcome.OK))


class UnknownAsNotLeader(Executor):
    def _answer_unknown(self, pending: _PendingEntry, why: str) -> None:
        for source, request_id in pending.waiters:
            self._reply(
                source, ClientResponse(request_id, Outcome.NOT_LEADER, leader_hint=self.core.leader_id)
            )


# -- Raft bugs --------------------------------------------------------------------------------------


class MinorityCommit(RaftNode):
    """Counts a quorum as one fewer than a majority (two of five)."""

    def _quorum_match(self) -> int:
        progress = [self.progress(voter) for voter in self.voters]
        matches = sorted((p.match for p in progress if p is not None), reverse=True)
        return matches[max(0, len(matches) // 2 - 1)] if matches else 0


class ForgetfulVoter(RaftNode):
    """Grants a vote even to a candidate whose log is behind (no election restriction)."""

    def _on_vote_request(self, src: NodeId, m: VoteRequest) -> None:
        super()._on_vote_request(src, replace(m, last_log_term=10**9))


class CommitsByCountingAnyTerm(RaftNode):
    """The bug Figure 8 warns about: commit an entry of an earlier term as soon as a majority stores it."""

    def _can_commit_by_counting(self, index: int) -> bool:
        return True


class AppendIgnoresPrevTerm(RaftNode):
    """Accepts an append whose previous entry it holds with another term: the consistency check only
    asks that the index exist."""

    def _on_append(self, src: NodeId, m: AppendEntries) -> None:
        term = self.term_at(m.prev_index)
        if term is not None and term != m.prev_term:
            m = replace(m, prev_term=term)  # pretend it matched
        super()._on_append(src, m)


class CommitBeyondVerified(RaftNode):
    """Takes the leader's commit index as is, not capped at the last entry this append verified."""

    def _on_append(self, src: NodeId, m: AppendEntries) -> None:
        super()._on_append(src, m)
        log = self._log
        if self._leader == src and m.term == self._term and m.commit > log.committed:
            log.committed = min(m.commit, log.last_index)


class ReadIndexWithoutHeartbeat(RaftNode):
    """Serves every read at the commit index at once: no heartbeat round confirms it still leads."""

    def _register_read(self, request_id: int) -> None:
        self._read_only.released.append(ReadState(request_id, self._log.committed))


class LeaseTooLong(RaftNode):
    """Holds its lease ten times longer than configured."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lease = self._read_only.lease_ticks
        if lease is not None:
            self._read_only.lease_ticks = 10 * lease


class StaleTermVoter(RaftNode):
    """Grants a vote request of an earlier term in that term (5.1 says: drop it, answer with the newer
    term)."""

    def _step_vote_request(self, src: NodeId, m: VoteRequest) -> None:
        if m.term < self._term and not m.pre_vote:
            self._send(src, VoteResponse(m.term, True, False))
            return
        super()._step_vote_request(src, m)


class StallUncounted(RaftNode):
    """Ticks skipped after a stall are not counted (as before `skip_ticks` existed)."""

    def skip_ticks(self, count: int) -> None:
        return None


class VoteNotPersisted(RaftNode):
    """Writes the term of a vote it grants, but not the vote: a restart forgets whom it voted for."""

    def ready(self) -> Ready:
        ready = super().ready()
        hard_state = ready.hard_state
        if isinstance(hard_state, HardState) and hard_state.vote not in (None, self.node_id):
            return replace(ready, hard_state=replace(hard_state, vote=None))
        return ready


class SendsWhilePersistingAnywhere(RaftNode):
    """Vouches for every Ready's messages (`Ready.send_while_persisting`), not only a leader's appends."""

    def ready(self) -> Ready:
        ready = super().ready()
        return replace(ready, send_while_persisting=True) if ready.messages else ready


def raft_variant(core: type[RaftNode]) -> Callable[[], ProtocolAdapter]:
    """The registered Raft adapter (invariants, drawn settings) with `core` as every node's core."""

    def make() -> ProtocolAdapter:
        return replace(
            get_protocol("raft"),
            make_core=core.factory(),
            configure=lambda options: core.factory(raft_config(options)),
            description=f"Raft with a planted bug ({core.__name__})",
        )

    return make


# -- Paxos bugs -------------------------------------------------------------------------------------


class AcceptWithoutQuorum(PaxosNode):
    """Broken on purpose: phase 2 ends one acceptor short of a majority (at least the leader itself)."""

    def _is_chosen(self, acceptors: int) -> bool:
        return acceptors >= max(1, self.quorum - 1)


@dataclass(frozen=True, slots=True)
class PlantedBug:
    name: str
    protocol: str
    description: str
    #: replaces the executor (an executor bug)
    make_executor: ExecutorFactory | None = None
    #: replaces the protocol's adapter (a protocol bug: its cores are broken)
    make_adapter: Callable[[], ProtocolAdapter] | None = None
    #: the runs hand a restarted node its inputs again (`SimConfig.replay_on_restart`), which the bug
    #: needs and the default swarm does not do
    replay_on_restart: bool = False


PLANTED: dict[str, PlantedBug] = {
    bug.name: bug
    for bug in (
        PlantedBug(
            "apply_before_persist",
            "raft",
            "the executor applies committed entries before their write is durable",
            make_executor=ApplyBeforePersist,
        ),
        PlantedBug(
            "send_before_persist",
            "raft",
            "the executor sends protocol messages before the write they announce is durable",
            make_executor=SendBeforePersist,
        ),
        PlantedBug(
            "replay_served_as_new",
            "raft",
            "a client request read again after a restart is served or refused as if new",
            make_executor=ReplayServedAsNew,
            replay_on_restart=True,
        ),
        PlantedBug(
            "ack_on_propose",
            "raft",
            "the executor answers a client OK when it proposes the command, not once it is applied",
            make_executor=AckOnPropose,
        ),
        PlantedBug(
            "unknown_as_not_leader",
            "raft",
            "a leader that loses the lead answers its pending commands 'no effect' instead of 'unknown'",
            make_executor=UnknownAsNotLeader,
        ),
        PlantedBug(
            "minority_commit",
            "raft",
            "a quorum is counted as one fewer than a majority (two of five)",
            make_adapter=raft_variant(MinorityCommit),
        ),
        PlantedBug(
            "vote_without_election_restriction",
            "raft",
            "votes are granted to candidates whose log is behind",
            make_adapter=raft_variant(ForgetfulVoter),
        ),
        PlantedBug(
            "figure8_commit_by_counting",
            "raft",
            "entries of an earlier term are committed by counting replicas (Figure 8)",
            make_adapter=raft_variant(CommitsByCountingAnyTerm),
        ),
        PlantedBug(
            "append_ignores_prev_term",
            "raft",
            "a follower accepts an append whose previous entry's term does not match",
            make_adapter=raft_variant(AppendIgnoresPrevTerm),
        ),
        PlantedBug(
            "commit_beyond_verified",
            "raft",
            "a follower takes the leader's commit index beyond the entries the append verified",
            make_adapter=raft_variant(CommitBeyondVerified),
        ),
        PlantedBug(
            "read_index_without_heartbeat",
            "raft",
            "ReadIndex reads are served without a heartbeat round confirming leadership",
            make_adapter=raft_variant(ReadIndexWithoutHeartbeat),
        ),
        PlantedBug(
            "lease_too_long",
            "raft",
            "the read lease is held ten times longer than configured",
            make_adapter=raft_variant(LeaseTooLong),
        ),
        PlantedBug(
            "vote_in_stale_term",
            "raft",
            "a vote request of an earlier term is granted in that term",
            make_adapter=raft_variant(StaleTermVoter),
        ),
        PlantedBug(
            "vote_not_persisted",
            "raft",
            "a granted vote is not written to stable storage (only its term is)",
            make_adapter=raft_variant(VoteNotPersisted),
        ),
        PlantedBug(
            "early_send_beyond_leader",
            "raft",
            "every Ready's messages may leave while its write is persisted, votes and acknowledgements too",
            make_adapter=raft_variant(SendsWhilePersistingAnywhere),
        ),
        PlantedBug(
            "stall_uncounted",
            "raft",
            "ticks skipped after a stall are not counted, so a paused leader's lease outlives it",
            make_adapter=raft_variant(StallUncounted),
        ),
        PlantedBug(
            "paxos_accept_without_quorum",
            "paxos",
            "the Paxos leader takes a value as chosen one acceptor short of a majority",
            make_adapter=lambda: replace(
                get_protocol("paxos"),
                make_core=AcceptWithoutQuorum.factory(),
                description="Multi-Paxos choosing without a majority (planted bug)",
                configure=lambda options: AcceptWithoutQuorum.factory(paxos_config(options)),
            ),
        ),
    )
}


def planted(name: str) -> PlantedBug:
    try:
        return PLANTED[name]
    except KeyError:
        raise ConfigError(f"unknown planted bug {name!r}; known: {', '.join(sorted(PLANTED))}") from None


#: the default swarm of `dscore sim --protocol raft` (the command line's defaults)
DEFAULT_NODES = 5
DEFAULT_CLIENTS = 3
DEFAULT_DURATION_TICKS = 1_000


def default_swarm(seed: int, protocol: str = "raft") -> SimConfig:
    """The run `dscore sim --protocol PROTOCOL --seed SEED` makes (every other option at its default)."""
    config = swarm(seed, protocol, nodes=DEFAULT_NODES, duration_ticks=DEFAULT_DURATION_TICKS)
    return replace(config, workload=replace(config.workload, clients=DEFAULT_CLIENTS))


def run_planted(name: str, config: SimConfig) -> SimResult:
    """`config` run with the planted bug `name` in place."""
    bug = planted(name)
    adapter = bug.make_adapter() if bug.make_adapter is not None else None
    if bug.replay_on_restart:
        config = replace(config, replay_on_restart=True)
    return run_simulation(config=config, adapter=adapter, make_executor=bug.make_executor)


def replay_command(name: str, seed: int) -> str:
    """The command that replays seed `seed` of the default swarm with bug `name` planted, with its trace."""
    return f"dscore sim --protocol {planted(name).protocol} --seed {seed} --plant {name} --verbose"


def first_catch(name: str, seeds: Iterable[int]) -> SimResult | None:
    """The first of `seeds` (default swarm) on which the checks catch bug `name`, or None."""
    protocol = planted(name).protocol
    for seed in seeds:
        result = run_planted(name, default_swarm(seed, protocol))
        if not result.ok:
            return result
    return None
