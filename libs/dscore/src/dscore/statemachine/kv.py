"""The replicated key-value state machine, with registered client sessions for exactly-once commands.

Every replica applies the same committed entries in the same order, so every replica computes the same
answers. Sessions follow the Raft dissertation, section 6.3:

- a client opens a session with a REGISTER command, committed through the log; the log index it was
  committed at becomes the client's id (so ids are never reused and need no coordination);
- every write carries `(client_id, seq)`, `seq = 1, 2, 3, ...`, one command at a time; gaps are allowed (a
  client that gave up on a command moves on to the next number);
- `seq == last_seq` of the session, same operation: the first answer is returned, nothing is applied again
  (a retried or redelivered command takes effect once); the same `seq` with a *different* operation is a
  client bug, answered `BAD_REQUEST`, never with the cached answer of another command;
- `seq < last_seq`: `BAD_REQUEST` (stale: the client has moved on; this copy never takes effect);
- an unknown `client_id` (never registered, or evicted) is always `SESSION_EXPIRED`, whatever its `seq`:
  an evicted client's retried first command can never run twice.

Sessions are bounded (`max_sessions`): registering one more evicts the least recently used. "Recently" is
counted in replicated state: every command applied bumps `commands_applied`, and a session remembers the
count of its last use (`Session.last_used`), which snapshots carry; the table is kept in that order, and a
restored table is re-sorted by it, so every replica, restored or not, evicts the same session.

Reads (`GET`) need no session: a linearizable read is served by the leader's read path (ReadIndex or
lease) from `read()`; a `GET` ordered through the log (protocols without a read path) is a command with
`client_id = 0`, applied without a session (a read has no effect, so running it twice is harmless).

Semantics: a key never written holds nothing (`GET` returns None); `APPEND` to it starts from "";
`CAS(key, expected, new)` succeeds iff the current value equals `expected` (None: the key is absent).

Entry format. A NORMAL log entry holds a *batch*: one msgpack array of commands, each a flat array
`[client_id, seq, op, key, a, b]` (`a`, `b`: the op's other fields in declaration order, nil where it has
fewer). A leader groups many clients' commands into one entry (`encode_batch` concatenates encoded commands
behind one array header, without re-encoding them), so the per-entry costs of consensus are shared. A
REGISTER must be alone in its entry, since its id is the entry's index. Commands are checked field by field
and applied without building objects: every replica decodes every entry, so this is the hottest decode in
the system.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol

import msgpack

from dscore.core.client_messages import ClientRequest, Op, Outcome
from dscore.core.codec import decode_value, encode_value
from dscore.core.errors import DecodeError, LocalError
from dscore.core.registry import message
from dscore.protocols.contract import EntryKind, LogEntry

# -- operations (plain values: commands travel in the flat encoding below) ---------------------------


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Get:
    key: str


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Cas:
    key: str
    expected: str | None
    new: str


@dataclass(frozen=True, slots=True)
class Append:
    key: str
    suffix: str


@dataclass(frozen=True, slots=True)
class Register:
    pass


KvOp = Put | Get | Delete | Cas | Append | Register


@dataclass(frozen=True, slots=True)
class Command:
    client_id: int
    seq: int
    op: KvOp


@message("kv.result")
@dataclass(frozen=True, slots=True)
class KvResult:
    """The answer to one command (see `dscore.core.client_messages.Outcome` for what each outcome means)."""

    outcome: Outcome
    #: GET: the value read; CAS_MISMATCH: the current value
    value: str | None = None
    #: why, for anything but OK
    error: str | None = None
    #: REGISTER: the new session's id
    client_id: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@message("kv.session")
@dataclass(slots=True)
class Session:
    """One client's session. Mutable on purpose: applying a command updates it in place (every replica
    applies every command, so this is the hottest object of the state machine)."""

    last_seq: int
    #: the last command's fields `(client_id, seq, op, key, a, b)`, to tell a retry from a reused seq
    last_command: object
    last_result: KvResult
    #: `commands_applied` when the session was last used (the eviction order)
    last_used: int


@message("kv.snapshot")
@dataclass(frozen=True, slots=True)
class KvSnapshot:
    applied_index: int
    commands_applied: int
    data: dict[str, str]
    sessions: dict[int, Session]


class StateMachine(Protocol):
    """What the executor needs from a replicated state machine (kv here; tests plug in broken ones)."""

    @property
    def applied_index(self) -> int: ...

    def command_for(self, request: ClientRequest) -> tuple[object, ...]:
        """The command for a client request (a write, a REGISTER or a GET through the log), as the fields
        `encode_entry` packs; raises `BadCommandError` with a message for a request that cannot be one."""
        ...

    def encode_entry(self, commands: Sequence[tuple[object, ...]]) -> bytes:
        """A log entry's data holding these commands, in order."""
        ...

    def apply_entry(self, entry: LogEntry) -> Sequence[KvResult]:
        """Apply one committed entry; one result per command it holds (none for NOOP and CONFIG)."""
        ...

    def read(self, key: str) -> str | None: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class BadCommandError(LocalError):
    """A client request that cannot become a command (wrong fields for its op)."""


# -- the command encoding ---------------------------------------------------------------------------

_PUT, _GET, _DELETE, _CAS, _APPEND, _REGISTER = (
    int(Op.PUT),
    int(Op.GET),
    int(Op.DELETE),
    int(Op.CAS),
    int(Op.APPEND),
    int(Op.REGISTER),
)
_OK = KvResult(Outcome.OK)
_packer = msgpack.Packer(use_bin_type=True, autoreset=True)


def _pack(fields: tuple[object, ...]) -> bytes:
    data: bytes = _packer.pack(fields)
    return data


def encode_command(client_id: int, seq: int, op: KvOp) -> bytes:
    """One command, as its flat msgpack array (put it in an entry with `encode_batch`)."""
    if isinstance(op, Register):
        return _pack((0, 0, _REGISTER, "", None, None))
    if isinstance(op, Get):
        return _pack((client_id, seq, _GET, op.key, None, None))
    if client_id < 1 or seq < 1:
        raise LocalError("a write needs a registered client id and a seq >= 1")
    if isinstance(op, Put):
        return _pack((client_id, seq, _PUT, op.key, op.value, None))
    if isinstance(op, Delete):
        return _pack((client_id, seq, _DELETE, op.key, None, None))
    if isinstance(op, Cas):
        return _pack((client_id, seq, _CAS, op.key, op.expected, op.new))
    if isinstance(op, Append):
        return _pack((client_id, seq, _APPEND, op.key, op.suffix, None))
    raise LocalError(f"not a kv operation: {type(op).__name__}")


_FIXARRAY = 0x90
_ARRAY16 = struct.Struct(">BH")
_ARRAY32 = struct.Struct(">BI")


def encode_batch(commands: Sequence[bytes]) -> bytes:
    """An entry's data: encoded commands behind one msgpack array header (no re-encoding)."""
    count = len(commands)
    if count < 16:
        header = bytes((_FIXARRAY | count,))
    elif count < 0x10000:
        header = _ARRAY16.pack(0xDC, count)
    else:
        header = _ARRAY32.pack(0xDD, count)
    return header + b"".join(commands)


def _unpack_batch(data: bytes) -> tuple[Any, ...] | None:
    try:
        batch = msgpack.unpackb(data, use_list=False, raw=False, strict_map_key=True)
    except Exception:  # msgpack raises many types on garbage; a bad entry is a deterministic error
        return None
    return batch if type(batch) is tuple else None


def _well_formed(fields: object) -> bool:
    """Whether `fields` is a command `[client_id, seq, op, key, a, b]` with the right types for its op."""
    if type(fields) is not tuple or len(fields) != 6:
        return False
    client_id, seq, code, key, a, b = fields
    if type(client_id) is not int or type(seq) is not int or type(code) is not int or type(key) is not str:
        return False
    if code == _GET:
        return client_id >= 0 and a is None and b is None
    if client_id < 1 or seq < 1:
        return code == _REGISTER and client_id == 0 and seq == 0 and not key and a is None and b is None
    if code in (_PUT, _APPEND):
        return type(a) is str and b is None
    if code == _DELETE:
        return a is None and b is None
    if code == _CAS:
        return (a is None or type(a) is str) and type(b) is str
    return False


def decode_batch(data: bytes) -> tuple[Command, ...]:
    """An entry's commands as `Command`s (for tools and invariants; replicas apply without building
    them). Raises `DecodeError` if any command is malformed."""
    batch = _unpack_batch(data)
    if batch is None:
        raise DecodeError("not a well-formed kv batch")
    commands = []
    for fields in batch:
        if not _well_formed(fields):
            raise DecodeError(f"not a well-formed kv command: {fields!r}")
        client_id, seq, code, key, a, b = fields
        op: KvOp
        if code == _PUT:
            op = Put(key, a)
        elif code == _GET:
            op = Get(key)
        elif code == _DELETE:
            op = Delete(key)
        elif code == _CAS:
            op = Cas(key, a, b)
        elif code == _APPEND:
            op = Append(key, a)
        else:
            op = Register()
        commands.append(Command(client_id, seq, op))
    return tuple(commands)


def command_fields(request: ClientRequest) -> tuple[object, ...]:
    """The command a client request asks for, as its fields `(client_id, seq, op, key, a, b)` (a leader
    packs a whole entry's commands at once: `encode_entry`); `BadCommandError` if the request's fields do
    not fit its op."""
    op = request.op
    if op is Op.PUT or op is Op.APPEND:  # the common case first
        if request.client_id < 1 or request.seq < 1 or request.value is None:
            _refuse(request)
        return (
            request.client_id,
            request.seq,
            _PUT if op is Op.PUT else _APPEND,
            request.key,
            request.value,
            None,
        )
    if op is Op.GET:
        return (0, 0, _GET, request.key, None, None)
    if op is Op.REGISTER:
        return (0, 0, _REGISTER, "", None, None)
    if request.client_id < 1 or request.seq < 1:
        _refuse(request)
    if op is Op.DELETE:
        return (request.client_id, request.seq, _DELETE, request.key, None, None)
    if request.value is None:
        raise BadCommandError("CAS needs a new value")
    return (request.client_id, request.seq, _CAS, request.key, request.expected, request.value)


def _refuse(request: ClientRequest) -> NoReturn:
    name = request.op.name
    if request.client_id < 1:
        raise BadCommandError(f"{name} needs a session: register first (client_id was {request.client_id})")
    if request.seq < 1:
        raise BadCommandError(f"{name} needs seq >= 1 (got {request.seq})")
    raise BadCommandError(f"{name} needs a value")


def command_for(request: ClientRequest) -> bytes:
    """The encoded command a client request asks for (see `command_fields`)."""
    return _pack(command_fields(request))


def encode_entry(commands: Sequence[tuple[object, ...]]) -> bytes:
    """An entry's data from commands' fields, in one pass (the same bytes as `encode_batch` of each
    command encoded alone)."""
    data: bytes = _packer.pack(commands)
    return data


# -- the state machine ------------------------------------------------------------------------------


def _session_copy(session: Session) -> Session:
    # Sessions are updated in place; a snapshot or a restored table holds its own copies. A decoded
    # command arrives as a tuple whatever the encoding kept, so retries compare equal after a restore.
    command = session.last_command
    if isinstance(command, list):
        command = tuple(command)
    return Session(session.last_seq, command, session.last_result, session.last_used)


_MALFORMED = KvResult(Outcome.BAD_REQUEST, error="malformed command")
_REGISTER_NOT_ALONE = KvResult(Outcome.BAD_REQUEST, error="REGISTER must be alone in its entry")
_EXPIRED = KvResult(Outcome.SESSION_EXPIRED, error="unknown session (evicted or never registered)")
_STALE = KvResult(Outcome.BAD_REQUEST, error="stale seq: the session has moved past it")
_REUSED = KvResult(Outcome.BAD_REQUEST, error="seq reused for a different command")


class KvStateMachine:
    DEFAULT_MAX_SESSIONS = 100_000

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if max_sessions < 1:
            raise LocalError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self.applied_index = 0
        #: commands applied so far (replicated state: the clock of session recency)
        self.commands_applied = 0
        self._data: dict[str, str] = {}
        # Kept in `last_used` order: a used session moves to the end, the first is the one to evict.
        self._sessions: dict[int, Session] = {}

    # -- reads (served locally once a ReadIndex or lease allows) ------------------------------------

    def read(self, key: str) -> str | None:
        return self._data.get(key)

    def __len__(self) -> int:
        return len(self._data)

    @property
    def session_ids(self) -> tuple[int, ...]:
        """Live sessions, least recently used first."""
        return tuple(self._sessions)

    def command_for(self, request: ClientRequest) -> tuple[object, ...]:
        return command_fields(request)

    def encode_entry(self, commands: Sequence[tuple[object, ...]]) -> bytes:
        return encode_entry(commands)

    # -- applying the log ---------------------------------------------------------------------------

    def apply_entry(self, entry: LogEntry) -> Sequence[KvResult]:
        """Apply one committed entry; one result per command, in the entry's order."""
        index = entry.index
        if index <= self.applied_index:
            raise LocalError(f"entry {index} applied twice (applied index is {self.applied_index})")
        self.applied_index = index
        if entry.kind is not EntryKind.NORMAL:
            return ()
        batch = _unpack_batch(entry.data)
        if batch is None:
            # Deterministic on every replica: the same bytes fail the same way.
            return (_MALFORMED,)
        if len(batch) == 1:
            return (self._apply_one(batch[0], index, alone=True),)
        return self._apply_many(batch, index)

    def _apply_many(self, batch: tuple[Any, ...], index: int) -> list[KvResult]:
        # The hot loop of every replica. A well-formed PUT or APPEND with the next seq of a live session
        # (nearly every command under load) is applied inline, with exactly `_apply_one`'s semantics;
        # anything else takes `_apply_one`.
        sessions = self._sessions
        data = self._data
        results: list[KvResult] = []
        append = results.append
        for fields in batch:
            if type(fields) is tuple and len(fields) == 6:
                client_id, seq, code, key, a, b = fields
                if (
                    code in (_PUT, _APPEND)
                    and type(client_id) is int
                    and type(seq) is int
                    and type(key) is str
                    and type(a) is str
                    and b is None
                    and client_id > 0
                ):
                    session = sessions.get(client_id)
                    if session is not None and seq > session.last_seq:
                        self.commands_applied += 1
                        data[key] = a if code == _PUT else data.get(key, "") + a
                        session.last_seq = seq
                        session.last_command = fields
                        session.last_result = _OK
                        session.last_used = self.commands_applied
                        del sessions[client_id]
                        sessions[client_id] = session
                        append(_OK)
                        continue
            append(self._apply_one(fields, index, alone=False))
        return results

    def apply(self, index: int, commands: Iterable[bytes]) -> Sequence[KvResult]:
        """Apply encoded commands as one NORMAL entry at `index` (tests and tools)."""
        return self.apply_entry(LogEntry(index, 0, EntryKind.NORMAL, encode_batch(list(commands))))

    def _apply_one(self, fields: Any, index: int, alone: bool) -> KvResult:
        if not _well_formed(fields):
            return _MALFORMED
        client_id, seq, code, key, a, b = fields
        self.commands_applied += 1
        if code == _GET and client_id == 0:
            return KvResult(Outcome.OK, self._data.get(key))
        if code == _REGISTER:
            return self._register(index) if alone else _REGISTER_NOT_ALONE
        sessions = self._sessions
        session = sessions.get(client_id)
        if session is None:
            return _EXPIRED
        last_seq = session.last_seq
        if seq > last_seq:
            result = self._execute(code, key, a, b)
            session.last_seq = seq
            session.last_command = fields
            session.last_result = result
        elif seq == last_seq:
            if fields != session.last_command:
                return _REUSED
            result = session.last_result
        else:
            return _STALE
        session.last_used = self.commands_applied
        del sessions[client_id]  # re-inserted last: the table stays in `last_used` order
        sessions[client_id] = session
        return result

    def _register(self, index: int) -> KvResult:
        sessions = self._sessions
        while len(sessions) >= self.max_sessions:
            del sessions[next(iter(sessions))]  # the least recently used
        sessions[index] = Session(0, None, _OK, self.commands_applied)
        return KvResult(Outcome.OK, client_id=index)

    def _execute(self, code: int, key: str, a: str | None, b: str | None) -> KvResult:
        data = self._data
        if code == _PUT:
            data[key] = a  # type: ignore[assignment]
            return _OK
        if code == _GET:
            return KvResult(Outcome.OK, data.get(key))
        if code == _APPEND:
            data[key] = data.get(key, "") + a  # type: ignore[operator]
            return _OK
        if code == _DELETE:
            data.pop(key, None)
            return _OK
        current = data.get(key)
        if current != a:
            return KvResult(Outcome.CAS_MISMATCH, current, "compare failed")
        data[key] = b  # type: ignore[assignment]
        return _OK

    # -- snapshots ----------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        sessions = {client: _session_copy(session) for client, session in self._sessions.items()}
        return encode_value(KvSnapshot(self.applied_index, self.commands_applied, dict(self._data), sessions))

    def restore(self, data: bytes) -> None:
        value = decode_value(data)
        if not isinstance(value, KvSnapshot):
            raise DecodeError(f"expected a kv snapshot, got {type(value).__name__}")
        self.applied_index = value.applied_index
        self.commands_applied = value.commands_applied
        self._data = dict(value.data)
        # The eviction order is the replicated `last_used`, not whatever order the encoding kept.
        ordered = sorted(value.sessions.items(), key=lambda item: item[1].last_used)
        self._sessions = {client: _session_copy(session) for client, session in ordered}
