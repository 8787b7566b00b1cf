"""The benchmark helper, the protocol registry and the host's persist fast path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dscore.core.errors import ConfigError
from dscore.protocols.contract import DurableState, EntryKind, LogEntry, Ready, Snapshot, apply_persist
from dscore.sim import ProtocolAdapter, get_protocol, protocol_names, register_protocol
from dscore.sim.bench import run_sim_bench


def test_bench_reports_a_ratio_against_the_bare_loop() -> None:
    report = run_sim_bench(nodes=3, duration_ticks=100, seeds=1)
    assert report.subject.protocol == "sequencer" and report.baseline.protocol == "noop"
    # What the runs did is deterministic (virtual time, events); only their wall time is the machine's.
    again = run_sim_bench(nodes=3, duration_ticks=100, seeds=1)
    assert (report.subject.sim_seconds, report.subject.events) == (
        again.subject.sim_seconds,
        again.subject.events,
    )
    assert report.subject.events > report.baseline.events > 0
    assert report.ratio == report.subject.sim_per_wall / report.baseline.sim_per_wall
    assert "simulated s per wall s" in report.format()


def test_registry_knows_the_builtins_and_refuses_duplicates() -> None:
    assert {"sequencer", "gossip", "noop"} <= set(protocol_names())
    with pytest.raises(ConfigError, match="unknown protocol"):
        get_protocol("nope")
    with pytest.raises(ConfigError, match="already registered"):
        register_protocol(ProtocolAdapter(name="sequencer", make_core=get_protocol("sequencer").make_core))


def entry(index: int, tag: int) -> LogEntry:
    return LogEntry(index, 1, EntryKind.NORMAL, bytes([tag]))


@st.composite
def readies(draw: st.DrawFn) -> Ready:
    first = draw(st.integers(min_value=1, max_value=12))
    count = draw(st.integers(min_value=0, max_value=4))
    tag = draw(st.integers(min_value=0, max_value=255))
    snapshot = None
    if draw(st.booleans()) and draw(st.booleans()):
        snapshot = Snapshot(draw(st.integers(min_value=1, max_value=10)), 1, b"s")
    hard_state = draw(st.none() | st.integers())
    return Ready(
        hard_state=hard_state,
        snapshot=snapshot,
        log_replaced=snapshot is not None and draw(st.booleans()),
        entries=tuple(entry(i, tag) for i in range(first, first + count)),
    )


def naive_persist(durable: DurableState, ready: Ready) -> DurableState:
    """Step 1 of `Ready` spelled out by scanning the whole log: the reference for `apply_persist`,
    which finds its cut points by bisection so that long simulations stay linear."""
    if not ready.must_persist:
        return durable
    hard_state = ready.hard_state if ready.hard_state is not None else durable.hard_state
    snapshot, entries = durable.snapshot, durable.entries
    if ready.snapshot is not None and (snapshot is None or ready.snapshot.index > snapshot.index):
        snapshot = ready.snapshot
        entries = tuple(e for e in entries if e.index > snapshot.index and not ready.log_replaced)
    if ready.entries:
        entries = tuple(e for e in entries if e.index < ready.entries[0].index) + ready.entries
    return DurableState(hard_state=hard_state, snapshot=snapshot, entries=entries)


@given(st.lists(readies(), max_size=12))
def test_apply_persist_equals_the_naive_reference(sequence: list[Ready]) -> None:
    fast = reference = DurableState()
    for ready in sequence:
        fast = apply_persist(fast, ready)
        reference = naive_persist(reference, ready)
        assert fast == reference
