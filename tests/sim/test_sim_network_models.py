"""The three network models of the seed (1.2), on the network alone and in whole runs."""

from __future__ import annotations

import random

import pytest

from dscore.sim import (
    FaultPlan,
    NetworkConfig,
    NetworkModel,
    SimConfig,
    Simulation,
    get_protocol,
    run_simulation,
)
from dscore.sim.network import Partition, SimNetwork

ENDPOINTS = ("n0", "n1", "c0")
CONFIG = NetworkConfig(
    min_delay_us=100, delta_us=2_000, tail_scale_us=1_000, tail_alpha=1.2, max_delay_us=500_000
)


def network(model: NetworkModel, gst_us: int = 0, plan: FaultPlan | None = None) -> SimNetwork:
    config = NetworkConfig(
        model=model,
        min_delay_us=CONFIG.min_delay_us,
        delta_us=CONFIG.delta_us,
        tail_scale_us=CONFIG.tail_scale_us,
        tail_alpha=CONFIG.tail_alpha,
        max_delay_us=CONFIG.max_delay_us,
    )
    return SimNetwork(config, plan or FaultPlan(), random.Random(1), ENDPOINTS, gst_us)


def test_synchronous_delays_never_exceed_delta() -> None:
    net = network(NetworkModel.SYNC)
    delays = [net.delay_us(t) for t in range(5_000)]
    assert all(CONFIG.min_delay_us <= d <= CONFIG.delta_us for d in delays)


def test_asynchronous_delays_are_finite_but_exceed_any_small_bound() -> None:
    net = network(NetworkModel.ASYNC)
    delays = [net.delay_us(t) for t in range(5_000)]
    assert all(CONFIG.min_delay_us <= d <= CONFIG.max_delay_us for d in delays)
    assert sum(d > CONFIG.delta_us for d in delays) > 100  # heavy tail: often above delta
    assert max(delays) > 50 * CONFIG.delta_us


def test_partial_synchrony_bounds_delays_after_gst_and_delivers_earlier_messages_by_gst_plus_delta() -> None:
    gst = 1_000_000
    net = network(NetworkModel.PARTIAL, gst_us=gst)
    before = [(t, net.delay_us(t)) for t in range(0, gst, 200)]
    assert any(d > CONFIG.delta_us for _, d in before)
    assert all(t + d <= gst + CONFIG.delta_us for t, d in before)
    after = [net.delay_us(t) for t in range(gst, gst + 1_000_000, 200)]
    assert all(d <= CONFIG.delta_us for d in after)


def test_partitions_block_across_and_one_way_blocks_one_direction() -> None:
    two_way = Partition(frozenset({"n1"}), one_way=False)
    assert two_way.blocks("n0", "n1") and two_way.blocks("n1", "n0")
    assert not two_way.blocks("n0", "c0")
    one_way = Partition(frozenset({"n1"}), one_way=True)
    assert one_way.blocks("n0", "n1") and not one_way.blocks("n1", "n0")


def test_faults_stop_when_the_network_heals() -> None:
    plan = FaultPlan(drop_probability=1.0)
    net = network(NetworkModel.SYNC, plan=plan)
    net.link_drop = dict.fromkeys(net.link_drop, 1.0)
    assert net.route(0, "n0", "n1", b"x") == []
    net.faults_active = False
    assert len(net.route(0, "n0", "n1", b"x")) == 1


@pytest.mark.parametrize("model", list(NetworkModel))
def test_a_whole_run_under_each_model(model: NetworkModel) -> None:
    config = SimConfig(seed=4, nodes=3, duration_ticks=300, network=NetworkConfig(model=model))
    result = run_simulation(config=config)
    assert result.ok, result.failure
    assert result.stats.ops_ok > 50
    delta = config.network.delta_us
    if model is NetworkModel.SYNC:
        assert result.stats.max_delay_us <= delta
    else:
        assert result.stats.max_delay_us > delta
    if model is NetworkModel.PARTIAL:
        # GST is drawn from the seed, within the run, and recorded in the trace.
        gst_us = Simulation(config, get_protocol(config.protocol)).gst_us
        assert 0 <= gst_us <= config.duration_us
