"""Agreement on cluster-wide settings: a fingerprint, readable differences, the notice peers exchange.

Some settings must be equal on every member (the cluster id, the protocol, Raft's timing, the session
bound: `dscore.settings.ClusterSettings` lists them and says why). In containers each node reads its own
environment, so nothing guarantees that. Each node therefore describes its cluster-wide settings as
flat `{dotted name: value}` strings, fingerprints the description (`fingerprint_of`, a u64 that is never
0) and stamps the fingerprint on every envelope it sends (`EnvelopeFactory(fingerprint=...)`; clients send
0, "none"). A node that receives an envelope carrying another non-zero fingerprint refuses it and tells
the sender its own description once (`SettingsNotice`); the sender compares (`check_notice`) and reports
`SettingsMismatchError` naming each setting that differs, e.g.
`raft.election_timeout_ticks: 20 here, 10 on n1`. Both sides refuse each other, so both report.

`SettingsGate` does that bookkeeping for a driver. Two rules keep it from looping or going quiet: a
`SettingsNotice` is admitted whatever fingerprint its envelope carries (it is how a mismatch is
explained) and never answered with a notice (two disagreeing nodes would trade notices forever); and a
peer is told again after it has once agreed (it may have restarted with the old settings and forgotten).

Pure and sans-I/O: no clock, no I/O, no randomness.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from dscore.core.envelope import FINGERPRINT_LIMIT, Envelope
from dscore.core.errors import LocalError, SettingsMismatchError
from dscore.core.registry import message

#: a description larger than this is refused (a notice must stay far below any envelope limit)
MAX_SETTINGS = 256
MAX_NAME_CHARS = 128
MAX_VALUE_CHARS = 1024
#: the canonical encoding starts with this tag, so a fingerprint is never valid for other data
_DOMAIN = b"dscore.cluster-settings.v1\x00"
_LENGTH = struct.Struct(">I")
_SHOWN_CHARS = 64


def _check_description(description: Mapping[str, str]) -> None:
    if len(description) > MAX_SETTINGS:
        raise ValueError(f"{len(description)} settings, at most {MAX_SETTINGS}")
    for name, value in description.items():
        if type(name) is not str or type(value) is not str:
            raise ValueError("setting names and values must be strings")
        if not 0 < len(name) <= MAX_NAME_CHARS or len(value) > MAX_VALUE_CHARS:
            raise ValueError(f"setting {_shown(name)}: name or value too long")


def fingerprint_of(description: Mapping[str, str]) -> int:
    """The first 8 bytes (big-endian) of SHA-256 over a canonical encoding of the description: the
    settings sorted by name, each name and value as UTF-8 with a 4-byte length before it. Never 0
    (0 means "no fingerprint" on the wire)."""
    try:
        _check_description(description)
    except ValueError as error:
        raise LocalError(f"not a settings description: {error}") from None
    digest = hashlib.sha256(_DOMAIN)
    digest.update(_LENGTH.pack(len(description)))
    for name in sorted(description):
        for text in (name, description[name]):
            data = text.encode("utf-8", "surrogatepass")
            digest.update(_LENGTH.pack(len(data)))
            digest.update(data)
    value = int.from_bytes(digest.digest()[:8], "big")
    return value or 1


def _shown(text: str) -> str:
    """A value from a peer as it may appear in one log line: printable and short, else quoted."""
    if text.isprintable() and len(text) <= _SHOWN_CHARS and text.strip() == text and text:
        return text
    return repr(text[:_SHOWN_CHARS]) + ("..." if len(text) > _SHOWN_CHARS else "")


def diff_settings(mine: Mapping[str, str], theirs: Mapping[str, str], *, peer: str = "the peer") -> list[str]:
    """One readable line per setting that differs or is missing on one side, sorted by name:
    `raft.election_timeout_ticks: 10 here, 20 on n2`, `protocol: raft here, missing on n2`."""
    lines = []
    who = _shown(peer)
    for name in sorted(mine.keys() | theirs.keys()):
        here = _shown(mine[name]) if name in mine else "missing"
        there = _shown(theirs[name]) if name in theirs else "missing"
        if name not in mine or name not in theirs or mine[name] != theirs[name]:
            lines.append(f"{_shown(name)}: {here} here, {there} on {who}")
    return lines


@message("cluster.settings_notice")
@dataclass(frozen=True, slots=True)
class SettingsNotice:
    """A node's cluster-wide settings, sent to a peer whose envelopes carry another fingerprint.

    Decoding checks that `fingerprint` is the fingerprint of `settings`, so a notice cannot claim one
    thing and describe another."""

    fingerprint: int
    #: flattened dotted names -> values (`ClusterSettings.description()`); never secrets
    settings: dict[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        if type(self.fingerprint) is not int or not 0 < self.fingerprint < FINGERPRINT_LIMIT:
            raise ValueError("fingerprint must be a non-zero unsigned 64-bit integer")
        if type(self.settings) is not dict:
            raise ValueError("settings must be a dict")
        _check_description(self.settings)
        if fingerprint_of(self.settings) != self.fingerprint:
            raise ValueError("fingerprint does not match the settings it describes")

    @classmethod
    def of(cls, description: Mapping[str, str]) -> SettingsNotice:
        settings = dict(description)
        return cls(fingerprint_of(settings), settings)


def fingerprints_disagree(mine: int, theirs: int) -> bool:
    """Whether an envelope carrying `theirs` comes from a member with other cluster settings (0 is
    "none": clients do not take part)."""
    return theirs not in (0, mine)


def check_notice(mine: Mapping[str, str], notice: SettingsNotice, *, peer: str) -> None:
    """Raise `SettingsMismatchError` naming every setting in which `peer`'s notice differs from ours."""
    if notice.fingerprint != fingerprint_of(mine):
        raise SettingsMismatchError(peer, diff_settings(mine, notice.settings, peer=peer))


@dataclass(frozen=True, slots=True)
class Admission:
    """What to do with one received envelope."""

    #: step it (or, for a `SettingsNotice`, hand it to `SettingsGate.on_notice`); False: drop and count
    accept: bool
    #: send this to the envelope's source (at most once per peer and fingerprint)
    notice: SettingsNotice | None = None


class SettingsGate:
    """A node's side of the agreement (see the module doc); sans-I/O, one per node.

    `admit(envelope)` for every received envelope; `on_notice(source, notice)` for every admitted
    `SettingsNotice`. Remembers which peers were told, bounded by `max_peers`."""

    __slots__ = ("_notice", "_notified", "description", "fingerprint", "max_peers")

    def __init__(self, description: Mapping[str, str], *, max_peers: int = 1024) -> None:
        if max_peers < 1:
            raise LocalError("max_peers must be at least 1")
        self.description = dict(description)
        self.fingerprint = fingerprint_of(self.description)
        self.max_peers = max_peers
        self._notice = SettingsNotice(self.fingerprint, dict(self.description))
        #: peer -> the fingerprint it carried when we last sent it our notice
        self._notified: dict[str, int] = {}

    def admit(self, envelope: Envelope) -> Admission:
        source = envelope.source
        if type(envelope.content) is SettingsNotice:
            return Admission(accept=True)
        if not fingerprints_disagree(self.fingerprint, envelope.fingerprint):
            self._notified.pop(source, None)
            return Admission(accept=True)
        if self._notified.get(source) == envelope.fingerprint:
            return Admission(accept=False)
        if source not in self._notified and len(self._notified) >= self.max_peers:
            del self._notified[next(iter(self._notified))]  # the oldest entry
        self._notified[source] = envelope.fingerprint
        return Admission(accept=False, notice=self._notice)

    def on_notice(self, source: str, notice: SettingsNotice) -> SettingsMismatchError | None:
        """The error to report (and to refuse `source` with) if its settings differ from ours."""
        try:
            check_notice(self.description, notice, peer=source)
        except SettingsMismatchError as error:
            return error
        return None


@message("cluster.storage_hello")
@dataclass(frozen=True, slots=True)
class StorageHello:
    """The first message of every incarnation, to every peer: which storage this node runs on. `epoch` is a
    random number drawn once, when the node's storage was first written, and kept there; a peer remembers
    (durably) the epoch it first heard from each node. A node that comes back with another epoch started
    from a wiped or replaced storage: peers refuse it (it could vote twice in a term it forgot), whatever
    its incarnation says."""

    epoch: int
    incarnation: int


@message("cluster.incarnation_notice")
@dataclass(frozen=True, slots=True)
class IncarnationNotice:
    """Sent to a peer whose storage looks older than what this node has seen of it: `seen` is the highest
    incarnation accepted from that peer, `epoch` the storage epoch it first said hello with. Incarnations
    only grow and an epoch never changes, so a node told of a higher incarnation or another epoch than its
    own knows its storage went back in time (lost writes, wiped, restored from an old copy) and must stop."""

    seen: int
    epoch: int
