"""PBFT's messages (Castro and Liskov, OSDI '99 section 4, TOCS 2002 section 4) and its durable state.

Every message sent between replicas carries `mac`: the pair MAC (`dscore.protocols.pbft.auth`) over the
message's encoding with `mac` empty, keyed by the sender and the receiver. The sender is the envelope's
source; a message whose MAC does not verify for that sender is dropped and counted `unauthenticated`.

Differences from the paper, on purpose:

- a request is a *batch* of kv commands (the executor batches clients' commands) with the reply addresses
  of the clients that sent them (`origins`); its digest covers both (`auth.digest_of`);
- a client's timestamp is its session's `seq` (`dscore.statemachine.kv`): the state machine drops a
  command whose timestamp is not newer than the last one it executed for that client, and answers a retry
  with the first result, so a request ordered twice takes effect once;
- VIEW-CHANGE carries the requests of its prepared entries (P), so the new primary has them (the paper's
  condition A3 always holds); NEW-VIEW names the VIEW-CHANGE messages it used by digest (`VcRef`), as in
  the MAC version of the protocol (TOCS section 4.5 / Castro's thesis), and each backup checks it against
  the ones it received itself;
- `Status`, `Executed` and `StateOffer` replace the paper's retransmission and state transfer (TOCS
  section 5.3): a lagging replica takes an executed request once f + 1 replicas vouch for it, and a
  checkpoint's state once its digest is certified.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from dscore.core.ids import NodeId
from dscore.core.registry import message


@message("pbft.origin")
@dataclass(frozen=True, slots=True)
class Origin:
    """Who asked for one command of a batch: the client's reply address and its request id."""

    address: str
    request_id: int


@message("pbft.forward")
@dataclass(frozen=True, slots=True)
class Forward:
    """A backup relays a client's request batch to the primary (section 4.1)."""

    data: bytes
    origins: tuple[Origin, ...]
    mac: bytes = b""


@message("pbft.pre_prepare")
@dataclass(frozen=True, slots=True)
class PrePrepare:
    view: int
    seq: int
    digest: bytes
    data: bytes
    origins: tuple[Origin, ...]
    mac: bytes = b""


@message("pbft.prepare")
@dataclass(frozen=True, slots=True)
class Prepare:
    view: int
    seq: int
    digest: bytes
    mac: bytes = b""


@message("pbft.commit")
@dataclass(frozen=True, slots=True)
class Commit:
    view: int
    seq: int
    digest: bytes
    mac: bytes = b""


@message("pbft.checkpoint")
@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The digest of the state after executing every request up to `seq` (section 4.3)."""

    seq: int
    digest: bytes
    mac: bytes = b""


@message("pbft.prepared_entry")
@dataclass(frozen=True, slots=True)
class PEntry:
    """A request at `seq` with its pre-prepare's `view` (P: prepared there; NEW-VIEW: chosen for it).
    A null request has an empty digest and data."""

    seq: int
    view: int
    digest: bytes
    data: bytes
    origins: tuple[Origin, ...]


@message("pbft.preprepared_entry")
@dataclass(frozen=True, slots=True)
class QEntry:
    """Q: the replica pre-prepared (or, as primary, assigned) `digest` at `seq` in `view`."""

    seq: int
    view: int
    digest: bytes


@message("pbft.checkpoint_ref")
@dataclass(frozen=True, slots=True)
class CheckpointRef:
    seq: int
    digest: bytes


@message("pbft.view_change")
@dataclass(frozen=True, slots=True)
class ViewChange:
    view: int
    stable_seq: int
    stable_digest: bytes
    prepared: tuple[PEntry, ...]
    preprepared: tuple[QEntry, ...]
    #: C: the checkpoints the sender holds (its stable one, and later ones of its own not yet stable)
    checkpoints: tuple[CheckpointRef, ...]
    mac: bytes = b""


@message("pbft.vc_ref")
@dataclass(frozen=True, slots=True)
class VcRef:
    replica: NodeId
    digest: bytes


@message("pbft.new_view")
@dataclass(frozen=True, slots=True)
class NewView:
    view: int
    used: tuple[VcRef, ...]
    checkpoint_seq: int
    checkpoint_digest: bytes
    chosen: tuple[PEntry, ...]
    mac: bytes = b""


@message("pbft.status")
@dataclass(frozen=True, slots=True)
class Status:
    """How far the sender got: peers answer with what it lacks (retransmission)."""

    view: int
    #: the sender is moving to `view` and has not installed it yet
    changing: bool
    executed: int
    stable_seq: int
    mac: bytes = b""


@message("pbft.executed")
@dataclass(frozen=True, slots=True)
class Executed:
    """The sender executed this request at `seq` (counted once f + 1 replicas agree)."""

    seq: int
    digest: bytes
    data: bytes
    origins: tuple[Origin, ...]
    mac: bytes = b""


@message("pbft.state_offer")
@dataclass(frozen=True, slots=True)
class StateOffer:
    """The sender's state at its stable checkpoint `seq` (`digest` = SHA-256 of `data`)."""

    seq: int
    digest: bytes
    data: bytes
    mac: bytes = b""


@message("pbft.bundle")
@dataclass(frozen=True, slots=True)
class Bundle:
    """Several messages in one, with one MAC (their own `mac` fields are left empty): retransmissions to
    a peer that is behind. One frame, so a receiver that drops frames arriving out of order (per-sender
    high-water marks) keeps all of them or none."""

    items: tuple[object, ...]
    mac: bytes = b""


@message("pbft.hard_state_v2")
@dataclass(frozen=True, slots=True)
class PbftHardState:
    """What a replica persists before it sends: what it said it accepted, prepared and voted for, and
    what it said in the view change of `view` (persisted before either is sent, like the rest).

    `view_change` is this replica's own VIEW-CHANGE for `view` as it sent it (`mac` empty): after a
    restart it resends that very message, so a NEW-VIEW naming it by digest still checks out at every
    backup. `new_view` is the NEW-VIEW this replica sent as the primary of `view`: after a restart it
    resends it to replicas still waiting for it (TOCS 2002 section 4.5), and never makes another one for
    that view. Records of the first layout (`PbftHardStateV1`) are still read."""

    view: int
    changing: bool
    stable_seq: int
    stable_digest: bytes
    next_seq: int
    accepted: tuple[PEntry, ...]
    prepared: tuple[PEntry, ...]
    preprepared: tuple[QEntry, ...]
    view_change: ViewChange | None = None
    new_view: NewView | None = None


@message("pbft.hard_state")
@dataclass(frozen=True, slots=True)
class PbftHardStateV1:
    """The first layout of `PbftHardState` (no view-change messages), as older builds saved it: read
    only, restored as a `PbftHardState` without them (`upgrade`)."""

    view: int
    changing: bool
    stable_seq: int
    stable_digest: bytes
    next_seq: int
    accepted: tuple[PEntry, ...]
    prepared: tuple[PEntry, ...]
    preprepared: tuple[QEntry, ...]

    def upgrade(self) -> PbftHardState:
        # the first layout's fields are the new one's first fields, in order
        return PbftHardState(*(getattr(self, f.name) for f in fields(self)))


#: the messages that carry a pair MAC
AUTHENTICATED = (
    Forward,
    PrePrepare,
    Prepare,
    Commit,
    Checkpoint,
    ViewChange,
    NewView,
    Status,
    Executed,
    StateOffer,
    Bundle,
)

#: what a `Bundle` may carry
BUNDLED = (PrePrepare, Prepare, Commit, Checkpoint, ViewChange, NewView, Executed, StateOffer)
