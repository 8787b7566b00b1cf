"""Errors the runtime raises to its callers (clients), split by what they tell about the outcome.

- `OverloadedError`, `MembershipChangeRejectedError`, and `NotLeaderError` from `dscore.core.errors`: the
  command (or membership change) was NOT proposed; it certainly has no effect, so a client may record a
  failure or retry freely.
- `OutcomeUnknownError` and its subclasses (and `TimeoutError` from a per-operation timeout): the command
  may or may not take effect. A client retries with the same `(client_id, seq)` (the state machine's
  sessions make the retry take effect once) or gives up and records the outcome as unknown.
"""

from __future__ import annotations

from dscore.core.errors import ChangeRefusal, LocalError


class OverloadedError(LocalError):
    """A bound was reached (pending proposals or reads); the request was refused, not queued."""


class MembershipChangeRejectedError(LocalError):
    """A membership change was refused before it was proposed: another change is in progress (on this node,
    or not yet committed in the log), the leader has not committed an entry of its term yet, the node is
    already (or not) a member, or the protocol has no membership changes. The message says which, and
    `refusal` too when the core gave a reason (callers act on it: retry, done already, give up)."""

    def __init__(self, message: str, refusal: ChangeRefusal | None = None) -> None:
        super().__init__(message)
        self.refusal = refusal


class OutcomeUnknownError(LocalError):
    """The request was accepted but no answer will come from this node."""

    def __init__(self, message: str, leader_hint: str | None = None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class LeadershipLostError(OutcomeUnknownError):
    """This node stopped leading while the request was pending; a new leader may still commit it."""


class RuntimeStoppedError(OutcomeUnknownError):
    """The node stopped or crashed while the request was pending, or before it was made."""


class ReadFailedError(LocalError):
    """A linearizable read could not be confirmed (e.g. leadership was lost); reads have no effect, so it
    is safe to retry anywhere."""

    def __init__(self, message: str, leader_hint: str | None = None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class StorageWentBackError(LocalError):
    """This node's storage lost writes or was restored from an old copy (a peer saw it at a higher
    incarnation). The runtime fails with it rather than risk voting twice in a term."""
