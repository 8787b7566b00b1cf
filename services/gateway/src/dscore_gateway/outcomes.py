"""The one table from a request's `Outcome` (`dscore.core.client_messages`) to its HTTP status.

What the gateway answers is decided here and nowhere else; the README's status table is this table.
`Outcome` says what happened to the request's *effect*; the status says the same to an HTTP client:

| outcome | HTTP | what the client learns |
| --- | --- | --- |
| `OK` | 200 (GET, a value), 404 (GET, no value), 204 (a write) | it took effect once / the answer |
| `CAS_MISMATCH` | 409, with the current value | nothing written: the compare failed |
| `NOT_LEADER` | 503 + Retry-After | nothing happened: no leader answered (an election, no quorum) |
| `OVERLOADED` | 503 + Retry-After | nothing happened: the leader refused it (a bound was reached) |
| `BAD_REQUEST` | 400 | nothing happened: the cluster refused the request as malformed |
| `UNKNOWN` | 504 | it may or may not have taken effect (see below) |
| `SESSION_EXPIRED` | 504 | only if an earlier copy may have taken effect (else registered again, retried) |

`NOT_LEADER` is retried inside the gateway (following `leader_hint`, then every node in turn) until
`request_timeout_s`; only then is it answered 503. `SESSION_EXPIRED` never reaches a client as such: the
gateway registers a new session and retries, and only a write whose earlier attempt may have been applied
before the session was evicted ends as 504 (that effect can no longer be looked up).

504 "outcome unknown" means: a copy of the write reached a node (or may have: an attempt got no answer),
and the gateway could not learn whether it was applied before giving up (the leader was lost while the
write was pending, or no node answered in time). The write may have been applied, or may never be.
Retrying with the same `Idempotency-Key` makes it take effect at most once and returns its real outcome
once the cluster answers; retrying without one may apply it twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from dscore.core.client_messages import Outcome


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """How one outcome is answered over HTTP."""

    #: the status of a write (and of a GET that is not `OK`)
    status: int
    #: the `error` code of the JSON body and the `outcome` label of the metrics ("ok" for success)
    code: str
    #: send Retry-After (the request certainly did nothing; trying again later may succeed)
    retry_after: bool = False


OUTCOME_HTTP: Mapping[Outcome, HttpAnswer] = MappingProxyType(
    {
        Outcome.OK: HttpAnswer(204, "ok"),
        Outcome.CAS_MISMATCH: HttpAnswer(409, "cas_mismatch"),
        Outcome.NOT_LEADER: HttpAnswer(503, "no_leader", retry_after=True),
        Outcome.OVERLOADED: HttpAnswer(503, "overloaded", retry_after=True),
        Outcome.BAD_REQUEST: HttpAnswer(400, "rejected_by_cluster"),
        Outcome.UNKNOWN: HttpAnswer(504, "outcome_unknown"),
        Outcome.SESSION_EXPIRED: HttpAnswer(504, "outcome_unknown"),
    }
)

#: a GET answered OK: 200 with the value, or 404 when the key holds nothing
GET_FOUND = HttpAnswer(200, "ok")
GET_ABSENT = HttpAnswer(404, "not_found")

#: what the gateway itself refuses before asking the cluster (codes double as metric labels)
BAD_INPUT = HttpAnswer(400, "bad_request")
INVALID_BODY = HttpAnswer(422, "invalid_body")
BODY_TOO_LARGE = HttpAnswer(413, "body_too_large")
UNSUPPORTED_MEDIA_TYPE = HttpAnswer(415, "unsupported_media_type")
IDEMPOTENCY_KEY_REUSED = HttpAnswer(422, "idempotency_key_reused")
IDEMPOTENCY_KEY_IN_USE = HttpAnswer(409, "idempotency_key_in_use", retry_after=True)
GATEWAY_BUSY = HttpAnswer(503, "gateway_busy", retry_after=True)
SHUTTING_DOWN = HttpAnswer(503, "shutting_down", retry_after=True)
ROUTE_NOT_FOUND = HttpAnswer(404, "no_such_route")
METHOD_NOT_ALLOWED = HttpAnswer(405, "method_not_allowed")


#: the code of an answer to a client that left while its body was read (no answer reached it)
CLIENT_DISCONNECTED = "client_disconnected"
#: the code of a 5xx HTTP error the framework raised (its status varies); a 4xx it raises is the client's
#: doing and answered `bad_request` (or the answer above its status names), never this
HTTP_ERROR = "http_error"

#: every answer the gateway gives with a fixed status (the codes double as the `outcome` label)
ALL_ANSWERS: tuple[HttpAnswer, ...] = (
    *OUTCOME_HTTP.values(),
    GET_FOUND,
    GET_ABSENT,
    BAD_INPUT,
    INVALID_BODY,
    BODY_TOO_LARGE,
    UNSUPPORTED_MEDIA_TYPE,
    IDEMPOTENCY_KEY_REUSED,
    IDEMPOTENCY_KEY_IN_USE,
    GATEWAY_BUSY,
    SHUTTING_DOWN,
    ROUTE_NOT_FOUND,
    METHOD_NOT_ALLOWED,
)

# Availability, as the recording rules and dashboards in deploy/ count it: an answer below 400 served
# the request, a 4xx one is the client's doing (left out: neither served nor failed), and anything else
# (5xx, `internal_error`, `http_error`, codes added later) is the service failing. Two 4xx answers are the
# cluster serving the request: a compare that failed (409) and a GET of a key that holds nothing (404).
_SERVED_4XX = frozenset({"cas_mismatch", "not_found"})
#: `outcome` values that count as served
SERVED_CODES: tuple[str, ...] = tuple(
    sorted({a.code for a in ALL_ANSWERS if a.status < 400 or a.code in _SERVED_4XX})
)
#: `outcome` values left out of availability: the client's doing
CLIENT_CODES: tuple[str, ...] = tuple(
    sorted(
        {a.code for a in ALL_ANSWERS if 400 <= a.status < 500 and a.code not in _SERVED_4XX}
        | {CLIENT_DISCONNECTED}
    )
)


def http_answer(outcome: Outcome) -> HttpAnswer:
    """The HTTP answer of a request that ended with `outcome` (for a GET, `OK` is refined by
    `GET_FOUND` / `GET_ABSENT`)."""
    return OUTCOME_HTTP[outcome]
