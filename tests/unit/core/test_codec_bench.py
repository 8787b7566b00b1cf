"""`dscore bench codec` in miniature, so the benchmark cannot rot, and a check that it registers nothing."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from dscore.bench.codec import add_bench_codec_parser, run_bench_codec


def test_bench_codec_prints_both_tables(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="dscore bench")
    add_bench_codec_parser(parser.add_subparsers(dest="command"))
    assert run_bench_codec(parser.parse_args(["codec", "--entries", "1", "3", "--min-time-s", "0.03"])) == 0
    out = capsys.readouterr().out
    for text in ("msgpack+CRC-32 vs JSON+CRC-32", "HMAC-SHA256", "v2 (MAC)", "MAC cost", "+32"):
        assert text in out


def test_importing_the_bench_registers_no_wire_message() -> None:
    # A fresh interpreter: other tests may have imported the bench already.
    code = (
        "from dscore.core import registry; import dscore.protocols.raft, dscore.core.cluster;"
        "before = set(registry._by_kind); import dscore.bench.codec, dscore.cli;"
        "print(sorted(set(registry._by_kind) - before))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
