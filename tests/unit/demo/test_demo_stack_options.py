"""`dscore demo --stack processes`: its options from the command line, without starting anything. It
crashed without `--nodes` (a TypeError comparing None) until each protocol got its default node count."""

from __future__ import annotations

from pathlib import Path

import pytest

from dscore.cli import build_parser, main
from dscore.core.errors import ConfigError
from dscore.demo_stack import _StackDemo, stack_demo_options


def _options(*argv: str) -> tuple[str, int]:
    options = stack_demo_options(build_parser().parse_args(["demo", "--stack", "processes", *argv]))
    return options.protocol, options.nodes


@pytest.mark.parametrize(("protocol", "nodes"), [("raft", 3), ("paxos", 3), ("pbft", 4)])
def test_without_nodes_each_protocol_gets_its_default_node_count(protocol: str, nodes: int) -> None:
    assert _options("--protocol", protocol) == (protocol, nodes)


def test_without_protocol_or_nodes_it_is_three_raft_nodes() -> None:
    assert _options() == ("raft", 3)


def test_nodes_given_are_kept_and_too_few_for_pbft_is_a_clear_error() -> None:
    assert _options("--protocol", "pbft", "--nodes", "7") == ("pbft", 7)
    assert _options("--nodes", "5") == ("raft", 5)
    with pytest.raises(ConfigError, match="at least 4 for pbft"):
        _options("--protocol", "pbft", "--nodes", "3")


def test_the_command_without_nodes_reaches_its_own_checks_instead_of_crashing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The whole `dscore demo` entry point, up to the check of --html's folder, which stops it before any
    # process starts (the guard makes sure nothing does if that check ever moves).
    def must_not_start(self: _StackDemo) -> None:
        raise AssertionError("the stack must not start in this test")

    monkeypatch.setattr(_StackDemo, "run", must_not_start)
    missing = tmp_path / "missing" / "report.html"
    for protocol in ("raft", "pbft"):
        argv = ["demo", "--stack", "processes", "--protocol", protocol, "--html", str(missing)]
        assert main(argv) == 2
        assert "--html: the directory" in capsys.readouterr().out
