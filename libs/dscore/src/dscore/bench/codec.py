"""`dscore bench codec`: the envelope codec against a JSON baseline, and the cost of the MAC, each
measured in the same run.

The workload is a real Raft `AppendEntries` (a batch of log entries with kv-command-sized payloads), the
message that dominates a busy cluster, in an envelope carrying a cluster fingerprint. The JSON baseline
encodes the same fields as a JSON document (bytes as base64, as JSON has no bytes type) with the same
CRC-32 frame, so the ratio isolates the choice of format. The MAC table encodes and decodes the same
envelope with and without a cluster key (HMAC-SHA256, wire version 2), rounds interleaved so both see
the same machine. Rates are wall-clock calls per second, best of three rounds; CPU µs per call come from
the process's CPU time in the same round.

Only real wire messages are used: importing this module registers no message kinds.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import time
import zlib
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from dscore.core.cluster import fingerprint_of
from dscore.core.codec import decode_envelope, encode_envelope
from dscore.core.envelope import Envelope, Timestamp
from dscore.core.ids import MsgId
from dscore.protocols.contract import EntryKind, LogEntry
from dscore.protocols.raft import AppendEntries

#: a fixed key: the bench measures the MAC's cost, not key handling
BENCH_KEY = bytes(range(32))
_FINGERPRINT = fingerprint_of({"cluster_id": "bench", "protocol": "raft"})


def sample(entries: int) -> Envelope:
    batch = tuple(
        LogEntry(1000 + i, 3, EntryKind.NORMAL, b"\x94\xa6client\x07\x92\xa3key\xa5value")
        for i in range(entries)
    )
    content = AppendEntries(3, 999, 3, batch, 998)
    return Envelope("n1", "n2", content, Timestamp(42), MsgId("n1", 1, 7), _FINGERPRINT)


def _json_encode(env: Envelope) -> bytes:
    c: Any = env.content
    doc = {
        "source": env.source,
        "destination": env.destination,
        "lamport": env.timestamp.lamport,
        "msg_id": [env.msg_id.sender, env.msg_id.incarnation, env.msg_id.seq],
        "kind": env.kind,
        "fingerprint": env.fingerprint,
        "content": {
            "term": c.term,
            "prev_index": c.prev_index,
            "prev_term": c.prev_term,
            "commit": c.commit,
            "entries": [
                {
                    "index": e.index,
                    "term": e.term,
                    "kind": int(e.kind),
                    "data": base64.b64encode(e.data).decode(),
                }
                for e in c.entries
            ],
        },
    }
    body = json.dumps(doc, separators=(",", ":")).encode()
    return zlib.crc32(body).to_bytes(4, "big") + body


def _json_decode(data: bytes) -> Envelope:
    body = data[4:]
    if zlib.crc32(body) != int.from_bytes(data[:4], "big"):
        raise ValueError("crc")
    doc = json.loads(body)
    c = doc["content"]
    entries = tuple(
        LogEntry(e["index"], e["term"], EntryKind(e["kind"]), base64.b64decode(e["data"]))
        for e in c["entries"]
    )
    content = AppendEntries(c["term"], c["prev_index"], c["prev_term"], entries, c["commit"])
    return Envelope(
        doc["source"],
        doc["destination"],
        content,
        Timestamp(doc["lamport"]),
        MsgId(*doc["msg_id"]),
        doc["fingerprint"],
    )


class _Best:
    """The best round of one measurement: calls per wall-clock second, and CPU µs per call."""

    __slots__ = ("cpu_us", "rate")

    def __init__(self) -> None:
        self.rate = 0.0
        self.cpu_us = 0.0

    def round(self, fn: Callable[[], object], round_s: float) -> None:
        calls = 0
        start, cpu_start = time.perf_counter(), time.process_time()
        elapsed = 0.0
        while elapsed < round_s:
            for _ in range(50):
                fn()
            calls += 50
            elapsed = time.perf_counter() - start
        rate = calls / elapsed
        if rate > self.rate:
            self.rate = rate
            self.cpu_us = (time.process_time() - cpu_start) / calls * 1e6


def _measure(fns: dict[str, Callable[[], object]], min_time_s: float, rounds: int = 3) -> dict[str, _Best]:
    """Best of `rounds` for each function, rounds interleaved so every function sees the same load."""
    best = {name: _Best() for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name].round(fn, min_time_s / rounds)
    return best


def add_bench_codec_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "codec", help="envelope codec vs a JSON baseline, and the MAC's cost"
    )
    parser.add_argument("--entries", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--min-time-s", type=float, default=1.0, help="per measurement, over 3 rounds")
    return parser


def run_bench_codec(args: argparse.Namespace) -> int:
    formats = Table(title="codec: msgpack+CRC-32 vs JSON+CRC-32 (same run; µs = CPU µs per call)")
    for column in ("entries", "bytes", "JSON", "encode/s", "enc µs", "decode/s", "dec µs", "enc x", "dec x"):
        formats.add_column(column, justify="right")
    macs = Table(title="MAC cost: CRC-32 (wire v1) vs CRC-32 + HMAC-SHA256 (wire v2), same run")
    for column in ("entries", "frame", "bytes", "encode/s", "enc µs", "decode/s", "dec µs"):
        macs.add_column(column, justify="right")
    for n in args.entries:
        env = sample(n)
        data, mac_data, jdata = encode_envelope(env), encode_envelope(env, key=BENCH_KEY), _json_encode(env)
        if not (
            decode_envelope(data) == env
            and decode_envelope(mac_data, key=BENCH_KEY) == env
            and _json_decode(jdata) == env
        ):
            raise AssertionError("a codec does not round-trip the bench envelope")
        best = _measure(
            {
                "enc": functools.partial(encode_envelope, env),
                "enc_mac": functools.partial(encode_envelope, env, key=BENCH_KEY),
                "dec": functools.partial(decode_envelope, data),
                "dec_mac": functools.partial(decode_envelope, mac_data, key=BENCH_KEY),
                "jenc": functools.partial(_json_encode, env),
                "jdec": functools.partial(_json_decode, jdata),
            },
            args.min_time_s,
        )
        enc, dec, jenc, jdec = best["enc"], best["dec"], best["jenc"], best["jdec"]
        formats.add_row(
            str(n),
            str(len(data)),
            str(len(jdata)),
            f"{enc.rate:,.0f}",
            f"{enc.cpu_us:.2f}",
            f"{dec.rate:,.0f}",
            f"{dec.cpu_us:.2f}",
            f"{enc.rate / jenc.rate:.2f}x",
            f"{dec.rate / jdec.rate:.2f}x",
        )
        enc_mac, dec_mac = best["enc_mac"], best["dec_mac"]
        for label, size, e, d in (("v1", len(data), enc, dec), ("v2 (MAC)", len(mac_data), enc_mac, dec_mac)):
            macs.add_row(
                str(n),
                label,
                str(size),
                f"{e.rate:,.0f}",
                f"{e.cpu_us:.2f}",
                f"{d.rate:,.0f}",
                f"{d.cpu_us:.2f}",
            )
        macs.add_row(
            str(n),
            "MAC cost",
            f"+{len(mac_data) - len(data)}",
            f"{enc_mac.rate / enc.rate - 1:+.0%}",
            f"{enc_mac.cpu_us - enc.cpu_us:+.2f}",
            f"{dec_mac.rate / dec.rate - 1:+.0%}",
            f"{dec_mac.cpu_us - dec.cpu_us:+.2f}",
            end_section=True,
        )
    console = Console()
    console.print(formats)
    console.print(macs)
    return 0
