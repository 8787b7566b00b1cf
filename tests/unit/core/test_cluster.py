"""Cluster-settings agreement: fingerprints, differences, the notice, and the gate that uses them."""

from __future__ import annotations

import hashlib
import struct

import msgpack
import pytest

from dscore.core import cluster
from dscore.core.cluster import (
    MAX_SETTINGS,
    SettingsGate,
    SettingsNotice,
    check_notice,
    diff_settings,
    fingerprint_of,
    fingerprints_disagree,
)
from dscore.core.codec import decode_envelope, decode_value, encode_envelope, encode_value
from dscore.core.envelope import Envelope, EnvelopeFactory, Timestamp
from dscore.core.errors import LocalError, MalformedError, SettingsMismatchError
from dscore.core.ids import MsgId

MINE = {
    "cluster_id": "prod",
    "protocol": "raft",
    "raft.election_timeout_ticks": "10",
    "tick_interval_s": "0.01",
}
THEIRS = {**MINE, "raft.election_timeout_ticks": "20"}


def spec_fingerprint(description: dict[str, str]) -> int:
    """The documented encoding, written out independently of the implementation."""
    data = b"dscore.cluster-settings.v1\x00" + struct.pack(">I", len(description))
    for name in sorted(description):
        for text in (name, description[name]):
            raw = text.encode()
            data += struct.pack(">I", len(raw)) + raw
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big") or 1


def test_fingerprint_follows_the_documented_encoding() -> None:
    # Every build must compute the same fingerprint, or mixed builds would refuse each other.
    for description in ({}, MINE, THEIRS, {"é": "ü"}):
        assert fingerprint_of(description) == spec_fingerprint(description)
    assert 0 < fingerprint_of(MINE) < 2**64


def test_fingerprint_ignores_order_and_sees_every_change() -> None:
    assert fingerprint_of(MINE) == fingerprint_of(dict(reversed(list(MINE.items()))))
    assert fingerprint_of(MINE) != fingerprint_of(THEIRS)
    assert fingerprint_of(MINE) != fingerprint_of({k: v for k, v in MINE.items() if k != "protocol"})
    # Names and values cannot be shifted into each other, nor pairs merged.
    assert fingerprint_of({"a": "bc"}) != fingerprint_of({"ab": "c"})
    assert fingerprint_of({"a": "b", "c": "d"}) != fingerprint_of(
        {"a": "b\x00\x00\x00\x01c\x00\x00\x00\x01d"}
    )


def test_fingerprint_is_never_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    class ZeroDigest:
        def update(self, data: bytes) -> None:
            pass

        def digest(self) -> bytes:
            return bytes(32)

    monkeypatch.setattr(cluster.hashlib, "sha256", lambda data=b"": ZeroDigest())
    assert fingerprint_of(MINE) == 1


@pytest.mark.parametrize(
    "description",
    [{"a": 1}, {2: "b"}, {"": "x"}, {"n" * 129: "x"}, {"a": "v" * 1025}, {f"k{i}": "" for i in range(257)}],
)
def test_fingerprint_refuses_what_is_not_a_description(description: dict[object, object]) -> None:
    with pytest.raises(LocalError, match="not a settings description"):
        fingerprint_of(description)  # type: ignore[arg-type]


def test_diff_names_each_differing_or_missing_setting() -> None:
    theirs = {k: v for k, v in THEIRS.items() if k != "protocol"} | {"max_sessions": "5"}
    assert diff_settings(MINE, theirs, peer="n2") == [
        "max_sessions: missing here, 5 on n2",
        "protocol: raft here, missing on n2",
        "raft.election_timeout_ticks: 10 here, 20 on n2",
    ]
    assert diff_settings(MINE, dict(MINE)) == []


def test_diff_keeps_a_hostile_value_on_one_short_line() -> None:
    [line] = diff_settings({"a": "1"}, {"a": "x\nFAKE LOG LINE" + "y" * 500}, peer="n\x1b[2J")
    assert "\n" not in line and "\x1b" not in line and len(line) < 200
    assert line.startswith("a: 1 here, 'x\\nFAKE LOG LINE")


def test_notice_round_trips_and_checks_itself() -> None:
    notice = SettingsNotice.of(MINE)
    assert notice.fingerprint == fingerprint_of(MINE) and notice.settings == MINE
    assert decode_value(encode_value(notice)) == notice
    assert hash(notice) == hash(SettingsNotice.of(dict(MINE)))
    envelope = EnvelopeFactory("n1", 1, fingerprint=notice.fingerprint).wrap("n2", notice)
    assert decode_envelope(encode_envelope(envelope)) == envelope


@pytest.mark.parametrize(
    ("fingerprint", "settings", "match"),
    [
        (fingerprint_of(MINE), THEIRS, "does not match"),  # claims one thing, describes another
        (0, {}, "non-zero"),
        (fingerprint_of(MINE), {"a": 1}, "expected str"),
        (fingerprint_of(MINE), [["a", "b"]], "map"),
        (1, {f"k{i}": "" for i in range(MAX_SETTINGS + 1)}, "at most"),
    ],
)
def test_a_forged_notice_does_not_decode(fingerprint: int, settings: object, match: str) -> None:
    data = b"\x01" + msgpack.packb(["cluster.settings_notice", [fingerprint, settings]])
    with pytest.raises(MalformedError, match=match):
        decode_value(data)


def test_check_notice_raises_naming_the_setting() -> None:
    check_notice(MINE, SettingsNotice.of(dict(MINE)), peer="n2")
    with pytest.raises(SettingsMismatchError) as error:
        check_notice(MINE, SettingsNotice.of(THEIRS), peer="n2")
    assert error.value.differences == ("raft.election_timeout_ticks: 10 here, 20 on n2",)
    assert error.value.peer == "n2" and error.value.reason == "settings_mismatch"
    assert "raft.election_timeout_ticks: 10 here, 20 on n2" in str(error.value)


def test_zero_means_no_fingerprint() -> None:
    mine = fingerprint_of(MINE)
    assert not fingerprints_disagree(mine, 0)
    assert not fingerprints_disagree(mine, mine)
    assert fingerprints_disagree(mine, fingerprint_of(THEIRS))


def envelope_from(source: str, fingerprint: int, content: object = None) -> Envelope:
    return Envelope(source, "n1", content, Timestamp(1), MsgId(source, 1, 1), fingerprint)


def test_gate_refuses_a_disagreeing_peer_and_explains_once() -> None:
    gate = SettingsGate(MINE)
    ours, theirs = fingerprint_of(MINE), fingerprint_of(THEIRS)
    assert gate.fingerprint == ours
    assert gate.admit(envelope_from("n2", ours)).accept
    assert gate.admit(envelope_from("client-7", 0)).accept
    first = gate.admit(envelope_from("n2", theirs))
    assert not first.accept and first.notice == SettingsNotice.of(MINE)
    again = gate.admit(envelope_from("n2", theirs))
    assert not again.accept and again.notice is None  # told once, not on every message
    assert gate.admit(envelope_from("n3", theirs)).notice is not None  # each peer is told
    changed = gate.admit(envelope_from("n2", fingerprint_of({**THEIRS, "protocol": "sequencer"})))
    assert not changed.accept and changed.notice is not None  # new settings, told again


def test_gate_tells_a_peer_again_after_it_agreed_once() -> None:
    # The peer may have restarted with its old settings and forgotten what it was told.
    gate = SettingsGate(MINE)
    theirs = fingerprint_of(THEIRS)
    assert gate.admit(envelope_from("n2", theirs)).notice is not None
    assert gate.admit(envelope_from("n2", gate.fingerprint)).accept
    assert gate.admit(envelope_from("n2", theirs)).notice is not None


def test_notices_pass_the_gate_and_are_never_answered_with_one() -> None:
    mine, peer = SettingsGate(MINE), SettingsGate(THEIRS)
    notice_from_peer = envelope_from("n2", peer.fingerprint, SettingsNotice.of(THEIRS))
    admission = mine.admit(notice_from_peer)
    assert admission.accept and admission.notice is None
    error = mine.on_notice("n2", SettingsNotice.of(THEIRS))
    assert error is not None and error.differences == ("raft.election_timeout_ticks: 10 here, 20 on n2",)
    # ...and the peer, told by us, reports the same setting from its side.
    other = peer.on_notice("n1", SettingsNotice.of(MINE))
    assert other is not None and other.differences == ("raft.election_timeout_ticks: 20 here, 10 on n1",)
    assert mine.on_notice("n3", SettingsNotice.of(dict(MINE))) is None


def test_gate_memory_is_bounded() -> None:
    gate = SettingsGate(MINE, max_peers=2)
    theirs = fingerprint_of(THEIRS)
    for peer in ("a", "b", "c"):
        assert gate.admit(envelope_from(peer, theirs)).notice is not None
    assert gate.admit(envelope_from("a", theirs)).notice is not None  # "a" was forgotten, told again
    assert gate.admit(envelope_from("c", theirs)).notice is None
    with pytest.raises(LocalError):
        SettingsGate(MINE, max_peers=0)
