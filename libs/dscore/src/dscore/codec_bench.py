"""`dscore bench codec`: the envelope codec against a JSON baseline measured in the same run.

The workload is an AppendEntries-shaped envelope (a batch of log entries with small command payloads),
the message that dominates a busy cluster. The baseline encodes the same fields as a JSON document
(bytes as base64, as JSON has no bytes type) with the same CRC-32 frame, so the ratio isolates the
choice of format.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from dscore.core.codec import decode_envelope, encode_envelope
from dscore.core.envelope import Envelope, Timestamp
from dscore.core.ids import MsgId
from dscore.core.registry import message
from dscore.protocols.contract import EntryKind, LogEntry


@message("bench.append")
@dataclass(frozen=True, slots=True)
class BenchAppend:
    term: int
    leader: str
    prev_index: int
    prev_term: int
    entries: tuple[LogEntry, ...]
    commit: int


def sample(entries: int) -> Envelope:
    batch = tuple(
        LogEntry(1000 + i, 3, EntryKind.NORMAL, b"\x94\xa6client\x07\x92\xa3key\xa5value")
        for i in range(entries)
    )
    content = BenchAppend(3, "n1", 999, 3, batch, 998)
    return Envelope("n1", "n2", content, Timestamp(42), MsgId("n1", 1, 7))


def _json_encode(env: Envelope) -> bytes:
    c: Any = env.content
    doc = {
        "source": env.source,
        "destination": env.destination,
        "lamport": env.timestamp.lamport,
        "msg_id": [env.msg_id.sender, env.msg_id.incarnation, env.msg_id.seq],
        "kind": env.kind,
        "content": {
            "term": c.term,
            "leader": c.leader,
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
    content = BenchAppend(c["term"], c["leader"], c["prev_index"], c["prev_term"], entries, c["commit"])
    return Envelope(
        doc["source"], doc["destination"], content, Timestamp(doc["lamport"]), MsgId(*doc["msg_id"])
    )


def _rate(fn: Callable[[], object], min_time_s: float) -> float:
    """Calls per second, best of three rounds of at least `min_time_s / 3` each."""
    best = 0.0
    for _ in range(3):
        calls = 0
        start = time.perf_counter()
        elapsed = 0.0
        while elapsed < min_time_s / 3:
            for _ in range(50):
                fn()
            calls += 50
            elapsed = time.perf_counter() - start
        best = max(best, calls / elapsed)
    return best


def add_bench_codec_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser("codec", help="envelope codec vs a JSON baseline")
    parser.add_argument("--entries", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--min-time-s", type=float, default=1.0)
    return parser


def run_bench_codec(args: argparse.Namespace) -> int:
    table = Table(title="codec: msgpack+CRC-32 vs JSON+CRC-32 (same run)")
    for column in ("entries", "bytes", "json bytes", "encode/s", "decode/s", "enc ratio", "dec ratio"):
        table.add_column(column, justify="right")
    for n in args.entries:
        env = sample(n)
        data, jdata = encode_envelope(env), _json_encode(env)
        assert decode_envelope(data) == env and _json_decode(jdata) == env
        enc = _rate(functools.partial(encode_envelope, env), args.min_time_s)
        dec = _rate(functools.partial(decode_envelope, data), args.min_time_s)
        jenc = _rate(functools.partial(_json_encode, env), args.min_time_s)
        jdec = _rate(functools.partial(_json_decode, jdata), args.min_time_s)
        table.add_row(
            str(n),
            str(len(data)),
            str(len(jdata)),
            f"{enc:,.0f}",
            f"{dec:,.0f}",
            f"{enc / jenc:.2f}x",
            f"{dec / jdec:.2f}x",
        )
    Console().print(table)
    return 0
