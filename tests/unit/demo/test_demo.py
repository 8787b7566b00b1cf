"""`dscore demo`: a short end-to-end run, and the figures its report is built from."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import pytest

from dscore.check import Verdict
from dscore.check.result import CheckResult
from dscore.demo import (
    DemoOptions,
    DemoReport,
    FaultEvent,
    add_demo_parser,
    availability_windows,
    failover_time,
    fault_schedule,
    percentile,
    run_demo,
)
from dscore.runtime.client import Completion, OpOutcome


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dscore")
    add_demo_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["demo", *argv])


def test_short_demo_run_is_linearizable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_demo(parse("--duration-s", "6", "--no-live", "--seed", "3")) == 0
    out = capsys.readouterr().out
    assert "LINEARIZABLE" in out and "NOT_LINEARIZABLE" not in out
    assert "kill -9 leader" in out and "partition {" in out and "heal the partition" in out
    assert "replicas converged: yes" in out
    assert "no recovery seen" not in out  # both leader-removing faults were followed by a new leader
    assert re.search(r"successful ops/s, \d+ µs of CPU per successful op", out)
    # The HTML report went to its default place, and shows the same figures as the text.
    page = (tmp_path / "dscore-demo-report.html").read_text(encoding="utf-8")
    assert f"HTML report: {tmp_path / 'dscore-demo-report.html'}" in out
    availability = re.search(r"availability \(uptime / total time\): ([\d.]+%) \((\d+) of (\d+)", out)
    assert availability
    percent, up, total = availability.groups()
    assert f"{percent}</strong> available: {up} of {total} windows" in page
    failovers = re.findall(r": (\d+) ms \(new leader (n\d)\)", out)
    assert len(failovers) == 2
    for gap_ms, leader in failovers:
        assert re.search(rf'<td class="num">{gap_ms} ms</td><td>{leader}</td>', page)
    assert 'data-verdict="LINEARIZABLE"' in page


def test_html_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse().html == Path("dscore-demo-report.html") and not parse().no_html
    options = DemoOptions.from_args(parse("--html", str(tmp_path / "r.html")))
    assert options.html_path == tmp_path / "r.html"
    assert DemoOptions.from_args(parse("--no-html")).html_path is None
    # a directory that does not exist is refused before the run, not after it
    assert run_demo(parse("--html", str(tmp_path / "missing" / "r.html"))) == 2
    assert "does not exist" in capsys.readouterr().out


def test_fault_schedule_is_deterministic_per_seed() -> None:
    assert fault_schedule(1, 20) == fault_schedule(1, 20)
    assert fault_schedule(1, 20) != fault_schedule(2, 20)
    plan = fault_schedule(7, 20)
    assert [f.kind for f in plan] == ["kill_leader", "restart", "partition_leader", "heal"]
    assert all(0 < f.at_s < 20 for f in plan) and [f.at_s for f in plan] == sorted(f.at_s for f in plan)


def test_availability_counts_windows_with_a_success() -> None:
    # 1 s of workload = 10 windows; successes in windows 0, 1 and 9 only.
    assert availability_windows([10.01, 10.05, 10.15, 10.95], 10.0, 11.0) == (3, 10)
    assert availability_windows([], 0.0, 1.0) == (0, 10)
    assert availability_windows([0.5, 2.0], 0.0, 1.0) == (1, 10)  # outside the run: not counted


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 99) == 99 and percentile(values, 100) == 100
    assert math.isnan(percentile([], 50))


def test_failover_is_the_first_write_answered_by_another_node() -> None:
    event = FaultEvent(10.0, "kill_leader", "kill n1", "n1")
    completions = [
        Completion(9.0, 0.001, OpOutcome.OK, "put", "n1"),
        Completion(10.01, 0.001, OpOutcome.OK, "put", "n1"),  # answered before the crash hit
        Completion(10.10, 0.001, OpOutcome.OK, "get", "n2"),  # a read is not a commit
        Completion(10.20, 0.001, OpOutcome.FAIL, "put", "n2"),
        Completion(10.25, 0.001, OpOutcome.OK, "append", "n3"),
    ]
    measured = failover_time(completions, event)
    assert measured.new_leader == "n3" and measured.seconds == pytest.approx(0.25)
    assert failover_time(completions[:2], event).seconds is None


def test_exit_code_follows_the_verdict() -> None:
    def report(verdict: Verdict, failures: tuple[str, ...] = ()) -> DemoReport:
        check = CheckResult(verdict, "kv", (), "", 0, 0, 0.0)
        return DemoReport(DemoOptions(), 1.0, 0, 0, 0, 0, 0.0, {}, 0, 1, (), (), True, check, failures)

    assert report(Verdict.LINEARIZABLE).exit_code == 0
    assert report(Verdict.UNKNOWN).exit_code == 0
    assert report(Verdict.NOT_LINEARIZABLE).exit_code == 1
    assert report(Verdict.LINEARIZABLE, ("n1: boom",)).exit_code == 1


def test_bad_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_demo(parse("--nodes", "2")) == 2
    assert "--nodes must be at least 3" in capsys.readouterr().out


def test_the_demo_takes_node_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DSCORE_RAFT__PRE_VOTE", "false")
    monkeypatch.setenv("DSCORE_TICK_INTERVAL_S", "0.02")
    options = DemoOptions.from_args(parse())
    assert options.raft.pre_vote is False and options.tick_interval_s == 0.02
    monkeypatch.setenv("DSCORE_RAFT__HEARTBEAT_TICKS", "99")
    assert run_demo(parse()) == 2
    assert "DSCORE_RAFT" in capsys.readouterr().out
