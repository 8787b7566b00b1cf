"""`dscore bench raft` in miniature, so the benchmark cannot rot: every section runs and prints."""

from __future__ import annotations

import argparse

import pytest

from dscore.runtime.bench import add_bench_raft_parser, run_bench_raft


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dscore bench")
    add_bench_raft_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["raft", *argv])


def test_bench_raft_runs_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(
        "--in-flight", "1,20", "--duration-s", "0.3", "--warmup-s", "0.1",
        "--failovers", "1", "--stable-s", "1", "--stable-in-flight", "5",
    )  # fmt: skip
    assert run_bench_raft(args) == 0
    out = capsys.readouterr().out
    for text in ("transport round trip", "1-node Raft", "3-node Raft", "kill leader", "leader changes"):
        assert text in out


def test_bench_raft_rejects_bad_levels() -> None:
    with pytest.raises(SystemExit):
        parse("--in-flight", "0,x")
