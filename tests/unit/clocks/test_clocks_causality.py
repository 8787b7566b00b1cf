"""Clocks against the definition of happened-before, on executions the simulator produces.

A gossip protocol sends rumors to random peers over a simulated network that delays, reorders, drops,
duplicates and partitions messages (and crashes nodes, whose clocks are durable). From the recorded
execution we build happened-before exactly as the seed defines it (4.5: program order, send -> receive,
transitive closure) and check, for every pair of events:

- vector order equals happened-before (Theorem 4.2): e -> f iff VC(e) < VC(f), and e || f iff the
  vectors are incomparable;
- Lamport order is consistent with it: e -> f implies L(e) < L(f).
"""

from __future__ import annotations

import random

import pytest

from dscore.clocks import Order
from dscore.protocols.gossip import CausalEvent, CausalityRecorder, EventKind, GossipCore
from dscore.sim import FaultPlan, NetworkConfig, NetworkModel, ProtocolAdapter, SimConfig, Simulation
from dscore.sim.gossip_invariants import gossip_invariants


def run_gossip(seed: int, kinds: tuple[str, ...], model: NetworkModel) -> list[CausalEvent]:
    recorder = CausalityRecorder()
    adapter = ProtocolAdapter(
        name="gossip-recorded",
        make_core=lambda node_id, peers, rng, durable: GossipCore(
            node_id, peers, rng, durable, recorder=recorder
        ),
        make_invariants=gossip_invariants,
        serves_clients=False,
        supports_read_index=False,
    )
    config = SimConfig(
        protocol="gossip-recorded",
        seed=seed,
        nodes=4,
        duration_ticks=60,
        network=NetworkConfig(model=model),
        faults=FaultPlan.draw(random.Random(seed), kinds, nodes=4),
    )
    result = Simulation(config, adapter).run()
    assert result.ok, result.failure
    return recorder.events


def happened_before_sets(events: list[CausalEvent]) -> list[int]:
    """For each event (by position), the bitset of events that happened before it (strictly)."""
    position = {(e.node, e.number): i for i, e in enumerate(events)}
    before = [0] * len(events)
    last_on_node: dict[str, int] = {}
    for i, event in enumerate(events):
        preds = 0
        previous = last_on_node.get(event.node)
        if previous is not None:
            assert events[previous].number == event.number - 1  # program order is gap-free
            preds |= before[previous] | (1 << previous)
        if event.kind is EventKind.RECEIVE:
            assert event.send is not None
            send = position[event.send]  # recorded earlier: the trace is a topological order
            assert send < i
            preds |= before[send] | (1 << send)
        before[i] = preds
        last_on_node[event.node] = i
    return before


CASES = [
    (1, ("timing", "duplication"), NetworkModel.ASYNC),
    (2, ("omission", "partition"), NetworkModel.SYNC),
    (3, ("crash", "pause", "timing"), NetworkModel.PARTIAL),
    (4, ("timing", "duplication", "omission", "crash", "partition"), NetworkModel.ASYNC),
    (5, (), NetworkModel.ASYNC),
]


@pytest.mark.parametrize(("seed", "kinds", "model"), CASES, ids=lambda v: str(getattr(v, "value", v)))
def test_vector_order_is_happened_before_and_lamport_respects_it(
    seed: int, kinds: tuple[str, ...], model: NetworkModel
) -> None:
    events = run_gossip(seed, kinds, model)
    assert len(events) > 80
    before = happened_before_sets(events)
    ordered = concurrent = 0
    for j, f in enumerate(events):
        preds = before[j]
        for i, e in enumerate(events):
            order = e.vector.compare(f.vector)
            if i == j:
                assert order is Order.EQUAL
            elif preds >> i & 1:
                assert order is Order.BEFORE, (e, f)
                assert e.lamport < f.lamport, (e, f)
                ordered += 1
            elif before[i] >> j & 1:
                assert order is Order.AFTER, (e, f)
            else:
                assert order is Order.CONCURRENT, (e, f)
                concurrent += 1
    # Both relations must actually occur, or the test proves nothing.
    assert ordered > 100 and concurrent > 100


def test_executions_really_reorder_and_duplicate() -> None:
    events = run_gossip(1, ("timing", "duplication"), NetworkModel.ASYNC)
    receives = [e for e in events if e.kind is EventKind.RECEIVE]
    sends = [e.send for e in receives]
    assert len(sends) > len(set(sends)), "no message was delivered twice"
    # Reordering: some receiver got two rumors of one sender in the opposite order they were sent.
    seen: dict[tuple[str, str], int] = {}
    reordered = False
    for event in receives:
        assert event.send is not None
        link = (event.send[0], event.node)
        if event.send[1] < seen.get(link, 0):
            reordered = True
        seen[link] = max(seen.get(link, 0), event.send[1])
    assert reordered
