"""Authentication between PBFT replicas: a MAC per pair of replicas (Castro and Liskov, section 3).

Every protocol message carries `mac`, an HMAC-SHA256 over its kind, sender, receiver and fields, with the
key the two replicas share. Pair keys are derived from one deployment secret with HKDF (RFC 5869, SHA-256):
`k(a, b) = HKDF(secret, salt="dscore-pbft-pair-v1", info=min(a, b) || 0 || max(a, b))`. The deployer derives
them; each replica is given only its own row (`PairKeys.for_node`), so a Byzantine replica can authenticate
only what it says itself: it cannot forge a message from one correct replica to another, and a message it
relays on behalf of another is rejected (`unauthenticated`). The simulator derives the rows from the run's
key; a real deployment would hand each node its row from a Secret (for now the runtime derives them from
the cluster key, which every node holds: that protects against outsiders, not against a member).

MACs cannot convince a third party, so nothing in this implementation relays another replica's message as
proof: view changes are multicast and each replica checks a NEW-VIEW against the VIEW-CHANGE messages it
received itself (see `dscore.protocols.pbft.viewchange`), and catching up counts f + 1 matching answers.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping

import msgpack

from dscore.core.ids import NodeId

_SALT = b"dscore-pbft-pair-v1"


def hkdf_sha256(secret: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """RFC 5869 HKDF with SHA-256 (extract, then expand)."""
    prk = hmac.digest(salt, secret, "sha256")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


def pair_key(secret: bytes, a: NodeId, b: NodeId) -> bytes:
    low, high = sorted((a, b))
    return hkdf_sha256(secret, _SALT, low.encode() + b"\x00" + high.encode())


class PairKeys:
    """One replica's row of pair keys: the keys it shares with each peer (and nothing else)."""

    __slots__ = ("_keys", "node_id")

    def __init__(self, node_id: NodeId, keys: Mapping[NodeId, bytes]) -> None:
        self.node_id = node_id
        self._keys = dict(keys)

    @staticmethod
    def for_node(secret: bytes, node_id: NodeId, members: Iterable[NodeId]) -> PairKeys:
        return PairKeys(node_id, {m: pair_key(secret, node_id, m) for m in members if m != node_id})

    def knows(self, peer: NodeId) -> bool:
        return peer in self._keys

    def mac(self, sender: NodeId, receiver: NodeId, body: bytes) -> bytes:
        """The MAC of `body` (a message's encoding without its MAC) sent by `sender` to `receiver`; one of
        them is this replica. Empty if this replica shares no key with the other."""
        peer = receiver if sender == self.node_id else sender
        key = self._keys.get(peer)
        if key is None:
            return b""
        header = sender.encode() + b"\x00" + receiver.encode() + b"\x00"
        return hmac.digest(key, header + body, "sha256")

    def verify(self, sender: NodeId, receiver: NodeId, body: bytes, mac: bytes) -> bool:
        if receiver != self.node_id or sender == self.node_id:
            return False
        expected = self.mac(sender, receiver, body)
        return bool(expected) and hmac.compare_digest(expected, mac)


def digest_of(data: bytes, origins: tuple[tuple[str, int], ...]) -> bytes:
    """A request batch's digest: its commands and who asked (so replies cannot be redirected)."""
    return hashlib.sha256(msgpack.packb((data, origins), use_bin_type=True)).digest()


#: the digest of the null request a new primary puts where no request may have committed
NULL_DIGEST = b""
