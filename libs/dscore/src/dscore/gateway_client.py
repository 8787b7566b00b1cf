"""A client of the gateway's HTTP API (services/gateway) that records a Jepsen history: what the
end-to-end tests and `dscore demo --stack processes` write through.

`GatewayClient(session, base_url, name, ...)` has the `KvOps` methods (`put`, `append`, `cas`, `get`,
each returning an `OpResult`), like `dscore.runtime.client.KvClient` on the wire protocol, so the same
workloads (`mixed_workload`) and figures (`ClientStats`) serve both. Every operation is recorded in the
history the same way:

- `ok`: 204 for a write, 200 for a read (404 `not_found`: a read of nothing, also `ok`);
- `fail` (certainly no effect): 409 `cas_mismatch` (the value found is returned), a 503 (`no_leader`,
  `overloaded`, `gateway_busy`, `shutting_down`: nothing happened) once the operation's deadline passed,
  a 4xx refusal (a bug in the caller), or a read that got no answer;
- `info` (may or may not have taken effect): a write whose outcome stayed unknown: a 504, or a request
  the gateway may have received but never answered (connection lost, timeout).

A write carries an `Idempotency-Key` (unique per operation), so retrying it after a 504 on the same
gateway applies it at most once and returns its real outcome; a 503 says nothing happened, so it is
retried too, until `op_timeout_s`. After a lost connection the client does not retry: the gateway may
have restarted and forgotten the key, and a second copy of an append would be applied twice.

The node that answered (the gateway's `Dscore-Node` response header) goes into each `Completion`, so
failover figures can tell a new leader's answers from the old one's.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from dscore.check.edn import EdnValue
from dscore.check.history import HistoryRecorder
from dscore.core.client_messages import Outcome
from dscore.runtime.client import ClientStats, Completion, OpOutcome, OpResult

#: the response header naming the node that gave the gateway its final answer
NODE_HEADER = "Dscore-Node"
#: the status `_request` gives a request that never left (no connection): retried like a 503
_NOT_SENT = 0
#: the gateway's error codes, as the `Outcome` names the figures use (`Completion.error`)
_ERRORS = {
    "cas_mismatch": Outcome.CAS_MISMATCH.name,
    "no_leader": Outcome.NOT_LEADER.name,
    "overloaded": Outcome.OVERLOADED.name,
    "outcome_unknown": Outcome.UNKNOWN.name,
    "rejected_by_cluster": Outcome.BAD_REQUEST.name,
}


@dataclass(frozen=True, slots=True)
class GatewayClientConfig:
    #: give up on an operation after this (a write still unknown then is recorded `info`)
    op_timeout_s: float = 8.0
    #: pause before retrying a 503 or a 504 (the gateway already retried inside)
    retry_backoff_s: float = 0.05
    #: one HTTP request: above the gateway's own request timeout (5 s) plus one attempt (0.5 s)
    request_timeout_s: float = 7.0


def open_session(max_connections: int = 64) -> aiohttp.ClientSession:
    """A session for gateway clients: kept-alive connections, at most `max_connections` at once."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=max_connections))


class GatewayClient:
    """One client of a gateway's HTTP API (see the module docstring). `process` is its history process
    id; after an `info` it continues as `process + process_stride`, as in Jepsen."""

    _ids = itertools.count(1)

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        name: str,
        *,
        config: GatewayClientConfig | None = None,
        history: HistoryRecorder | None = None,
        process: int = 0,
        process_stride: int = 1,
        stats: ClientStats | None = None,
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.config = config or GatewayClientConfig()
        self.history = history
        self.process = process
        self._process_stride = process_stride
        self.stats = stats
        self._key_prefix = f"{name}.{secrets.token_hex(6)}"

    # -- the operations -----------------------------------------------------------------------------

    async def put(self, key: str, value: str) -> OpResult:
        return await self._write("put", key, value, method="PUT", suffix="", body={"value": value})

    async def append(self, key: str, suffix: str) -> OpResult:
        return await self._write(
            "append", key, suffix, method="POST", suffix="/append", body={"value": suffix}
        )

    async def cas(self, key: str, expected: str | None, new: str) -> OpResult:
        body = {"expected": expected, "value": new}
        return await self._write("cas", key, (expected, new), method="POST", suffix="/cas", body=body)

    async def get(self, key: str) -> OpResult:
        loop = asyncio.get_running_loop()
        history = self.history
        op_id = history.invoke(self.process, "get", key=key) if history is not None else -1
        start = loop.time()
        deadline = start + self.config.op_timeout_s
        attempts = 0
        error = "timeout"
        while loop.time() < deadline:
            attempts += 1
            answer = await self._request("GET", key, "", None, None)
            if answer is None:
                error = "timeout"
            else:
                status, body, node = answer
                if status == 200 or (status == 404 and body.get("error") == "not_found"):
                    value = body.get("value") if status == 200 else None
                    if history is not None:
                        history.ok(op_id, value)
                    return self._done(
                        OpResult(OpOutcome.OK, value, None, node, loop.time() - start, attempts), "get"
                    )
                error = _error_of(body, status)
                if status not in (503, _NOT_SENT):
                    break
            await asyncio.sleep(self.config.retry_backoff_s)
        if history is not None:
            history.fail(op_id)
        return self._done(OpResult(OpOutcome.FAIL, None, error, None, loop.time() - start, attempts), "get")

    async def _write(
        self, f: str, key: str, history_value: EdnValue, *, method: str, suffix: str, body: dict[str, Any]
    ) -> OpResult:
        loop = asyncio.get_running_loop()
        history = self.history
        op_id = history.invoke(self.process, f, key=key, value=history_value) if history is not None else -1
        start = loop.time()
        deadline = start + self.config.op_timeout_s
        idempotency_key = f'"{self._key_prefix}.{next(self._ids)}"'
        attempts = 0
        maybe_applied = False
        error = "timeout"
        node = None
        while loop.time() < deadline:
            attempts += 1
            answer = await self._request(method, key, suffix, body, idempotency_key)
            if answer is None:  # the gateway may have received it: unknown, and no retry (see above)
                maybe_applied = True
                error = "timeout"
                break
            status, reply, node = answer
            latency_s = loop.time() - start
            if status == 204:
                if history is not None:
                    history.ok(op_id)
                return self._done(OpResult(OpOutcome.OK, None, None, node, latency_s, attempts), f)
            error = _error_of(reply, status)
            if status == 409 and reply.get("error") == "cas_mismatch":
                if history is not None:
                    history.fail(op_id)
                current = reply.get("current")
                return self._done(
                    OpResult(
                        OpOutcome.FAIL,
                        current if isinstance(current, str) else None,
                        error,
                        node,
                        latency_s,
                        attempts,
                    ),
                    f,
                )
            if status == 504:
                maybe_applied = True
            elif status not in (503, 409, _NOT_SENT):  # 409: the key's first request still runs
                break
            await asyncio.sleep(self.config.retry_backoff_s)
        latency_s = loop.time() - start
        if maybe_applied:
            if history is not None:
                history.info(op_id)
                self.process += self._process_stride
            return self._done(OpResult(OpOutcome.UNKNOWN, None, error, node, latency_s, attempts), f)
        if history is not None:
            history.fail(op_id)
        return self._done(OpResult(OpOutcome.FAIL, None, error, node, latency_s, attempts), f)

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        key: str,
        suffix: str,
        body: dict[str, Any] | None,
        idempotency_key: str | None,
    ) -> tuple[int, dict[str, Any], str | None] | None:
        """(status, JSON body or {}, the node that answered), or None when no answer came."""
        url = f"{self.base_url}/v1/kv/{quote(key, safe='')}{suffix}"
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        try:
            async with self.session.request(
                method,
                url,
                json=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s),
            ) as response:
                raw = await response.read()
                reply = json.loads(raw) if raw else {}
                node = response.headers.get(NODE_HEADER)
                return response.status, reply if isinstance(reply, dict) else {}, node
        except aiohttp.ClientConnectorError:
            return _NOT_SENT, {"error": "gateway_unreachable"}, None  # no connection: nothing was sent
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    def _done(self, result: OpResult, f: str) -> OpResult:
        if self.stats is not None:
            now = asyncio.get_running_loop().time()
            self.stats.completions.append(
                Completion(now, result.latency_s, result.outcome, f, result.node_id, result.error)
            )
        return result


def _error_of(body: dict[str, Any], status: int) -> str:
    code = body.get("error")
    if isinstance(code, str):
        return _ERRORS.get(code, code)
    return f"http_{status}"
