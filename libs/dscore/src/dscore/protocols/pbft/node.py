"""`PbftNode`: one PBFT replica as a sans-I/O core (Castro and Liskov, OSDI '99; TOCS 2002).

n = 3f + 1 replicas in a fixed, sorted order; the primary of view v is replica v mod n. Quorums are n - f
(2f + 1); a weak certificate is f + 1 (at least one correct replica). Sections of the paper (TOCS 2002):

- 4.2 normal case: the primary assigns a sequence number to a request batch and multicasts PRE-PREPARE;
  a backup accepts it in its view, within the water marks, if it accepted no other digest for that view
  and number, and multicasts PREPARE; a replica is *prepared* with the pre-prepare and 2f matching
  prepares from distinct backups, then multicasts COMMIT; it is *committed-local* with 2f + 1 matching
  commits, and executes requests in sequence-number order;
- 4.3 checkpoints: every K requests the executor hands the core the state machine's image
  (`compact`); its SHA-256 is multicast in CHECKPOINT; 2f + 1 matching ones make it stable: the low
  water mark h moves up, older log and certificates are dropped, and the image is persisted; the high
  water mark is h + L;
- 4.4 / 4.5 view changes: a backup that waits `view_change_timeout_ticks` for a request it knows of
  multicasts VIEW-CHANGE for v + 1 with its stable checkpoint, P (prepared certificates, with their
  requests) and Q (what it pre-prepared); the new primary applies the decision procedure
  (`dscore.protocols.pbft.viewchange`) and multicasts NEW-VIEW; every backup checks it against the
  VIEW-CHANGE messages it received itself. Timeouts double for each view that fails to start, and f + 1
  VIEW-CHANGE messages for later views make a replica join (liveness, section 4.5.2). The new view's
  timer runs once 2f + 1 replicas left the old one (`_left_behind`). A replica's own VIEW-CHANGE and the
  NEW-VIEW it sent as primary are durable (`PbftHardState`) and resent word for word after a restart.

Execution is handed to the driver as committed `LogEntry`s (`index` = sequence number, `term` = the view
in which *this* replica committed it: replicas agree on the request at each number, not on that view).
Each executed entry is persisted in `entries` before it is applied (the `Ready` order), so the durable
log is the executed prefix; what is in flight lives in `hard_state`.

Clients (see `dscore.replica.executor`): every replica answers every command it executes, to the reply
addresses the request batch carries (`origins_of`), and a client accepts a result once f + 1 replicas
sent the same one. A backup that receives a request forwards it to the primary and watches for it.
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from dscore.core.codec import encode_value
from dscore.core.envelope import Envelope
from dscore.core.errors import LocalError
from dscore.core.ids import NodeId
from dscore.protocols.contract import (
    EMPTY_READY,
    Counters,
    DurableState,
    EntryKind,
    LogEntry,
    Outgoing,
    Ready,
    Snapshot,
)
from dscore.protocols.pbft import viewchange
from dscore.protocols.pbft.auth import NULL_DIGEST, PairKeys, digest_of
from dscore.protocols.pbft.config import PbftConfig
from dscore.protocols.pbft.messages import (
    AUTHENTICATED,
    BUNDLED,
    Bundle,
    Checkpoint,
    CheckpointRef,
    Commit,
    Executed,
    Forward,
    NewView,
    Origin,
    PbftHardState,
    PbftHardStateV1,
    PEntry,
    Prepare,
    PrePrepare,
    QEntry,
    StateOffer,
    Status,
    VcRef,
    ViewChange,
)

#: the view-change timeout grows to at most this many times `view_change_timeout_ticks`
MAX_BACKOFF = 8
#: VIEW-CHANGE entries lie within this many log sizes (L) above the low water mark they report
MAX_VIEW_CHANGE_SPAN = 4


class PbftRole(enum.Enum):
    PRIMARY = "primary"
    BACKUP = "backup"
    #: waiting for the NEW-VIEW of the view it moved to
    VIEW_CHANGE = "view_change"


def origins_key(origins: Iterable[Origin]) -> tuple[tuple[str, int], ...]:
    return tuple((o.address, o.request_id) for o in origins)


def request_digest(data: bytes, origins: Sequence[Origin]) -> bytes:
    return digest_of(data, origins_key(origins))


def vc_digest(vc: ViewChange) -> bytes:
    return hashlib.sha256(encode_value(replace(vc, mac=b""))).digest()


@dataclass(slots=True)
class _Slot:
    """The pre-prepare this replica accepted at one sequence number in the current view."""

    view: int
    digest: bytes
    data: bytes
    origins: tuple[Origin, ...]


class PbftNode:
    def __init__(
        self,
        node_id: NodeId,
        peers: Iterable[NodeId],
        rng: random.Random,
        durable: DurableState | None = None,
        *,
        keys: PairKeys,
        config: PbftConfig | None = None,
        valid_request: Callable[[bytes, int], bool] | None = None,
    ) -> None:
        self._node_id = node_id
        #: the application's check of a request batch (its data, and how many origins it names): a backup
        #: refuses a pre-prepare of a request no client could have sent (PBFT's validity predicate)
        self._valid_request = valid_request
        self.config = config = config or PbftConfig()
        self.members: tuple[NodeId, ...] = tuple(sorted({node_id, *peers}))
        self.peers = tuple(m for m in self.members if m != node_id)
        n = len(self.members)
        self.f = config.faults_tolerated if config.faults_tolerated is not None else (n - 1) // 3
        self.quorum = config.quorum_override or n - self.f
        self.weak = self.f + 1
        self.keys = keys
        self._rng = rng
        self.counters = Counters()
        k = config.checkpoint_interval
        self._k = k
        self._log_size = config.log_size
        # -- state (rebuilt from `durable` below) --
        self.view = 0
        self.changing = False
        self.stable_seq = 0
        self.stable_digest = b""
        #: the stable checkpoint before the current one: what VIEW-CHANGE messages report as the low water
        #: mark (with P and Q kept since then). A replica that adopted a checkpoint only a minority of
        #: correct replicas hold (from a NEW-VIEW) still tells the others what they can check.
        self.prev_stable: tuple[int, bytes] = (0, b"")
        self.next_seq = 1
        self._slots: dict[int, _Slot] = {}
        self._prepared: dict[int, PEntry] = {}
        self._preprepared: dict[int, dict[bytes, int]] = {}
        self._prepares: dict[tuple[int, int, bytes], set[NodeId]] = {}
        self._commits: dict[tuple[int, int, bytes], set[NodeId]] = {}
        self._sent_commit: set[tuple[int, int]] = set()
        #: committed-local (or vouched for by f + 1), not yet released for execution
        self._committed: dict[int, PEntry] = {}
        #: executed requests above the stable checkpoint (for `Executed` answers and replies)
        self._executed: dict[int, PEntry] = {}
        self.last_executed = 0
        self._released = 0
        self._checkpoint_taken = 0
        #: own checkpoints not yet stable: seq -> (digest, state image)
        self._own_checkpoints: dict[int, tuple[bytes, bytes]] = {}
        self._stable_image: bytes | None = None
        self._checkpoint_votes: dict[int, dict[NodeId, bytes]] = {}
        #: a certified checkpoint this replica must fetch the state of: (seq, digest)
        self._wanted_state: tuple[int, bytes] | None = None
        self._state_claims: dict[tuple[int, bytes], set[NodeId]] = {}
        self._executed_claims: dict[int, dict[bytes, tuple[set[NodeId], PEntry]]] = {}
        # -- view changes --
        self._view_changes: dict[int, dict[NodeId, ViewChange]] = {}
        self._new_view_sent: NewView | None = None
        self._pending_new_view: NewView | None = None
        self._vc_started = 0
        #: when 2f + 1 VIEW-CHANGE messages for the view this replica moves to were first held
        self._vc_quorum_at: int | None = None
        self._vc_timeout = config.view_change_timeout_ticks
        self._last_vc_sent = 0
        #: why the latest NEW-VIEW was refused (for logs and tests)
        self.last_rejected_new_view = ""
        # -- requests --
        self._queued: deque[tuple[bytes, tuple[Origin, ...]]] = deque()
        #: requests this backup forwarded and waits to see executed: digest -> (data, origins)
        self._forwarded: dict[bytes, tuple[bytes, tuple[Origin, ...], int]] = {}
        self._timer_started: int | None = None
        self.ticks = 0
        # -- output --
        self._out: list[Outgoing] = []
        #: while answering a status: the messages for the peer, sent as one `Bundle`
        self._bundle: list[object] | None = None
        self._dirty = False
        self._new_entries: list[LogEntry] = []
        self._release: list[LogEntry] = []
        self._snapshot: Snapshot | None = None
        self._log_replaced = False
        self._replay: dict[int, LogEntry] = {}
        self._restore(durable)

    # -- the contract -------------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self._node_id

    @property
    def leader_id(self) -> NodeId | None:
        return None if self.changing else self.primary_of(self.view)

    @property
    def role(self) -> PbftRole:
        if self.changing:
            return PbftRole.VIEW_CHANGE
        return PbftRole.PRIMARY if self.primary_of(self.view) == self._node_id else PbftRole.BACKUP

    @property
    def term(self) -> int:
        return self.view

    def primary_of(self, view: int) -> NodeId:
        return self.members[view % len(self.members)]

    @property
    def is_primary(self) -> bool:
        return not self.changing and self.primary_of(self.view) == self._node_id

    def propose(self, data: bytes) -> int:
        return self.propose_with_origins(data, ())

    def propose_with_origins(self, data: bytes, origins: Sequence[tuple[str, int]]) -> int:
        """A request batch from clients, with the (reply address, request id) of each command (section
        4.1). On the primary it gets a sequence number (returned; 0 if it waits for the window, or
        duplicates one in flight); a backup forwards it to the primary and watches for its execution (0)."""
        return self._request(data, tuple(Origin(a, r) for a, r in origins))

    def _request(self, data: bytes, origins: tuple[Origin, ...]) -> int:
        if self.is_primary:
            return self._assign(data, origins)
        digest = request_digest(data, origins)
        if digest not in self._forwarded and len(self._forwarded) < self.config.max_queued_requests:
            self._forwarded[digest] = (data, origins, self.ticks)
        if not self.changing:
            self._send(self.primary_of(self.view), Forward(data, origins))
        self._arm_timer()
        return 0

    def read_index(self, request_id: int) -> None:
        # Reads are ordered like writes: a read-only optimisation needs 2f + 1 matching replies.
        raise NotImplementedError("PBFT orders reads through the log")

    def origins_of(self, index: int) -> tuple[tuple[str, int], ...]:
        """Who asked for the commands of the request executed at `index` (replies go to them)."""
        entry = self._committed.get(index) or self._executed.get(index)
        return origins_key(entry.origins) if entry is not None else ()

    @property
    def checkpoint_due(self) -> int:
        """The sequence number whose state image the core waits for (`compact`), or 0."""
        released = self._released
        if released and released % self._k == 0 and released > self._checkpoint_taken:
            return released
        return 0

    def compact(self, index: int, data: bytes) -> None:
        """The state machine's image after executing `index` (a checkpoint, section 4.3)."""
        if index != self.checkpoint_due:
            return
        self._checkpoint_taken = index
        digest = hashlib.sha256(data).digest()
        self._own_checkpoints[index] = (digest, data)
        self._vote_checkpoint(self._node_id, index, digest)
        self._broadcast(Checkpoint(index, digest))

    def has_ready(self) -> bool:
        if self._out or self._dirty or self._snapshot is not None:
            return True
        return self._releasable()

    def ready(self) -> Ready:
        self._collect_release()
        if not (self._out or self._dirty or self._snapshot is not None or self._release):
            return EMPTY_READY
        return Ready(
            hard_state=self._hard_state() if self._dirty else None,
            snapshot=self._snapshot,
            log_replaced=self._log_replaced,
            entries=tuple(self._new_entries),
            messages=tuple(self._out),
            committed=tuple(self._release),
        )

    def advance(self, ready: Ready) -> None:
        self._out = self._out[len(ready.messages) :]
        if ready.hard_state is not None:
            self._dirty = False
        if ready.snapshot is not None and ready.snapshot is self._snapshot:
            self._snapshot = None
            self._log_replaced = False
        if ready.committed:
            last = ready.committed[-1].index
            for entry in ready.committed:
                self._replay.pop(entry.index, None)
            self._released = max(self._released, last)
            self._new_entries = [e for e in self._new_entries if e.index > last]
            self._release = [e for e in self._release if e.index > last]
            self._on_executed(last)

    # -- ticks --------------------------------------------------------------------------------------

    def tick(self) -> None:
        self.ticks += 1
        config = self.config
        if self._forwarded and self.ticks % config.view_change_timeout_ticks == 0:
            # A client retries what goes unanswered: requests forwarded long ago are its to resend.
            horizon = self.ticks - 4 * config.view_change_timeout_ticks
            self._forwarded = {d: f for d, f in self._forwarded.items() if f[2] > horizon}
        if self.ticks % config.status_every_ticks == 0:
            self._broadcast(Status(self.view, self.changing, self.last_executed, self.stable_seq))
        if self.changing:
            # The new view's timer runs only once 2f + 1 replicas moved to it (section 4.5.2), so a
            # replica cut off alone does not run through views nobody else is in. Replicas that moved
            # past it count too (`_left_behind`): they will not send VIEW-CHANGE for this view again.
            if self._vc_quorum_at is None and self._left_behind() >= self.quorum:
                self._vc_quorum_at = self.ticks
            quorum_at = self._vc_quorum_at
            if quorum_at is not None and self.ticks - quorum_at >= self._vc_timeout:
                self._back_off()
                self._start_view_change(self.view + 1)
            elif self.ticks - self._last_vc_sent >= config.view_change_resend_ticks:
                own = self._view_changes.get(self.view, {}).get(self._node_id)
                if own is not None:
                    self._last_vc_sent = self.ticks
                    self._broadcast(replace(own, mac=b""))
            return
        if self.is_primary:
            self._drain_queue()
        # The primary watches its own requests too: one that cannot get them committed (its backups
        # moved on, or it is cut off) joins the next view rather than hold a view nobody can use.
        started = self._timer_started
        if started is not None and self.ticks - started >= self._vc_timeout:
            self.counters.drop("primary_suspected")
            self._back_off()
            self._start_view_change(self.view + 1)

    def _left_behind(self) -> int:
        """How many replicas (this one included) are known to have left the view before this one: their
        VIEW-CHANGE for this view or a later one is held. The paper starts the timer on 2f + 1 VIEW-CHANGE
        messages for this very view, and relies on each being retransmitted until the view starts; a
        replica that moved on to a later view (its timer expired) no longer sends its VIEW-CHANGE for this
        one, and one that restarted may have lost those it received. Without counting them, replicas
        stuck here with fewer than 2f + 1 could wait forever beside a quorum on the move (seed 933)."""
        view = self.view
        return len({r for v, by in self._view_changes.items() if v >= view for r in by})

    def _back_off(self) -> None:
        """Each view that fails to start doubles the wait for the next (section 4.5.2), up to a cap: the
        simulator's networks stabilize, and a bounded wait keeps recovery after that bounded too."""
        base = self.config.view_change_timeout_ticks
        self._vc_timeout = min(2 * self._vc_timeout, MAX_BACKOFF * base)

    def _pending_work(self) -> bool:
        return bool(self._forwarded) or bool(self._queued) or any(n > self.last_executed for n in self._slots)

    def _arm_timer(self) -> None:
        if self._timer_started is None and not self.changing:
            self._timer_started = self.ticks

    # -- messages -----------------------------------------------------------------------------------

    def step(self, envelope: Envelope) -> None:
        msg = envelope.content
        src = envelope.source
        if not isinstance(msg, AUTHENTICATED) or src not in self.peers:
            self.counters.drop("unexpected")
            return
        body = encode_value(replace(msg, mac=b""))
        if not self.keys.verify(src, self._node_id, body, msg.mac):
            self.counters.drop("unauthenticated")
            return
        if type(msg) is Bundle:
            for item in msg.items[: 4 * self.config.max_catch_up_entries]:
                if isinstance(item, BUNDLED):
                    self._dispatch(src, item)
                else:
                    self.counters.drop("invalid")
            return
        self._dispatch(src, msg)

    def _dispatch(self, src: NodeId, msg: object) -> None:
        kind = type(msg)
        if kind is Prepare:
            self._on_prepare(src, msg)  # type: ignore[arg-type]
        elif kind is Commit:
            self._on_commit(src, msg)  # type: ignore[arg-type]
        elif kind is PrePrepare:
            self._on_pre_prepare(src, msg)  # type: ignore[arg-type]
        elif kind is Checkpoint:
            self._on_checkpoint(src, msg)  # type: ignore[arg-type]
        elif kind is Status:
            self._on_status(src, msg)  # type: ignore[arg-type]
        elif kind is Executed:
            self._on_executed_claim(src, msg)  # type: ignore[arg-type]
        elif kind is Forward:
            self._on_forward(msg)  # type: ignore[arg-type]
        elif kind is ViewChange:
            self._on_view_change(src, msg)  # type: ignore[arg-type]
        elif kind is NewView:
            self._on_new_view(src, msg)  # type: ignore[arg-type]
        elif kind is StateOffer:
            self._on_state_offer(src, msg)  # type: ignore[arg-type]

    def _in_window(self, seq: int) -> bool:
        """Between the water marks; below, back to the previous stable checkpoint, for requests a new
        view proposes again (replicas behind need this one's votes for them)."""
        return self.prev_stable[0] < seq <= self.stable_seq + self._log_size

    def _on_forward(self, msg: Forward) -> None:
        if self.is_primary:
            self._assign(msg.data, msg.origins)

    def _on_pre_prepare(self, src: NodeId, msg: PrePrepare) -> None:
        if self.changing or msg.view != self.view or src != self.primary_of(msg.view):
            self.counters.drop("stale")
            return
        if not self.stable_seq < msg.seq <= self.stable_seq + self._log_size:
            self.counters.drop("out_of_window")
            return
        if msg.digest == NULL_DIGEST or request_digest(msg.data, msg.origins) != msg.digest:
            self.counters.drop("bad_digest")
            return
        if self._valid_request is not None and not self._valid_request(msg.data, len(msg.origins)):
            self.counters.drop("invalid_request")
            return
        slot = self._slots.get(msg.seq)
        if slot is not None and slot.view == msg.view:
            if slot.digest != msg.digest:
                self.counters.drop("equivocation")
            return
        self._accept(PEntry(msg.seq, msg.view, msg.digest, msg.data, msg.origins))
        self._arm_timer()

    def _accept(self, entry: PEntry) -> None:
        """Accept a pre-prepare (or a NEW-VIEW's choice) and, as a backup, multicast PREPARE."""
        seq, view, digest = entry.seq, entry.view, entry.digest
        self._slots[seq] = _Slot(view, digest, entry.data, entry.origins)
        self._preprepared.setdefault(seq, {})[digest] = view
        self._dirty = True
        if self.primary_of(view) != self._node_id:
            self._prepares.setdefault((view, seq, digest), set()).add(self._node_id)
            self._broadcast(Prepare(view, seq, digest))
        self._check(seq)

    def _on_prepare(self, src: NodeId, msg: Prepare) -> None:
        if msg.view != self.view or self.changing or not self._in_window(msg.seq):
            self.counters.drop("stale")
            return
        if src == self.primary_of(msg.view):
            self.counters.drop("invalid")  # the primary's pre-prepare stands for its prepare
            return
        self._prepares.setdefault((msg.view, msg.seq, msg.digest), set()).add(src)
        self._check(msg.seq)

    def _on_commit(self, src: NodeId, msg: Commit) -> None:
        if msg.view != self.view or self.changing or not self._in_window(msg.seq):
            self.counters.drop("stale")
            return
        self._commits.setdefault((msg.view, msg.seq, msg.digest), set()).add(src)
        self._check(msg.seq)

    def _check(self, seq: int) -> None:
        slot = self._slots.get(seq)
        if slot is None or slot.view != self.view or self.changing:
            return
        key = (slot.view, seq, slot.digest)
        primary = self.primary_of(slot.view)
        prepares = self._prepares.get(key, ())
        if sum(1 for r in prepares if r != primary) < self.quorum - 1:
            return
        if (slot.view, seq) not in self._sent_commit:
            self._sent_commit.add((slot.view, seq))
            self._prepared[seq] = PEntry(seq, slot.view, slot.digest, slot.data, slot.origins)
            self._dirty = True
            self._commits.setdefault(key, set()).add(self._node_id)
            self._broadcast(Commit(slot.view, seq, slot.digest))
        if (
            len(self._commits.get(key, ())) >= self.quorum
            and seq > self.last_executed
            and seq > self.stable_seq  # below, the checkpoint's state stands for it
            and seq not in self._committed
        ):
            self._committed[seq] = PEntry(seq, slot.view, slot.digest, slot.data, slot.origins)

    # -- execution ----------------------------------------------------------------------------------

    def _releasable(self) -> bool:
        nxt = self._released + 1 + len(self._release)
        return (nxt in self._committed or nxt in self._replay) and not self._blocked_at(nxt - 1)

    def _blocked_at(self, seq: int) -> bool:
        """Execution waits at a checkpoint until the executor handed the state image (`compact`)."""
        return seq > 0 and seq % self._k == 0 and seq > self._checkpoint_taken and seq > self.stable_seq

    def _collect_release(self) -> None:
        nxt = self._released + 1 + len(self._release)
        while not self._blocked_at(nxt - 1):
            replayed = self._replay.get(nxt)
            if replayed is not None:
                self._release.append(replayed)
            else:
                entry = self._committed.get(nxt)
                if entry is None:
                    break
                kind = EntryKind.NOOP if entry.digest == NULL_DIGEST else EntryKind.NORMAL
                log_entry = LogEntry(nxt, entry.view, kind, entry.data)
                self._new_entries.append(log_entry)
                self._release.append(log_entry)
            nxt += 1

    def _on_executed(self, last: int) -> None:
        for seq in range(self.last_executed + 1, last + 1):
            entry = self._committed.pop(seq, None)
            if entry is not None:
                self._executed[seq] = entry
                self._forwarded.pop(entry.digest, None)
            self._executed_claims.pop(seq, None)
        self.last_executed = max(self.last_executed, last)
        self._timer_started = self.ticks if self._pending_work() and not self.changing else None
        self._vc_timeout = self.config.view_change_timeout_ticks

    # -- the primary --------------------------------------------------------------------------------

    def _assign(self, data: bytes, origins: tuple[Origin, ...]) -> int:
        if self._valid_request is not None and not self._valid_request(data, len(origins)):
            self.counters.drop("invalid_request")
            return 0
        digest = request_digest(data, origins)
        for seq, slot in self._slots.items():
            if slot.digest == digest and seq > self.last_executed:
                return 0  # already in flight (a client's retry through another replica)
        if self.next_seq > self.stable_seq + self._log_size:
            if len(self._queued) < self.config.max_queued_requests:
                self._queued.append((data, origins))
            else:
                self.counters.drop("queue_full")
            return 0
        seq = self.next_seq
        self.next_seq += 1
        self._slots[seq] = _Slot(self.view, digest, data, origins)
        self._preprepared.setdefault(seq, {})[digest] = self.view
        self._dirty = True
        self._broadcast(PrePrepare(self.view, seq, digest, data, origins))
        self._arm_timer()
        self._check(seq)
        return seq

    def _drain_queue(self) -> None:
        while self._queued and self.next_seq <= self.stable_seq + self._log_size:
            data, origins = self._queued.popleft()
            self._assign(data, origins)

    # -- checkpoints and catching up ------------------------------------------------------------------

    def _on_checkpoint(self, src: NodeId, msg: Checkpoint) -> None:
        if msg.seq <= self.stable_seq or msg.seq % self._k or msg.seq > self.stable_seq + 4 * self._log_size:
            return
        self._vote_checkpoint(src, msg.seq, msg.digest)

    def _vote_checkpoint(self, src: NodeId, seq: int, digest: bytes) -> None:
        votes = self._checkpoint_votes.setdefault(seq, {})
        votes[src] = digest
        matching = sum(1 for d in votes.values() if d == digest)
        if matching >= self.quorum and seq > self.stable_seq:
            self._make_stable(seq, digest)

    def _make_stable(self, seq: int, digest: bytes) -> None:
        """A stable checkpoint (2f + 1 matching CHECKPOINT messages): move h, drop what is below."""
        own = self._own_checkpoints.get(seq)
        if own is not None and own[0] != digest:
            self.counters.drop("checkpoint_diverged")  # this replica's state is not the certified one
            own = None
        self._set_stable(seq, digest)
        self._dirty = True
        if own is not None:
            self._stable_image = own[1]
            self._snapshot = Snapshot(seq, self.view, own[1])
            self._log_replaced = False
        elif self.last_executed < seq:
            self._wanted_state = (seq, digest)
        self._garbage_collect(seq)
        if self.is_primary:
            self.next_seq = max(self.next_seq, seq + 1)
            self._drain_queue()

    def _set_stable(self, seq: int, digest: bytes) -> None:
        if seq > self.stable_seq:
            close = seq - self.stable_seq <= self._log_size
            self.prev_stable = (self.stable_seq, self.stable_digest) if close else (seq, digest)
        self.stable_seq = seq
        self.stable_digest = digest

    def _garbage_collect(self, seq: int) -> None:
        """Drop what a stable checkpoint at `seq` makes useless. Certificates and votes since the previous
        stable checkpoint are kept: VIEW-CHANGE messages report that one as the low water mark, and this
        replica keeps taking part in re-proposals of the requests after it."""
        kept_from = self.prev_stable[0]
        tables: tuple[dict[int, object], ...] = (
            self._slots,  # type: ignore[assignment]
            self._prepared,
            self._preprepared,
            self._executed,
        )
        for table in tables:
            for n in [n for n in table if n <= kept_from]:
                del table[n]
        for n in [n for n in self._committed if n <= seq]:
            del self._committed[n]
        for votes in (self._prepares, self._commits):
            for vote in [vote for vote in votes if vote[1] <= kept_from]:
                del votes[vote]
        self._sent_commit = {key for key in self._sent_commit if key[1] > kept_from}
        for n in [n for n in self._own_checkpoints if n < kept_from]:
            del self._own_checkpoints[n]
        for n in [n for n in self._checkpoint_votes if n <= seq]:
            del self._checkpoint_votes[n]
        for n in [n for n in self._executed_claims if n <= seq]:
            del self._executed_claims[n]
        for claim in [claim for claim in self._state_claims if claim[0] < seq]:
            del self._state_claims[claim]

    def _on_status(self, src: NodeId, msg: Status) -> None:
        """Retransmission: tell a peer that is behind what it lacks, with messages of our own (in one
        `Bundle`)."""
        self._bundle = []
        try:
            self._answer_status(src, msg)
        finally:
            items = self._bundle
            self._bundle = None
        if items:
            self._send(src, Bundle(tuple(items)))

    def _answer_status(self, src: NodeId, msg: Status) -> None:
        if msg.view < self.view or (msg.view == self.view and msg.changing and not self.changing):
            self._help_join(src)
        if msg.executed < self.stable_seq and self._stable_image is not None:
            self._send(src, StateOffer(self.stable_seq, self.stable_digest, self._stable_image))
        elif msg.executed < self.last_executed:
            top = min(self.last_executed, msg.executed + self.config.max_catch_up_entries)
            for seq in range(msg.executed + 1, top + 1):
                entry = self._executed.get(seq)
                if entry is not None:
                    self._send(src, Executed(seq, entry.digest, entry.data, entry.origins))
        if msg.stable_seq < self.stable_seq or msg.stable_seq < self._checkpoint_taken:
            for seq, (digest, _) in sorted(self._own_checkpoints.items()):
                if seq > msg.stable_seq:
                    self._send(src, Checkpoint(seq, digest))
        if msg.view == self.view and not self.changing:
            self._resend_votes(src, msg.executed)

    def _resend_votes(self, peer: NodeId, executed: int) -> None:
        sent = 0
        for seq in sorted(self._slots):
            if seq <= executed or sent >= self.config.max_catch_up_entries:
                continue
            slot = self._slots[seq]
            if slot.view != self.view:
                continue
            sent += 1
            if self.primary_of(slot.view) == self._node_id:
                if slot.digest != NULL_DIGEST:
                    self._send(peer, PrePrepare(slot.view, seq, slot.digest, slot.data, slot.origins))
            else:
                self._send(peer, Prepare(slot.view, seq, slot.digest))
            if (slot.view, seq) in self._sent_commit:
                self._send(peer, Commit(slot.view, seq, slot.digest))

    def _on_executed_claim(self, src: NodeId, msg: Executed) -> None:
        seq = msg.seq
        if seq <= self.last_executed or seq <= self.stable_seq or seq > self.last_executed + self._log_size:
            return
        kind_ok = (msg.digest == NULL_DIGEST and not msg.data and not msg.origins) or (
            request_digest(msg.data, msg.origins) == msg.digest
        )
        if not kind_ok:
            self.counters.drop("bad_digest")
            return
        claims = self._executed_claims.setdefault(seq, {})
        voters, entry = claims.setdefault(
            msg.digest, (set(), PEntry(seq, self.view, msg.digest, msg.data, msg.origins))
        )
        voters.add(src)
        if len(voters) >= self.weak and seq not in self._committed:
            self._committed[seq] = entry

    def _on_state_offer(self, src: NodeId, msg: StateOffer) -> None:
        if msg.seq <= self.last_executed or hashlib.sha256(msg.data).digest() != msg.digest:
            if msg.seq > self.last_executed:
                self.counters.drop("bad_digest")
            return
        certified = self._wanted_state == (msg.seq, msg.digest)
        if not certified:
            voters = self._state_claims.setdefault((msg.seq, msg.digest), set())
            voters.add(src)
            certified = len(voters) >= self.weak
        if not certified:
            return
        self._install_state(msg.seq, msg.digest, msg.data)

    def _install_state(self, seq: int, digest: bytes, data: bytes) -> None:
        """State transfer: the certified image of checkpoint `seq` replaces everything executed before."""
        self._snapshot = Snapshot(seq, self.view, data)
        self._log_replaced = True
        self._stable_image = data
        self._new_entries = [e for e in self._new_entries if e.index > seq]
        self._release = [e for e in self._release if e.index > seq]
        self._replay = {n: e for n, e in self._replay.items() if n > seq}
        self.last_executed = max(self.last_executed, seq)
        self._released = max(self._released, seq)
        self._checkpoint_taken = max(self._checkpoint_taken, seq)
        self._own_checkpoints[seq] = (digest, data)
        self._wanted_state = None
        # The image says nothing of which requests it holds: a forwarded one may be in it, and watching it
        # would make this replica suspect a primary that did nothing wrong and move to the next view alone
        # (seen on the process stack: a restarted backup caught up by state transfer, then stuck in a view
        # change nobody joined). A request that really went missing is retransmitted by its client (to
        # every replica, section 4.1), which arms the timer again.
        self._forwarded = {}
        if seq > self.stable_seq:
            self._set_stable(seq, digest)
            self.prev_stable = (seq, digest)  # nothing is known between: report this one
            self._garbage_collect(seq)
        self._dirty = True
        self._on_executed(seq)

    # -- view changes (section 4.4, 4.5) --------------------------------------------------------------

    def _start_view_change(self, view: int) -> None:
        if view <= self.view:
            return  # one VIEW-CHANGE (and, as its primary, one NEW-VIEW) per view, never a second
        self.view = view
        self.changing = True
        self._vc_started = self.ticks
        self._vc_quorum_at = None
        self._last_vc_sent = self.ticks
        self._timer_started = None
        self._dirty = True
        vc = self._own_view_change(view)
        self._view_changes.setdefault(view, {})[self._node_id] = vc
        self._broadcast(vc)
        for old in [v for v in self._view_changes if v < view]:
            del self._view_changes[old]
        if self.primary_of(view) == self._node_id:
            self._try_new_view()
            return
        pending = self._pending_new_view
        self._pending_new_view = None
        if pending is not None and pending.view == view:
            self._on_new_view(self.primary_of(view), pending)

    def _own_view_change(self, view: int) -> ViewChange:
        h, low_digest = self.prev_stable
        top = h + MAX_VIEW_CHANGE_SPAN * self._log_size  # what receivers accept (`_valid_view_change`)
        prepared: tuple[PEntry, ...] = ()
        if self.config.view_change_keeps_prepared:
            prepared = tuple(e for n, e in sorted(self._prepared.items()) if h < n <= top)
        preprepared = tuple(
            QEntry(n, v, d)
            for n, by_digest in sorted(self._preprepared.items())
            if h < n <= top
            for d, v in sorted(by_digest.items())
        )
        held = {seq: digest for seq, (digest, _) in self._own_checkpoints.items() if h < seq <= top}
        if h < self.stable_seq <= top:
            held[self.stable_seq] = self.stable_digest
        checkpoints = tuple(CheckpointRef(seq, digest) for seq, digest in sorted(held.items()))
        return ViewChange(view, h, low_digest, prepared, preprepared, checkpoints)

    def _valid_view_change(self, vc: ViewChange) -> bool:
        h = vc.stable_seq
        if h % self._k or (h == 0 and vc.stable_digest):
            return False
        top = h + MAX_VIEW_CHANGE_SPAN * self._log_size  # a bound: the low mark reported is an old one
        seen: set[int] = set()
        for entry in vc.prepared:
            if not h < entry.seq <= top or entry.seq in seen or entry.view >= vc.view:
                return False
            seen.add(entry.seq)
            if entry.digest == NULL_DIGEST:
                if entry.data or entry.origins:
                    return False
            elif request_digest(entry.data, entry.origins) != entry.digest:
                return False
        if not all(h < c.seq <= top and c.seq % self._k == 0 for c in vc.checkpoints):
            return False
        return all(h < q.seq <= top and q.view < vc.view for q in vc.preprepared)

    def _on_view_change(self, src: NodeId, msg: ViewChange) -> None:
        if not self._valid_view_change(msg):
            self.counters.drop("invalid")
            return
        if msg.view < self.view or (msg.view == self.view and not self.changing):
            return  # a late one: if its sender is still behind, its status says so (`_help_join`)
        self._view_changes.setdefault(msg.view, {})[src] = msg
        later = {r for v, by in self._view_changes.items() if v > self.view for r in by if r != self._node_id}
        if len(later) >= self.weak:
            target = min(v for v, by in self._view_changes.items() if v > self.view and by)
            self._start_view_change(target)
        if not self.changing or msg.view != self.view:
            return
        if self.primary_of(self.view) == self._node_id:
            self._try_new_view()
        elif self._pending_new_view is not None:
            self._on_new_view(self.primary_of(self.view), self._pending_new_view)

    def _help_join(self, peer: NodeId) -> None:
        """A peer is behind a view change this replica completed: resend our VIEW-CHANGE (the NEW-VIEW
        names it; the peer checks against what it holds itself) and, as the primary, the NEW-VIEW."""
        items: list[object] = []
        own = self._view_changes.get(self.view, {}).get(self._node_id)
        if own is not None:
            items.append(replace(own, mac=b""))
        sent = self._new_view_sent
        if sent is not None and sent.view == self.view and not self.changing:
            items.append(replace(sent, mac=b""))
        if self._bundle is not None:
            self._bundle.extend(items)
        elif items:
            self._send(peer, Bundle(tuple(items)))

    def _try_new_view(self) -> None:
        view = self.view
        vcs = self._view_changes.get(view, {})
        if len(vcs) < self.quorum:
            return
        ordered = [vcs[r] for r in sorted(vcs)]
        decision = viewchange.choose(ordered, view, self.quorum, self.weak)
        if decision is None:
            return
        (h, digest), chosen = decision
        used = tuple(VcRef(r, vc_digest(vcs[r])) for r in sorted(vcs))
        new_view = NewView(view, used, h, digest, chosen)
        self._new_view_sent = new_view
        self._broadcast(new_view)
        self._install_view(view, h, digest, chosen)

    def _on_new_view(self, src: NodeId, msg: NewView) -> None:
        if (
            src != self.primary_of(msg.view)
            or msg.view < self.view
            or (msg.view == self.view and not self.changing)
        ):
            return
        if msg.view > self.view:
            self._pending_new_view = msg  # checked once this replica joins that view
            return
        vcs = self._view_changes.get(msg.view, {})
        held = [
            vcs[ref.replica]
            for ref in msg.used
            if ref.replica in vcs and vc_digest(vcs[ref.replica]) == ref.digest
        ]
        complete = len(held) == len(msg.used)
        if len(held) < self.quorum:
            self._pending_new_view = msg
            return
        why = viewchange.check(
            held,
            msg.view,
            (msg.checkpoint_seq, msg.checkpoint_digest),
            msg.chosen,
            quorum=self.quorum,
            weak=self.weak,
        )
        if why is not None:
            self.last_rejected_new_view = why
            if complete:
                self.counters.drop("bad_new_view")
                if msg.view >= self.view:
                    self._start_view_change(msg.view + 1)
            else:
                self._pending_new_view = msg
            return
        self._install_view(msg.view, msg.checkpoint_seq, msg.checkpoint_digest, msg.chosen)

    def _install_view(self, view: int, h: int, digest: bytes, chosen: Sequence[PEntry]) -> None:
        self.view = view
        self.changing = False
        self._pending_new_view = None
        self._dirty = True
        if h > self.stable_seq:
            self._set_stable(h, digest)
            own = self._own_checkpoints.get(h)
            if own is not None and own[0] == digest:
                self._stable_image = own[1]
                self._snapshot = Snapshot(h, view, own[1])
                self._log_replaced = False
            elif self.last_executed < h:
                self._wanted_state = (h, digest)
            self._garbage_collect(h)
        # Everything of older views is void; the chosen requests are pre-prepared in the new one.
        self._slots = {}
        self._prepares = {key: rs for key, rs in self._prepares.items() if key[0] >= view}
        self._commits = {key: rs for key, rs in self._commits.items() if key[0] >= view}
        top = h
        for entry in chosen:
            top = max(top, entry.seq)
            if entry.seq <= max(h, self.prev_stable[0]):
                continue
            self._accept(entry)
        self.next_seq = top + 1
        self._timer_started = None
        if self.primary_of(view) == self._node_id:
            for data, origins, _ in list(self._forwarded.values()):
                self._assign(data, origins)
            self._forwarded = {}
            self._drain_queue()
        else:
            for data, origins, _ in self._forwarded.values():
                self._send(self.primary_of(view), Forward(data, origins))
            if self._pending_work():
                self._arm_timer()

    # -- durable state ------------------------------------------------------------------------------

    def _hard_state(self) -> PbftHardState:
        accepted = tuple(
            PEntry(n, s.view, s.digest, s.data, s.origins) for n, s in sorted(self._slots.items())
        )
        preprepared = tuple(
            QEntry(n, v, d) for n, by in sorted(self._preprepared.items()) for d, v in sorted(by.items())
        )
        sent = self._new_view_sent
        return PbftHardState(
            self.view,
            self.changing,
            self.stable_seq,
            self.stable_digest,
            self.next_seq,
            accepted,
            tuple(e for _, e in sorted(self._prepared.items())),
            preprepared,
            self._view_changes.get(self.view, {}).get(self._node_id),
            sent if sent is not None and sent.view == self.view else None,
        )

    def _restore(self, durable: DurableState | None) -> None:
        if durable is None:
            return
        snapshot = durable.snapshot
        if snapshot is not None:
            self.last_executed = self._released = self._checkpoint_taken = snapshot.index
            self._stable_image = snapshot.data
            self._own_checkpoints[snapshot.index] = (hashlib.sha256(snapshot.data).digest(), snapshot.data)
        for entry in durable.entries:
            if snapshot is not None and entry.index <= snapshot.index:
                continue
            self._replay[entry.index] = entry
        hard = durable.hard_state
        if isinstance(hard, PbftHardStateV1):
            hard = hard.upgrade()  # saved by an older build: no view-change messages kept
        elif hard is not None and not isinstance(hard, PbftHardState):
            raise LocalError(f"durable hard state is not a PBFT PbftHardState: {type(hard).__name__}")
        if hard is not None:
            self.view = hard.view
            self.changing = hard.changing
            self.stable_seq = hard.stable_seq
            self.stable_digest = hard.stable_digest
            self.next_seq = hard.next_seq
            for accepted in hard.accepted:
                self._slots[accepted.seq] = _Slot(
                    accepted.view, accepted.digest, accepted.data, accepted.origins
                )
            self._prepared = {p.seq: p for p in hard.prepared}
            for q in hard.preprepared:
                self._preprepared.setdefault(q.seq, {})[q.digest] = q.view
            for p in hard.prepared:
                if p.view == self.view:
                    self._sent_commit.add((p.view, p.seq))
            # What it said in this view's change, word for word: a NEW-VIEW names VIEW-CHANGE messages by
            # digest, so one made again from the restored state (whose low water mark may have moved)
            # would not match what the new primary used.
            vc = hard.view_change
            if vc is None or vc.view != self.view:
                vc = self._own_view_change(self.view) if self.changing else None
            if vc is not None:
                self._view_changes.setdefault(self.view, {})[self._node_id] = vc
                if self.changing:
                    self._broadcast(vc)
            new_view = hard.new_view
            if new_view is not None and new_view.view == self.view and not self.changing:
                self._new_view_sent = new_view  # resent to replicas still waiting (`_help_join`)
        if snapshot is not None and snapshot.index < self.stable_seq:
            self._wanted_state = (self.stable_seq, self.stable_digest)
        # Executed entries above the snapshot are executed again (the state machine starts from the
        # snapshot); they are durable already, so they are released without being written again.
        # What they were (digest, origins) is known from the prepared certificates still held.
        self._executed = {}
        for n, e in self._replay.items():
            known = self._prepared.get(n)
            if known is not None and known.data == e.data:
                self._executed[n] = known

    # -- sending ------------------------------------------------------------------------------------

    def _authenticated(self, to: NodeId, msg: object) -> object:
        body = encode_value(msg)
        mac = self.keys.mac(self._node_id, to, body)
        return replace(msg, mac=mac)  # type: ignore[type-var]

    def _send(self, to: NodeId, msg: object) -> None:
        bundle = self._bundle
        if bundle is not None:
            bundle.append(msg)  # authenticated with the bundle
            return
        self._out.append(Outgoing(to, self._authenticated(to, msg)))

    def _broadcast(self, msg: object) -> None:
        for peer in self.peers:
            self._send(peer, msg)

    @staticmethod
    def factory(
        config: PbftConfig | None = None,
        *,
        secret: bytes,
        valid_request: Callable[[bytes, int], bool] | None = None,
    ) -> Callable[[NodeId, Sequence[NodeId], random.Random, DurableState | None], PbftNode]:
        """A core factory (`make_core(node_id, peers, rng, durable)`) whose replicas get their own row of
        pair keys derived from `secret`."""

        def make(
            node_id: NodeId, peers: Sequence[NodeId], rng: random.Random, durable: DurableState | None
        ) -> PbftNode:
            keys = PairKeys.for_node(secret, node_id, (node_id, *peers))
            return PbftNode(
                node_id, peers, rng, durable, keys=keys, config=config, valid_request=valid_request
            )

        return make
