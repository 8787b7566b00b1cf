"""The gateway's pool of client sessions (Raft dissertation, section 6.3; `dscore.statemachine.kv`).

A session is a `client_id` the cluster gave a REGISTER and the number `seq` of its next command. A
session carries one write at a time, so the pool holds one session per write in flight: a write takes an
idle session (registering a new one while the pool is below `size`; REGISTER costs a log entry, so
sessions are made on demand and kept), and gives it back when it has an answer.

What a write leaves its session with:

- a definite answer (OK, CAS_MISMATCH, BAD_REQUEST): `seq` moves on; the session is idle again;
- certainly nothing done (NOT_LEADER, OVERLOADED on every attempt): `seq` stays (nothing holds it);
- an unknown outcome: `seq` moves on, so a late copy of the abandoned command is refused as stale and
  never applied out of order; or, when the write carries an Idempotency-Key, the session is **pinned**
  to that key with its `seq` unchanged: a retry with the key re-sends the same `(client_id, seq)`, which
  the state machine applies at most once and answers with the first result. A pinned session is not
  reused until its key's retry settles it or the key is forgotten (`unpin`, which moves `seq` on);
- `SESSION_EXPIRED`: the cluster evicted the session: it is dropped (`client_id = 0`) and registered
  anew by the next write that takes it.

Pinned sessions do not count against `size` (they wait for a client's retry, not for the cluster), but
`max_pinned` bounds them; the caller unpins the oldest beyond it.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Session:
    """One client session: `client_id` (0: not registered yet) and the `seq` of its next command."""

    __slots__ = ("client_id", "name", "pinned_to", "seq")

    def __init__(self, name: str) -> None:
        self.name = name
        self.client_id = 0
        self.seq = 1
        #: the Idempotency-Key this session is held for (None: in the pool)
        self.pinned_to: str | None = None

    def registered(self, client_id: int) -> None:
        self.client_id = client_id
        self.seq = 1

    def expired(self) -> None:
        """The cluster no longer knows this session: register again before the next write."""
        self.client_id = 0
        self.seq = 1

    def __repr__(self) -> str:
        return f"Session({self.name}, client_id={self.client_id}, seq={self.seq})"


class PoolExhaustedError(Exception):
    """No session became free before the request's deadline."""


class SessionPool:
    """At most `size` sessions carrying writes, plus pinned ones (see the module doc). Everything but
    `acquire` is synchronous, so a cancelled request can always give its session back."""

    def __init__(self, size: int, name: str = "gw") -> None:
        if size < 1:
            raise ValueError("a session pool needs at least one session")
        self.size = size
        self._name = name
        self._idle: deque[Session] = deque()
        self._busy = 0
        self._made = 0
        #: writes waiting for a session, first come first served
        self._waiters: deque[asyncio.Future[Session]] = deque()
        #: sessions pinned to an Idempotency-Key, oldest first
        self.pinned: dict[str, Session] = {}

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _available(self) -> bool:
        return bool(self._idle) or self._busy < self.size

    async def acquire(self, timeout_s: float) -> Session:
        """An idle session, a new one (unregistered) if the pool is not full, or the first one freed
        within `timeout_s` (else `PoolExhaustedError`). Waiters are served in order."""
        if not self._waiters and self._available():
            return self._take()
        waiter: asyncio.Future[Session] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        except BaseException as error:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self.release(waiter.result())  # handed to us, but we timed out or were cancelled first
            if isinstance(error, TimeoutError):
                raise PoolExhaustedError(f"all {self.size} sessions are carrying writes") from None
            raise

    def take_registered(self) -> Session | None:
        """An idle registered session at once, as `acquire` would give it; None (nothing taken) if
        `acquire` would wait, register a new session, or hand out one that must register again."""
        idle = self._idle
        if self._waiters or not idle or idle[0].client_id == 0:
            return None
        self._busy += 1
        return idle.popleft()

    def _take(self) -> Session:
        self._busy += 1
        if self._idle:
            return self._idle.popleft()
        self._made += 1
        return Session(f"{self._name}-{self._made}")

    def release(self, session: Session) -> None:
        """Give back a session taken by `acquire` (or `resume`)."""
        self._busy -= 1
        self._idle.append(session)
        self._wake()

    def pin(self, session: Session, key: str) -> None:
        """Hold `session` (taken by `acquire`, its `seq` unchanged) for the retry of `key`'s write."""
        self._busy -= 1
        session.pinned_to = key
        self.pinned[key] = session
        self._wake()

    def resume(self, key: str) -> Session | None:
        """Take the session pinned to `key` for its retry (give it back with `release` or `pin`)."""
        session = self.pinned.pop(key, None)
        if session is not None:
            session.pinned_to = None
            self._busy += 1  # may exceed `size` briefly: a pinned write must never wait for the pool
        return session

    def unpin(self, key: str) -> bool:
        """Let the session pinned to `key` go back to the pool; its abandoned `seq` is skipped, so a late
        copy of that command is refused as stale. False if no session was pinned to `key`."""
        session = self.pinned.pop(key, None)
        if session is None:
            return False
        session.pinned_to = None
        session.seq += 1
        self._idle.append(session)
        self._wake()
        return True

    def oldest_pinned(self) -> str | None:
        return next(iter(self.pinned), None)

    def _wake(self) -> None:
        """Hand free sessions to the waiters, first come first served."""
        while self._waiters and self._available():
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(self._take())
