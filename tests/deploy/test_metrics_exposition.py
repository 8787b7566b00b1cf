"""Prometheus' own linter (`promtool check metrics`) on the exposition of every metric dscore.metrics
defines, with every family populated."""

from __future__ import annotations

from metrics_doubles import FakeNetwork, FakeSource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_tools import PromTools, promtool

from dscore.metrics import ChaosMetrics, NetworkCollector, NodeCollector


def exposition() -> str:
    registry = CollectorRegistry()
    nodes = NodeCollector(registry)
    for node_id in ("n1", "n2"):
        handle = nodes.add_node(
            node_id, FakeSource(core_counters={"elections_won": 1, "stale_term": 2}), protocol="raft"
        )
        handle.count_in("raft.append")
        handle.count_out("raft.append_response")
        handle.observe_commit_seconds(0.004)
        handle.observe_persist_seconds(0.001)
        handle.observe_hop_seconds(0.0002)
    NetworkCollector(registry, FakeNetwork(dropped={"link_drop": 1}))
    ChaosMetrics(registry).fault_injected("partition")
    return generate_latest(registry).decode()


def test_promtool_accepts_every_dscore_metric(prom_tools: PromTools) -> None:
    text = exposition()
    assert "dscore_commit_duration_seconds_bucket" in text and "dscore_chaos_faults_injected_total" in text
    result = promtool(prom_tools, "check", "metrics", stdin=text)
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


def test_promtool_does_lint(prom_tools: PromTools) -> None:
    # The linter is not a rubber stamp: a counter without `_total` and a non-base unit are refused.
    bad = "# HELP dscore_bad_count x\n# TYPE dscore_bad_count counter\ndscore_bad_count 1\n"
    bad += "# HELP dscore_wait_milliseconds y\n# TYPE dscore_wait_milliseconds gauge\ndscore_wait_milliseconds 1\n"
    result = promtool(prom_tools, "check", "metrics", stdin=bad)
    assert result.returncode != 0
    assert "dscore_bad_count" in result.stdout + result.stderr
