"""`dscore compare`: the table's shape, exact replays, and the Byzantine contrast (issue 10, section 4)."""

from __future__ import annotations

import argparse
import json
import shlex

import pytest

from dscore.sim.cli import _config as sim_config
from dscore.sim.cli import add_sim_parser
from dscore.sim.compare import (
    COLUMNS,
    PROTOCOLS,
    add_compare_parser,
    default_nodes,
    run_compare,
    run_seed,
    seed_config,
)

#: seeds on which one Byzantine replica (all kinds) breaks both Raft (3 nodes) and Paxos (3 nodes) within
#: 200 ticks; PBFT (4 nodes) must hold on every one of them
BYZANTINE_SEEDS = (0, 1, 7)
BYZANTINE_TICKS = 200


def parse(command: str, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dscore")
    commands = parser.add_subparsers(dest="command")
    add_sim_parser(commands)
    add_compare_parser(commands)
    return parser.parse_args([command, *argv])


def test_the_table_has_one_row_per_protocol_and_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--seeds", "1", "--first-seed", "3", "--duration-ticks", "120", "--faults", "crash")
    assert run_compare(parse("compare", *argv)) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if "protocol" in line)
    for _, title in COLUMNS:
        assert title in header, f"column {title!r} missing from {header!r}"
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert set(rows) == set(PROTOCOLS)
    assert "crash of 2f+1" in rows["raft"] and "crash of 2f+1" in rows["paxos"]
    assert "Byzantine of 3f+1" in rows["pbft"]
    assert "1/1" in rows["pbft"]

    assert run_compare(parse("compare", *argv, "--json")) == 0
    figures = {row["protocol"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(figures) == set(PROTOCOLS)
    assert (
        figures["raft"]["nodes"] == "3"
        and figures["paxos"]["nodes"] == "3"
        and figures["pbft"]["nodes"] == "4"
    )
    for name, row in figures.items():
        assert row["seeds"] == 1 and row["safety_passed"] == 1, name
        assert row["throughput_ops_s"] > 0 and row["messages_per_op"] > 1, name
        assert 0 <= row["latency_p50_ticks"] <= row["latency_p99_ticks"], name
        assert 0 < row["availability"] <= 1, name


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_compare(parse("compare", "--faults", "swarm")) == 2
    assert "not be comparable" in capsys.readouterr().out
    assert run_compare(parse("compare", "--nodes", "raft=x")) == 2
    assert "--nodes wants" in capsys.readouterr().out


def test_every_seed_is_the_run_its_replay_command_makes() -> None:
    nodes = default_nodes(1)
    for protocol in PROTOCOLS:
        config = seed_config(
            protocol, 7, nodes=nodes[protocol], clients=3, duration_ticks=200, faults="byzantine"
        )
        command = shlex.split(
            f"dscore sim --protocol {protocol} --seed 7 --nodes {nodes[protocol]} --clients 3 "
            "--duration-ticks 200 --faults byzantine"
        )
        assert sim_config(parse(*command[1:]), 7, keep_trace=False) == config


def test_one_byzantine_replica_breaks_raft_and_paxos_while_pbft_holds() -> None:
    nodes = default_nodes(1)
    runs = {
        protocol: [
            run_seed(
                protocol,
                seed,
                nodes=nodes[protocol],
                clients=3,
                duration_ticks=BYZANTINE_TICKS,
                faults="byzantine",
            )
            for seed in BYZANTINE_SEEDS
        ]
        for protocol in PROTOCOLS
    }
    for protocol in ("raft", "paxos"):
        broken = [run for run in runs[protocol] if run.safety_failed]
        assert broken, (
            f"{protocol} kept safety on seeds {BYZANTINE_SEEDS} under one Byzantine replica; replay: "
            + "; ".join(run.replay for run in runs[protocol])
        )
    for run in runs["pbft"]:
        assert run.ok, f"pbft failed seed {run.seed}: {run.failure}\nreplay: {run.replay}"


def test_failover_is_measured_from_a_leader_crash() -> None:
    # Seed 9 crashes the Raft leader n2 about 6 ticks into the run; writes resume under n0 ~11 ticks later.
    run = run_seed("raft", 9, nodes=3, clients=3, duration_ticks=120, faults="crash,partition")
    finished = [ticks for ticks in run.failovers_ticks if ticks is not None]
    assert finished, f"no failover measured; replay: {run.replay}"
    assert all(0 < ticks < 120 for ticks in finished), (finished, run.replay)
