"""The replicated key-value state machine, with client sessions for exactly-once commands.

Every replica applies the same committed commands in the same order, so every replica computes the same
answers. A client numbers its commands `seq = 1, 2, 3, ...` and issues one at a time; a command is
`(client_id, seq, op)`. Retries reuse the same `(client_id, seq)`, so a retried command takes effect once
and returns the first answer (Ongaro's dissertation, section 6.3):

- `seq == last_seq` of the client's session: the cached result is returned, nothing is applied again;
- `seq < last_seq`: rejected with `stale_seq` (the client has moved on; the command never takes effect);
- no session and `seq == 1`: a session opens; no session and `seq > 1`: rejected with
  `session_expired` (the session was evicted, so a retry cannot be told apart from a new command).

Sessions are bounded (`max_sessions`); the least recently used is evicted. Eviction depends only on the
log, so every replica evicts the same session at the same index.

Semantics: a key never written holds nothing (`get` returns None); `append` to it starts from "";
`cas(key, expected, new)` succeeds iff the current value equals `expected` (None: the key is absent).
"""

from __future__ import annotations

from dataclasses import dataclass

from dscore.core.codec import decode_value, encode_value
from dscore.core.errors import DecodeError, LocalError
from dscore.core.registry import message
from dscore.protocols.contract import EntryKind, LogEntry

# The operations and `Command` are plain values, not wire messages: commands travel in the flat
# encoding below, never as registered messages.


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


KvOp = Put | Get | Delete | Cas | Append


@dataclass(frozen=True, slots=True)
class Command:
    client_id: str
    seq: int
    op: Put | Get | Delete | Cas | Append


@message("kv.result")
@dataclass(frozen=True, slots=True)
class KvResult:
    """The answer to one command. `ok` False with `error` set means the command had no effect, except
    `cas_mismatch`, which is a definite answer (the compare failed; `value` holds the current value)."""

    client_id: str
    seq: int
    ok: bool
    value: str | None = None
    error: str | None = None


@message("kv.session")
@dataclass(frozen=True, slots=True)
class Session:
    last_seq: int
    last_result: KvResult
    last_used_index: int


@message("kv.snapshot")
@dataclass(frozen=True, slots=True)
class KvSnapshot:
    applied_index: int
    data: dict[str, str]
    sessions: dict[str, Session]


# -- the command encoding ---------------------------------------------------------------------------
#
# A command is the hottest thing the system decodes: every replica decodes every entry. So it is not a
# registered message (kind tag + nested op message + two objects built per decode) but one flat msgpack
# array, `[client_id, seq, op_code, key, a, b]`, behind `encode_value`'s plain-value byte, checked field
# by field and applied without building any object (about half the cost; `dscore bench raft`).
# `a` and `b` are the op's other fields in declaration order, nil where the op has fewer.

_PUT, _GET, _DELETE, _CAS, _APPEND = 1, 2, 3, 4, 5
_MALFORMED = "malformed"


def encode_command(client_id: str, seq: int, op: KvOp) -> bytes:
    if seq < 1:
        raise LocalError("command seq numbers start at 1")
    fields: tuple[object, ...]
    if isinstance(op, Put):
        fields = (client_id, seq, _PUT, op.key, op.value, None)
    elif isinstance(op, Get):
        fields = (client_id, seq, _GET, op.key, None, None)
    elif isinstance(op, Delete):
        fields = (client_id, seq, _DELETE, op.key, None, None)
    elif isinstance(op, Cas):
        fields = (client_id, seq, _CAS, op.key, op.expected, op.new)
    elif isinstance(op, Append):
        fields = (client_id, seq, _APPEND, op.key, op.suffix, None)
    else:
        raise LocalError(f"not a kv operation: {type(op).__name__}")
    return encode_value(fields)


def _parse_command(data: bytes) -> tuple[str, int, int, str, str | None, str | None] | None:
    """The checked fields of an encoded command, or None if `data` is not one (never raises)."""
    try:
        fields = decode_value(data)
    except DecodeError:
        return None
    if type(fields) is not tuple or len(fields) != 6:
        return None
    client_id, seq, code, key, a, b = fields
    if type(client_id) is not str or type(seq) is not int or seq < 1 or type(key) is not str:
        return None
    if type(code) is not int:
        return None
    if code in (_PUT, _APPEND):
        ok = type(a) is str and b is None
    elif code in (_GET, _DELETE):
        ok = a is None and b is None
    elif code == _CAS:
        ok = (a is None or type(a) is str) and type(b) is str
    else:
        ok = False
    return fields if ok else None


def decode_command(data: bytes) -> Command:
    """An encoded command as a `Command` (for tools and invariants; replicas apply without building it)."""
    fields = _parse_command(data)
    if fields is None:
        raise DecodeError("not a well-formed kv command")
    client_id, seq, code, key, a, b = fields
    op: KvOp
    if code == _PUT:
        op = Put(key, a)  # type: ignore[arg-type]
    elif code == _GET:
        op = Get(key)
    elif code == _DELETE:
        op = Delete(key)
    elif code == _CAS:
        op = Cas(key, a, b)  # type: ignore[arg-type]
    else:
        op = Append(key, a)  # type: ignore[arg-type]
    return Command(client_id, seq, op)


class KvStateMachine:
    DEFAULT_MAX_SESSIONS = 100_000

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if max_sessions < 1:
            raise LocalError("max_sessions must be at least 1")
        self.max_sessions = max_sessions
        self.applied_index = 0
        self._data: dict[str, str] = {}
        # Insertion order is recency order: a used session is moved to the end, the first is evicted.
        self._sessions: dict[str, Session] = {}

    # -- reads (served locally once a ReadIndex or lease allows) ------------------------------------

    def read(self, key: str) -> str | None:
        return self._data.get(key)

    def __len__(self) -> int:
        return len(self._data)

    # -- applying the log ---------------------------------------------------------------------------

    def apply_entry(self, entry: LogEntry) -> KvResult | None:
        """Apply one committed log entry; non-command entries only advance `applied_index`."""
        if entry.kind is EntryKind.NORMAL:
            return self.apply(entry.index, entry.data)
        self._advance(entry.index)
        return None

    def apply(self, index: int, data: bytes) -> KvResult:
        self._advance(index)
        fields = _parse_command(data)
        if fields is None:
            # Deterministic on every replica: the same bytes fail the same way.
            return KvResult("", 0, False, None, _MALFORMED)
        client_id, seq = fields[0], fields[1]
        sessions = self._sessions
        session = sessions.get(client_id)
        if session is None:
            if seq != 1:
                return KvResult(client_id, seq, False, None, "session_expired")
        elif seq == session.last_seq:
            return session.last_result
        elif seq < session.last_seq:
            return KvResult(client_id, seq, False, None, "stale_seq")
        result = self._execute(fields)
        if session is not None:
            del sessions[client_id]  # re-inserted last: insertion order is recency order
        sessions[client_id] = Session(seq, result, index)
        if len(sessions) > self.max_sessions:
            del sessions[next(iter(sessions))]
        return result

    def _advance(self, index: int) -> None:
        if index <= self.applied_index:
            raise LocalError(f"entry {index} applied twice (applied index is {self.applied_index})")
        self.applied_index = index

    def _execute(self, fields: tuple[str, int, int, str, str | None, str | None]) -> KvResult:
        client, seq, code, key, a, b = fields
        data = self._data
        if code == _PUT:
            data[key] = a  # type: ignore[assignment]
            return KvResult(client, seq, True)
        if code == _GET:
            return KvResult(client, seq, True, data.get(key))
        if code == _APPEND:
            data[key] = data.get(key, "") + a  # type: ignore[operator]
            return KvResult(client, seq, True)
        if code == _DELETE:
            data.pop(key, None)
            return KvResult(client, seq, True)
        current = data.get(key)
        if current != a:
            return KvResult(client, seq, False, current, "cas_mismatch")
        data[key] = b  # type: ignore[assignment]
        return KvResult(client, seq, True)

    # -- snapshots ----------------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        return encode_value(KvSnapshot(self.applied_index, dict(self._data), dict(self._sessions)))

    def restore(self, data: bytes) -> None:
        value = decode_value(data)
        if not isinstance(value, KvSnapshot):
            raise DecodeError(f"expected a kv snapshot, got {type(value).__name__}")
        self.applied_index = value.applied_index
        self._data = dict(value.data)
        self._sessions = dict(value.sessions)
