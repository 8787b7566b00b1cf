"""Planted bugs: deliberately broken variants the simulator must catch, each by name and replayable.

A checker that never fails proves nothing. Each bug here breaks one rule the code depends on, in the
executor (the code every node runs) or in a protocol core; `dscore sim --plant NAME --seeds 200` runs the
default swarm against it, and every failure prints the command that replays its seed. `make test-slow`
checks that each is caught within 200 seeds of the default swarm (`tests/sim/test_sim_planted.py`);
`make test` runs a few of them on seeds known to catch them.

Executor bugs (protocol: raft):

- `apply_before_persist`: committed entries are applied when a `Work` is handed out, before its write is
  durable (the `Ready` order broken at step 3 before step 1). Caught by the host's check that every
  applied entry is durable on that node.
- `send_before_persist`: protocol messages go out with the replies, before the write (step 2 before
  step 1): a vote or an acknowledgement promises what a crash forgets. Caught when a kill lands between
  the two (the simulator's mid-work crashes) and a node votes twice in one term, or a leader counts an
  acknowledgement its follower lost.
- `ack_on_propose`: a client command is answered OK as soon as it is proposed, not once applied. Caught
  by the linearizability check (an acknowledged write that never took effect, or a read that misses it).
- `unknown_as_not_leader`: a command pending on a leader that lost the lead is answered NOT_LEADER ("no
  effect") instead of UNKNOWN, though the next leader may still commit it. Caught by the linearizability
  check when a client records `fail` for a write that took effect.

Core bugs (the protocol core is swapped, through `PlantedBug.adapter`):

- `paxos_accept_without_quorum` (protocol: paxos): the leader takes a value as chosen once one acceptor
  fewer than a majority accepted it (itself alone in a cluster of three). Caught by `PaxosSafety` (a
  later leader's phase 1 misses the value and a majority chooses another at that slot), by state-machine
  safety, or by the linearizability check (an acknowledged write lost).
"""

from __future__ import annotations

from dataclasses import dataclass

from dscore.core.client_messages import ClientResponse, Outcome
from dscore.core.errors import ConfigError
from dscore.protocols.paxos import PaxosNode
from dscore.replica.executor import Executor, Work, _PendingEntry, _Waiter
from dscore.sim.adapter import ProtocolAdapter
from dscore.sim.host import ExecutorFactory
from dscore.sim.paxos_invariants import paxos_invariants
from dscore.sim.registry import paxos_config


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


class AcceptWithoutQuorum(PaxosNode):
    """Broken on purpose: phase 2 ends one acceptor short of a majority (at least the leader itself)."""

    def _is_chosen(self, acceptors: int) -> bool:
        return acceptors >= max(1, self.quorum - 1)


@dataclass(frozen=True, slots=True)
class PlantedBug:
    name: str
    protocol: str
    description: str
    make_executor: ExecutorFactory | None = None
    #: a broken protocol core: the adapter the run uses instead of the registered one
    adapter: ProtocolAdapter | None = None


PLANTED: dict[str, PlantedBug] = {
    bug.name: bug
    for bug in (
        PlantedBug(
            "apply_before_persist",
            "raft",
            "the executor applies committed entries before their write is durable",
            ApplyBeforePersist,
        ),
        PlantedBug(
            "send_before_persist",
            "raft",
            "the executor sends protocol messages before the write they announce is durable",
            SendBeforePersist,
        ),
        PlantedBug(
            "ack_on_propose",
            "raft",
            "the executor answers a client OK when it proposes the command, not once it is applied",
            AckOnPropose,
        ),
        PlantedBug(
            "unknown_as_not_leader",
            "raft",
            "a leader that loses the lead answers its pending commands 'no effect' instead of 'unknown'",
            UnknownAsNotLeader,
        ),
        PlantedBug(
            "paxos_accept_without_quorum",
            "paxos",
            "the Paxos leader takes a value as chosen one acceptor short of a majority",
            adapter=ProtocolAdapter(
                name="paxos",
                make_core=AcceptWithoutQuorum.factory(),
                make_invariants=paxos_invariants,
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
