"""`dscore demo --protocol paxos`: the same scenario and the same report, with Multi-Paxos replicas."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dscore.core.errors import ConfigError
from dscore.demo import DemoOptions, add_demo_parser, run_demo


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dscore")
    add_demo_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["demo", *argv])


def test_short_paxos_demo_run_is_linearizable_with_the_same_report(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_demo(parse("--protocol", "paxos", "--duration-s", "6", "--no-live", "--seed", "3")) == 0
    out = capsys.readouterr().out
    assert "dscore demo report: 5-node Multi-Paxos, seed 3" in out
    assert "LINEARIZABLE" in out and "NOT_LINEARIZABLE" not in out
    assert "kill -9 leader" in out and "partition {" in out and "heal the partition" in out
    assert "replicas converged: yes" in out and "no recovery seen" not in out
    assert re.search(r"successful ops/s, \d+ µs of CPU per successful op", out)
    assert len(re.findall(r": (\d+) ms \(new leader (n\d)\)", out)) == 2
    page = (tmp_path / "dscore-demo-report.html").read_text(encoding="utf-8")
    assert "Multi-Paxos" in page and 'data-verdict="LINEARIZABLE"' in page


def test_the_protocol_is_chosen_and_checked() -> None:
    assert DemoOptions.from_args(parse()).protocol == "raft"
    options = DemoOptions.from_args(parse("--protocol", "paxos"))
    settings = dict(options.cluster_settings)
    assert settings["protocol"] == "paxos" and "paxos.window_slots" in settings
    assert not any(k.startswith("raft.") for k in settings)
    with pytest.raises(ConfigError, match="--protocol"):
        DemoOptions(protocol="pbft-not-yet")
