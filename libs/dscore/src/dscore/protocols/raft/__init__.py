"""Raft (Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm", and Ongaro's
dissertation "Consensus: Bridging Theory and Practice"), sans-I/O, in the style of etcd's raft.

`RaftNode` implements `dscore.protocols.contract.ProtocolCore`: it never does I/O, never reads a clock
(time is `tick()`s) and draws randomness only from the injected `random.Random`. Section numbers refer to
the paper (5.x) and the dissertation (3.x, 4.x, 6.x, 9.x).

What is implemented: leader election with pre-vote (9.6) and check-quorum (6.2); log replication (5.3)
with fast backtracking, batching and per-follower flow control; the Figure 8 commit rule (5.4.2);
linearizable reads by ReadIndex and leases (6.4); log compaction and InstallSnapshot in chunks
(chapter 5); single-server membership changes and learners (4.1); leadership transfer (3.10).

One concern per module, read one at a time (after etcd's raft package):

- `config`: `RaftConfig` and `ReadOnlyOption`;
- `messages`: the wire and storage messages and their well-formedness checks;
- `quorum`: majority arithmetic (votes, the committed index, confirmed heartbeat rounds, check-quorum);
- `progress`: the configuration in force, the leader's `Progress` per member and flow control, votes;
- `log`: the in-memory log (entries, snapshot index and term, truncation, conflict search) and what is
  still to be handed out in `Ready`;
- `readonly`: ReadIndex and lease reads, with the clock-drift bound a lease assumes;
- `confchange`: single-server membership changes and the configuration at every log index;
- `snapshot`: receiving a snapshot in chunks;
- `node`: `RaftNode`, wiring the pieces into `step` / `tick` / `propose` / `ready` / `advance`.

Every public name is importable from `dscore.protocols.raft`.
"""

from __future__ import annotations

from dscore.protocols.raft.confchange import ConfChangeRejectedError, ConfChangeType
from dscore.protocols.raft.config import RaftConfig, ReadOnlyOption
from dscore.protocols.raft.messages import (
    AppendEntries,
    AppendResponse,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Membership,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from dscore.protocols.raft.node import RaftFactory, RaftNode, Role
from dscore.protocols.raft.progress import Progress, ProgressState
from dscore.protocols.raft.readonly import max_tick_drift

__all__ = [
    "AppendEntries",
    "AppendResponse",
    "ConfChangeRejectedError",
    "ConfChangeType",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "InstallSnapshot",
    "Membership",
    "Progress",
    "ProgressState",
    "RaftConfig",
    "RaftFactory",
    "RaftNode",
    "ReadOnlyOption",
    "Role",
    "SnapshotResponse",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
    "max_tick_drift",
]
