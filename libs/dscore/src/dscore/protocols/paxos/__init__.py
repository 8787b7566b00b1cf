"""Multi-Paxos (Lamport, "Paxos Made Simple"; structure after van Renesse and Altinbuken, "Paxos Made
Moderately Complex"; engineering after Chandra, Griesemer and Redstone, "Paxos Made Live"), sans-I/O.

`PaxosNode` implements `dscore.protocols.contract.ProtocolCore` (and `Compactable`): it never does I/O,
never reads a clock (time is `tick()`s) and draws randomness only from the injected `random.Random`.

What is implemented: a stable leader (distinguished proposer) with ballots (round, node); phase 1 once
per leadership for every open slot, after a probe (pre-vote); phase 2 per slot, pipelined within a
window; learners told of chosen values by the commit index, catching up by chosen values or a snapshot;
a new leader re-proposes what phase 1 reported and fills holes with no-ops; leadership by ballot
preemption with randomized backoff;
heartbeats; linearizable reads by a read quorum round; snapshots and log truncation. Not implemented:
membership changes (the membership is fixed at start).

One concern per module:

- `ballot`: ballots as ints, (round, rank) order, the `CHOSEN` mark;
- `config`: `PaxosConfig`;
- `messages`: the wire and storage messages and their well-formedness checks;
- `log`: the slots a node keeps (accepted or chosen), persistence and what to hand out;
- `readonly`: read quorum rounds;
- `node`: `PaxosNode`, the proposer, acceptor and learner wired into the contract.
"""

from __future__ import annotations

from dscore.protocols.paxos.ballot import CHOSEN, NO_BALLOT, Ballots
from dscore.protocols.paxos.config import PaxosConfig
from dscore.protocols.paxos.messages import (
    Accept,
    Accepted,
    CatchUp,
    Heartbeat,
    HeartbeatAck,
    Learn,
    Nack,
    PaxosHardState,
    Prepare,
    Probe,
    ProbeReply,
    Promise,
    PromisedSlot,
    SnapshotOffer,
)
from dscore.protocols.paxos.node import PaxosFactory, PaxosNode, Role

__all__ = [
    "CHOSEN",
    "NO_BALLOT",
    "Accept",
    "Accepted",
    "Ballots",
    "CatchUp",
    "Heartbeat",
    "HeartbeatAck",
    "Learn",
    "Nack",
    "PaxosConfig",
    "PaxosFactory",
    "PaxosHardState",
    "PaxosNode",
    "Prepare",
    "Probe",
    "ProbeReply",
    "Promise",
    "PromisedSlot",
    "Role",
    "SnapshotOffer",
]
