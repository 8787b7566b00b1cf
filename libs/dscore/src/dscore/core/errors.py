"""dscore's typed errors.

Local errors (a caller misused the API, a setting is wrong) are kept apart from remote errors (bytes that
arrived from another node or a client are bad). Decoding untrusted bytes raises only `RemoteError`
subclasses, never a bare `ValueError`, `KeyError` or a msgpack exception.
"""

from __future__ import annotations

import enum


class DscoreError(Exception):
    """Base class of every error dscore raises on purpose."""


class LocalError(DscoreError):
    """The local caller did something wrong: a bad argument, a bad setting, an API misuse."""


class ConfigError(LocalError):
    """A setting is out of range or inconsistent."""


class ChangeRefusal(enum.Enum):
    """Why a membership change was refused before it was proposed (nothing happened). Callers act on it:
    retry later (`CHANGE_IN_PROGRESS`), treat it as done (`ALREADY_MEMBER` for an add, `NOT_MEMBER` for a
    removal: the change is idempotent), or give up (`ID_REMOVED`: ids are never reused)."""

    #: another change is not committed yet, or the leader has not committed an entry of its term
    CHANGE_IN_PROGRESS = "change_in_progress"
    #: the id was removed from this cluster before
    ID_REMOVED = "id_removed"
    #: an add of a node that is a voter or a learner already
    ALREADY_MEMBER = "already_member"
    #: a removal of a node that is not a member
    NOT_MEMBER = "not_member"
    #: a promotion of a node that is not a learner (it may be a voter already)
    NOT_LEARNER = "not_learner"
    #: the only voter cannot be removed
    LAST_VOTER = "last_voter"
    #: the protocol has no membership changes
    UNSUPPORTED = "unsupported"


class NotLeaderError(LocalError):
    """A proposal or read reached a replica that cannot serve it; `leader_hint` names who might."""

    def __init__(self, message: str, leader_hint: str | None = None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class RemoteError(DscoreError):
    """Bytes or a message received from elsewhere are unacceptable. The receiver drops and counts them."""


class DecodeError(RemoteError):
    """Base class of every failure to decode an envelope."""

    #: a short fixed label for the `reason` label of the rejection metric
    reason = "malformed"


class MalformedError(DecodeError):
    """The bytes are not a well-formed envelope (bad framing, wrong types, wrong arity)."""

    reason = "malformed"


class ChecksumMismatchError(DecodeError):
    """The error-detection code does not match the bytes: corruption in flight or at rest."""

    reason = "checksum"


class UnknownKindError(DecodeError):
    """The envelope names a message kind this build does not know."""

    reason = "unknown_kind"


class TooLargeError(DecodeError):
    """The encoded envelope exceeds the configured maximum size."""

    reason = "too_large"


class UnsupportedVersionError(DecodeError):
    """The wire format version is not one this build reads."""

    reason = "version"


class UnauthenticatedError(DecodeError):
    """The frame's MAC is missing, wrong, or cannot be checked (see `dscore.core.codec`): forged,
    replayed from another cluster, or sent by a node with another key."""

    reason = "unauthenticated"


class SettingsMismatchError(RemoteError):
    """A peer runs with other cluster-wide settings (`dscore.core.cluster`); `differences` names each
    setting that differs, one readable line per setting."""

    reason = "settings_mismatch"

    def __init__(self, peer: str, differences: list[str]) -> None:
        shown = "; ".join(differences) if differences else "fingerprints differ"
        super().__init__(f"peer {peer} runs with other cluster settings: {shown}")
        self.peer = peer
        self.differences = tuple(differences)
