"""`dscore check` and `dscore bench check`, driven through argparse as dscore.cli will."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

import dscore.check.cli as cli
from dscore.check import CheckResult, History
from dscore.check.bench import BenchCase, BenchRow
from dscore.check.cli import (
    EXIT_BAD_INPUT,
    EXIT_LINEARIZABLE,
    EXIT_NOT_LINEARIZABLE,
    EXIT_UNKNOWN,
    add_bench_check_parser,
    add_check_parser,
    run_bench_check,
    run_check,
    worst_exit,
)

HISTORIES = Path(__file__).resolve().parents[2] / "data" / "histories"
GOOD = str(HISTORIES / "register_sequential.edn")
STALE = str(HISTORIES / "register_stale_read.edn")
KV_GOOD = str(HISTORIES / "kv_tuple_form.edn")


def _check(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dscore")
    add_check_parser(parser.add_subparsers(dest="command"))
    return run_check(parser.parse_args(["check", *argv]))


def _bench(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="dscore")
    bench = parser.add_subparsers(dest="command").add_parser("bench")
    add_bench_check_parser(bench.add_subparsers(dest="bench_command"))
    return run_bench_check(parser.parse_args(["bench", "check", *argv]))


@pytest.fixture
def bad_file(tmp_path: Path) -> str:
    path = tmp_path / "bad.edn"
    path.write_text("{:process 0, :type :invoke, :f :write, :value 1}\n{:process 0, :type :ok, :f :write\n")
    return str(path)


def test_linearizable_file_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(GOOD) == EXIT_LINEARIZABLE
    assert capsys.readouterr().out.startswith(f"{GOOD}: LINEARIZABLE (5 ops, ")


def test_violation_exits_1_and_explains(capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(STALE) == EXIT_NOT_LINEARIZABLE
    out = capsys.readouterr().out
    assert f"{STALE}: NOT_LINEARIZABLE" in out
    assert "read 1, but the register held 2" in out


def test_bad_input_exits_3_with_the_line(bad_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(bad_file) == EXIT_BAD_INPUT
    assert f"{bad_file}: BAD INPUT: {bad_file}: line 2: unterminated" in capsys.readouterr().out


def test_missing_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(str(tmp_path / "nope.edn")) == EXIT_BAD_INPUT
    assert "cannot read history" in capsys.readouterr().out


def test_spent_budget_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(GOOD, "--timeout-s", "0") == EXIT_UNKNOWN
    assert "UNKNOWN" in capsys.readouterr().out


def test_model_option(capsys: pytest.CaptureFixture[str]) -> None:
    kv_only = str(HISTORIES / "kv_append.edn")
    assert _check(kv_only) == EXIT_LINEARIZABLE
    assert "(0 ops, 7 skipped: :f unknown to the model, " in capsys.readouterr().out
    assert _check(KV_GOOD, "--model", "kv") == EXIT_LINEARIZABLE
    # As a register history the [key value] tuples are plain values, and the reads disagree.
    assert _check(KV_GOOD, "--model", "register") == EXIT_NOT_LINEARIZABLE


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ((GOOD, GOOD), EXIT_LINEARIZABLE),
        ((GOOD, "UNKNOWN"), EXIT_UNKNOWN),
        (("UNKNOWN", STALE, GOOD), EXIT_NOT_LINEARIZABLE),
        ((STALE, "BAD", "UNKNOWN"), EXIT_BAD_INPUT),
    ],
)
def test_the_worst_file_decides(
    files: tuple[str, ...], expected: int, bad_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An UNKNOWN file: a marked history whose check is given no time at all.
    real = cli.check_history

    def check_with_budget(history: History, model: str, timeout_s: float | None) -> CheckResult:
        unknown = any(op.value == "unknown-marker" for op in history)
        return real(history, model, 0.0 if unknown else timeout_s)

    monkeypatch.setattr(cli, "check_history", check_with_budget)
    unknown_file = Path(bad_file).with_name("unknown.edn")
    unknown_file.write_text('{:process 0, :type :invoke, :f :write, :value "unknown-marker"}\n')
    paths = [
        bad_file if name == "BAD" else str(unknown_file) if name == "UNKNOWN" else name for name in files
    ]
    assert _check(*paths) == expected


def test_exit_severity_order() -> None:
    assert worst_exit([]) == EXIT_LINEARIZABLE
    assert worst_exit([EXIT_LINEARIZABLE, EXIT_UNKNOWN]) == EXIT_UNKNOWN
    assert worst_exit([EXIT_UNKNOWN, EXIT_NOT_LINEARIZABLE]) == EXIT_NOT_LINEARIZABLE
    assert worst_exit([EXIT_NOT_LINEARIZABLE, EXIT_BAD_INPUT, EXIT_UNKNOWN]) == EXIT_BAD_INPUT


def test_json_prints_one_object_per_file(bad_file: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _check(GOOD, STALE, bad_file, "--json") == EXIT_BAD_INPUT
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    good, stale, bad = map(json.loads, lines)
    assert (good["file"], good["verdict"]) == (GOOD, "LINEARIZABLE")
    assert stale["verdict"] == "NOT_LINEARIZABLE"
    assert stale["per_key"][0]["stuck_ops"][0]["operation"]["completion"]["value"] == 1
    assert bad == {"file": bad_file, "verdict": "BAD_INPUT", "error": bad["error"], "line": 2}


def test_dash_reads_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(Path(STALE).read_text()))
    assert _check("-") == EXIT_NOT_LINEARIZABLE
    assert capsys.readouterr().out.startswith("-: NOT_LINEARIZABLE")


def test_bench_prints_a_table_with_the_baseline_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench("--sizes", "300", "--processes", "3,6", "--models", "register,kv") == EXIT_LINEARIZABLE
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["model", "ops", "procs", "keys", "lines", "verdict"]
    assert "check/baseline" in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [(row[0], row[1], row[2], row[5]) for row in rows] == [
        ("register", "300", "3", "LINEARIZABLE"),
        ("register", "300", "6", "LINEARIZABLE"),
        ("kv", "300", "3", "LINEARIZABLE"),
        ("kv", "300", "6", "LINEARIZABLE"),
    ]
    assert all(row[-1].endswith("x") for row in rows)


def test_bench_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _bench("--sizes", "0.2k", "--processes", "5", "--models", "kv", "--json", "--seed", "3") == 0
    (row,) = map(json.loads, capsys.readouterr().out.splitlines())
    assert row["operations"] == 200
    assert row["keys"] == 1
    assert row["verdict"] == "LINEARIZABLE"
    # The times are printed rounded to the millisecond, so for runs of a few ms the quotient of the
    # printed times differs from the ratio (computed before rounding) by up to a few percent.
    assert row["ratio"] == pytest.approx(row["check_s"] / row["baseline_s"], rel=0.1)


def test_bench_quick_flag_picks_the_small_cases(monkeypatch: pytest.MonkeyPatch) -> None:
    real_run_case = cli.run_case
    seen: list[tuple[str, int, int]] = []

    def tiny_run_case(case: BenchCase, *, seed: int, timeout_s: float | None) -> BenchRow:
        seen.append((case.model, case.operations, case.processes))
        return real_run_case(BenchCase(case.model, 50, 2), seed=seed, timeout_s=timeout_s)

    monkeypatch.setattr(cli, "run_case", tiny_run_case)
    assert _bench("--quick", "--json") == 0
    assert seen == [
        (model, size, count) for model in ("register", "kv") for size in (1000, 10000) for count in (5, 10)
    ]


def test_bench_rejects_bad_sizes() -> None:
    with pytest.raises(SystemExit):
        _bench("--sizes", "ten")
    with pytest.raises(SystemExit):
        _bench("--models", "queue")
