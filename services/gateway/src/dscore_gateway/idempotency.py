"""Idempotency-Key (IETF httpapi draft "The Idempotency-Key HTTP Header Field"): a retried HTTP write
with the same key takes effect once. No I/O; the caller passes the time.

The header's value is a Structured Field string (`Idempotency-Key: "8e03978e-..."`); a bare token is
accepted too. One table per gateway maps each key to the request it was first used for (a fingerprint
of method, key and body) and to where that request stands:

- **in progress**: a retry while the first is still running is answered 409 `idempotency_key_in_use`
  (the draft's rule) with Retry-After;
- **done**: the first request got a definite answer (2xx, 404, 409 compare failed, 400 from the
  cluster): a retry gets that answer again, marked `Idempotent-Replayed: true`, without touching the
  cluster;
- **unknown**: the first request ended 504 (outcome unknown); the session that carried it stays pinned
  to the key (`dscore_gateway.sessions`), so a retry re-sends the same `(client_id, seq)`: the state
  machine applies it at most once and answers with the first result, which then settles the key;
- a key reused for a *different* request is refused 422 `idempotency_key_reused` (the draft's rule).

A request that certainly did nothing (503: no leader, overloaded, gateway busy) is not remembered: its
retry runs afresh. Requests refused before they reach the cluster (400, 413, 415, 422) never enter the
table. Reads (GET) need no key and ignore it: they have no effect.

Bounds: an entry is kept `ttl_s` after its request finished; at most `max_keys` entries, the oldest
finished ones forgotten first when full (counted in `evictions`); an entry in progress is never evicted
(in-flight requests are bounded well below `max_keys`).

What a gateway restart (or another gateway) means: the table lives in this process's memory. After a
restart, or when a retry reaches a different gateway, the key is unknown there and the request runs as
new: a PUT, DELETE or CAS retried that way is harmless or refused by its own compare, but an APPEND whose
first copy was applied is applied again. Clients that need once-only appends across gateway restarts
should send retries to the same gateway (session affinity) and, after a 504 from a gateway that is gone,
read the key before appending again.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

#: what the table keeps of a finished request, to answer its retries (the gateway keeps its `Answer`,
#: which renders to the same HTTP response every time)
R = TypeVar("R")

#: longest Idempotency-Key accepted (the draft leaves it to the server; UUIDs are 36 characters)
MAX_KEY_LENGTH = 255
_KEY_CHARS = re.compile(r"^[\x21-\x7e]+$")


class IdempotencyKeyError(ValueError):
    """The header's value cannot be a key (400, with this message)."""


def parse_key(header: str) -> str:
    """The key in an `Idempotency-Key` header: an sf-string (`"..."`, with `\\"` and `\\\\` escapes) or
    a bare token of printable ASCII; `IdempotencyKeyError` says what is wrong otherwise."""
    value = header.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        out = []
        escaped = False
        for char in inner:
            if escaped:
                if char not in '"\\':
                    raise IdempotencyKeyError(f"Idempotency-Key: bad escape '\\{char}' in the quoted string")
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                raise IdempotencyKeyError("Idempotency-Key: an unescaped '\"' inside the quoted string")
            else:
                out.append(char)
        if escaped:
            raise IdempotencyKeyError("Idempotency-Key: the quoted string ends with a lone '\\'")
        value = "".join(out)
    if not value:
        raise IdempotencyKeyError("Idempotency-Key must not be empty")
    if len(value) > MAX_KEY_LENGTH:
        raise IdempotencyKeyError(
            f"Idempotency-Key is {len(value)} characters long; at most {MAX_KEY_LENGTH}"
        )
    if not _KEY_CHARS.match(value.replace(" ", "!")):
        raise IdempotencyKeyError("Idempotency-Key must be printable ASCII (e.g. a UUID)")
    return value


def fingerprint(method: str, key: str, body: bytes) -> bytes:
    """What makes two requests "the same request" for a key: method, kv key and the body's bytes."""
    digest = hashlib.sha256()
    for part in (method.encode(), key.encode("utf-8", "surrogatepass"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


class EntryState(enum.Enum):
    IN_PROGRESS = "in_progress"
    DONE = "done"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class _Entry(Generic[R]):
    fingerprint: bytes
    state: EntryState
    response: R | None = None
    #: when a finished entry is forgotten (None while in progress)
    expires_at: float | None = None


class Verdict(enum.Enum):
    """What to do with a request that carries a key (`IdempotencyTable.begin`)."""

    #: first use of the key (or its last use did nothing): run it
    NEW = "new"
    #: its earlier copy's outcome is unknown: run it again with the session pinned to the key
    RESUME = "resume"
    #: answer with the stored response
    REPLAY = "replay"
    #: the first copy is still running: 409
    IN_PROGRESS = "in_progress"
    #: the key was used for another request: 422
    MISMATCH = "mismatch"


@dataclass(frozen=True, slots=True)
class Begin(Generic[R]):
    verdict: Verdict
    #: REPLAY: the answer to give again
    response: R | None = None


class IdempotencyTable(Generic[R]):
    """Key -> the request it belongs to and its state (see the module doc)."""

    def __init__(self, max_keys: int, ttl_s: float) -> None:
        if max_keys < 1 or ttl_s <= 0:
            raise ValueError("max_keys must be >= 1 and ttl_s > 0")
        self.max_keys = max_keys
        self.ttl_s = ttl_s
        #: in the order entries were last started (the oldest first)
        self._entries: OrderedDict[str, _Entry[R]] = OrderedDict()
        self.evictions = 0
        self._dropped_unknown: list[str] = []

    def __len__(self) -> int:
        return len(self._entries)

    def begin(self, key: str, print_: bytes, now: float) -> Begin[R]:
        """Look `key` up for a request with fingerprint `print_`; a NEW or RESUME verdict marks the key in
        progress (settle it with `finish`, `unknown` or `forget`)."""
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= now:
            self._drop(key)
            entry = None
        if entry is None:
            self._make_room(now)
            self._entries[key] = _Entry(print_, EntryState.IN_PROGRESS)
            return Begin(Verdict.NEW)
        if entry.fingerprint != print_:
            return Begin(Verdict.MISMATCH)
        if entry.state is EntryState.IN_PROGRESS:
            return Begin(Verdict.IN_PROGRESS)
        if entry.state is EntryState.DONE:
            return Begin(Verdict.REPLAY, entry.response)
        entry.state = EntryState.IN_PROGRESS
        entry.expires_at = None
        self._entries.move_to_end(key)
        return Begin(Verdict.RESUME)

    def finish(self, key: str, response: R, now: float) -> None:
        """The request under `key` got a definite answer: replay it to retries for `ttl_s`."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.state = EntryState.DONE
            entry.response = response
            entry.expires_at = now + self.ttl_s

    def unknown(self, key: str, response: R, now: float) -> None:
        """The request under `key` ended with an unknown outcome (`response` is its 504): a retry resumes
        it."""
        entry = self._entries.get(key)
        if entry is not None:
            entry.state = EntryState.UNKNOWN
            entry.response = response
            entry.expires_at = now + self.ttl_s

    def forget(self, key: str) -> None:
        """The request under `key` certainly did nothing: its retry runs as new."""
        self._entries.pop(key, None)

    def expire(self, now: float) -> None:
        """Drop the entries past their time, from the oldest, up to the first one still kept (entries are
        in start order, which is close to their expiry order; in-progress ones, a bounded few, are
        skipped), so a call costs about what it drops."""
        gone = []
        for key, entry in self._entries.items():
            if entry.expires_at is None:
                continue
            if entry.expires_at > now:
                break
            gone.append(key)
        for key in gone:
            self._drop(key)

    def take_dropped_unknown(self) -> list[str]:
        """Keys of unknown outcome dropped (expired or evicted) since the last call: the caller lets their
        pinned sessions go."""
        dropped, self._dropped_unknown = self._dropped_unknown, []
        return dropped

    def _drop(self, key: str) -> None:
        if self._entries.pop(key).state is EntryState.UNKNOWN:
            self._dropped_unknown.append(key)

    def _make_room(self, now: float) -> None:
        if len(self._entries) < self.max_keys:
            return
        self.expire(now)
        if len(self._entries) < self.max_keys:
            return
        for key, entry in self._entries.items():  # the oldest finished entry
            if entry.state is not EntryState.IN_PROGRESS:
                self._drop(key)
                self.evictions += 1
                return
