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


@message("kv.put")
@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: str


@message("kv.get")
@dataclass(frozen=True, slots=True)
class Get:
    key: str


@message("kv.delete")
@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@message("kv.cas")
@dataclass(frozen=True, slots=True)
class Cas:
    key: str
    expected: str | None
    new: str


@message("kv.append")
@dataclass(frozen=True, slots=True)
class Append:
    key: str
    suffix: str


KvOp = Put | Get | Delete | Cas | Append


@message("kv.command")
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


def encode_command(client_id: str, seq: int, op: KvOp) -> bytes:
    if seq < 1:
        raise LocalError("command seq numbers start at 1")
    return encode_value(Command(client_id, seq, op))


def decode_command(data: bytes) -> Command:
    value = decode_value(data)
    if not isinstance(value, Command):
        raise DecodeError(f"expected a kv command, got {type(value).__name__}")
    return value


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
        try:
            command = decode_command(data)
        except DecodeError:
            # Deterministic on every replica: the same bytes fail the same way.
            return KvResult("", 0, ok=False, error="malformed")
        session = self._sessions.get(command.client_id)
        if session is None:
            if command.seq != 1:
                return KvResult(command.client_id, command.seq, ok=False, error="session_expired")
        elif command.seq == session.last_seq:
            return session.last_result
        elif command.seq < session.last_seq:
            return KvResult(command.client_id, command.seq, ok=False, error="stale_seq")
        result = self._execute(command)
        self._sessions.pop(command.client_id, None)
        self._sessions[command.client_id] = Session(command.seq, result, index)
        if len(self._sessions) > self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        return result

    def _advance(self, index: int) -> None:
        if index <= self.applied_index:
            raise LocalError(f"entry {index} applied twice (applied index is {self.applied_index})")
        self.applied_index = index

    def _execute(self, command: Command) -> KvResult:
        op = command.op
        client, seq = command.client_id, command.seq
        data = self._data
        if isinstance(op, Get):
            return KvResult(client, seq, ok=True, value=data.get(op.key))
        if isinstance(op, Put):
            data[op.key] = op.value
            return KvResult(client, seq, ok=True)
        if isinstance(op, Append):
            data[op.key] = data.get(op.key, "") + op.suffix
            return KvResult(client, seq, ok=True)
        if isinstance(op, Delete):
            data.pop(op.key, None)
            return KvResult(client, seq, ok=True)
        current = data.get(op.key)
        if current != op.expected:
            return KvResult(client, seq, ok=False, value=current, error="cas_mismatch")
        data[op.key] = op.new
        return KvResult(client, seq, ok=True)

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
