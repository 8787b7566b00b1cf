"""`dscore sim`, driven through argparse as the real CLI will drive it."""

from __future__ import annotations

import argparse
import re

import pytest

from dscore.protocols.sequencer import SequencerCore
from dscore.sim import ProtocolAdapter, register_protocol
from dscore.sim.cli import add_sim_parser, run_sim


class AppliesOnArrival(SequencerCore):
    def _on_entry(self, index: int, data: bytes) -> None:
        if index > len(self._log):
            self._append(data)


register_protocol(ProtocolAdapter(name="test-broken-sequencer", make_core=AppliesOnArrival), replace=True)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dscore")
    add_sim_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sim", *argv])


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = parse(*argv)
    assert args.func is run_sim
    code = run_sim(args)
    return code, capsys.readouterr().out


def test_one_seed_replays_exactly(capsys: pytest.CaptureFixture[str]) -> None:
    options = ("--seed", "12", "--nodes", "3", "--duration-ticks", "200")
    code, first = run(capsys, *options)
    assert code == 0
    assert "PASS" in first and "verdict=LINEARIZABLE" in first
    digest = re.search(r"trace digest: ([0-9a-f]{64})", first)
    assert digest is not None
    _, second = run(capsys, *options)
    assert digest.group(1) in second


def test_verbose_prints_the_trace(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--seed", "2", "--nodes", "3", "--duration-ticks", "100", "--verbose")
    assert code == 0
    assert "start seed=2" in out and " send n" in out and "converged" in out


def test_many_seeds_print_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--seeds", "4", "--first-seed", "10", "--nodes", "3", "--duration-ticks", "150")
    assert code == 0
    for column in ("seeds", "passed", "failed", "ops", "wall s"):
        assert column in out


def test_chosen_faults_and_network(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        capsys, "--seed", "3", "--nodes", "3", "--duration-ticks", "150", "--faults", "crash,omission",
        "--network", "partial",
    )  # fmt: skip
    assert code == 0
    assert "network=partial faults=crash,omission" in out


def test_failures_exit_non_zero_and_name_their_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(
        capsys,
        "--protocol",
        "test-broken-sequencer",
        "--seeds",
        "3",
        "--nodes",
        "3",
        "--duration-ticks",
        "200",
    )
    assert code == 1
    assert "failed seeds: 0 1 2" in out
    assert "seed=0 protocol=test-broken-sequencer" in out
    assert "--seed 0 " in out  # the replay command


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--seed", "1", "--faults", "meteor")[0] == 2
    assert run(capsys, "--seed", "1", "--protocol", "nope")[0] == 2
