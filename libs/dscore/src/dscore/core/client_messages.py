"""The client protocol: what a client sends a replica, what it gets back, and what can happen to a request.

Every client speaks these messages over a `Transport`, through the same codec as replicas: `KvClient` (the
embedded cluster and the demo), the simulator's clients and, on the real stack, the HTTP gateway. A client
finds and follows the leader from the responses alone (`Outcome.NOT_LEADER` with a `leader_hint`).

A request travels inside a `ClientRequests` batch and its answer inside a `ClientResponses` batch, so one
envelope (one MAC, one checksum, one transport record) can carry many operations of a multiplexing client;
a simple client sends batches of one.

Sessions (Raft dissertation, section 6.3). A client first sends `Op.REGISTER`; the registration is committed
through the log and the response's `client_id` is the log index it was committed at. Every write then
carries `(client_id, seq)` with `seq = 1, 2, 3, ...`, one command at a time; a retry reuses its `seq`, so a
retried or redelivered command takes effect once and is answered with the first result.

`Outcome` is the one definition of what can happen to a request. What each outcome says about the
request's *effect*:

| outcome | effect of this request |
| --- | --- |
| `OK` | took effect once (a write), or is the answer (a read, a registration) |
| `CAS_MISMATCH` | a definite answer: the compare failed, nothing was written; `value` is the current value |
| `NOT_LEADER` | none: not served here (`leader_hint` names who might serve it, if known) |
| `OVERLOADED` | none: refused, not queued (a bound was reached); retry later |
| `BAD_REQUEST` | none: malformed, or a `(client_id, seq)` reused for a different operation (`error` says) |
| `SESSION_EXPIRED` | none now (but see below) |
| `UNKNOWN` | may or may not take effect (leadership lost while pending, timed out, read again on restart) |

`SESSION_EXPIRED`: the session is unknown (evicted, or never registered). This copy did nothing, but if
the same `seq` was sent before, an earlier copy may have taken effect before the eviction: the client must
then treat the operation as unknown. Either way it registers again.

The HTTP gateway maps each outcome to one status code; the history recorders map them to Jepsen's
`ok` / `fail` / `info`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dscore.core.registry import message


class Op(enum.IntEnum):
    """What a request asks for. The codes of the writes are also the kv command's op codes."""

    PUT = 1
    GET = 2
    DELETE = 3
    CAS = 4
    APPEND = 5
    #: open a session; the response carries the new `client_id`
    REGISTER = 6


#: operations that change the store (they need a session)
WRITE_OPS = frozenset({Op.PUT, Op.DELETE, Op.CAS, Op.APPEND})


class ReadMode(enum.IntEnum):
    """How a `GET` is served."""

    #: linearizable: by the leader, after its read path (ReadIndex or lease, as the cluster is set up)
    #: confirmed leadership, or through the log where a protocol has no read path
    LINEARIZABLE = 0
    #: whatever the answering replica has applied, leader or not: fast, possibly stale
    STALE = 1


class Outcome(enum.IntEnum):
    """What happened to one request; see the module docstring for the effect of each."""

    OK = 0
    NOT_LEADER = 1
    OVERLOADED = 2
    UNKNOWN = 3
    SESSION_EXPIRED = 4
    CAS_MISMATCH = 5
    BAD_REQUEST = 6

    @property
    def certainly_no_effect(self) -> bool:
        """True when this request certainly changed nothing (whatever earlier copies did)."""
        return self in _NO_EFFECT


_NO_EFFECT = frozenset(
    {
        Outcome.NOT_LEADER,
        Outcome.OVERLOADED,
        Outcome.BAD_REQUEST,
        Outcome.CAS_MISMATCH,
        Outcome.SESSION_EXPIRED,
    }
)


@message("client.request")
@dataclass(frozen=True, slots=True)
class ClientRequest:
    """One operation. `request_id` is chosen by the client, unique per client endpoint, and echoed back."""

    request_id: int
    op: Op
    key: str = ""
    #: PUT and APPEND: the value; CAS: the new value
    value: str | None = None
    #: CAS: the value expected (None: the key must be absent)
    expected: str | None = None
    #: the session (0 for REGISTER and for reads, which need none)
    client_id: int = 0
    #: the session's command number, from 1; every retry of one command reuses it
    seq: int = 0
    read_mode: ReadMode = ReadMode.LINEARIZABLE


@message("client.requests")
@dataclass(frozen=True, slots=True)
class ClientRequests:
    requests: tuple[ClientRequest, ...]


@message("client.response")
@dataclass(frozen=True, slots=True)
class ClientResponse:
    request_id: int
    outcome: Outcome
    #: GET: the value read; CAS_MISMATCH: the current value
    value: str | None = None
    #: NOT_LEADER: who this replica believes leads, if anyone
    leader_hint: str | None = None
    #: REGISTER: the new session's id
    client_id: int = 0
    #: a short explanation for anything but OK (for logs and HTTP error bodies)
    error: str | None = None


@message("client.responses")
@dataclass(frozen=True, slots=True)
class ClientResponses:
    responses: tuple[ClientResponse, ...]
