"""The `Storage` contract, run against every storage: the in-memory one and Redis (a real server).

`apply_persist` (dscore.protocols.contract) is the reference for the log, snapshot and hard state;
marks and positions merge by maximum; the incarnation only grows; a storage opened again (a restart:
for Redis a new object on a new connection) loads exactly what was saved.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dscore.protocols.contract import DurableState, EntryKind, LogEntry, Snapshot, apply_persist
from dscore.protocols.raft import HardState, Membership
from dscore.storage.base import DedupMark, Storage, StoredState, WriteBatch
from dscore.storage.memory import MemoryStorage
from dscore.storage.redis import RedisStorage


@dataclass
class Backend:
    """Opens "the" storage of one node, again and again, as restarts do."""

    kind: str
    redis_url: str = ""
    namespace: str = ""
    _node: int = 0
    _memory: MemoryStorage = field(default_factory=MemoryStorage)
    _opened: list[RedisStorage] = field(default_factory=list)

    async def open(self) -> Storage:
        if self.kind == "memory":
            return self._memory  # the object is the disk: it survives the runtime's crash
        storage = RedisStorage.from_url(self.redis_url, f"{self.namespace}:n{self._node}")
        self._opened.append(storage)
        return storage

    def new_node(self) -> None:
        """Later opens see a node that never ran."""
        self._node += 1
        self._memory = MemoryStorage()

    async def close(self) -> None:
        for storage in self._opened:
            await storage.close()
        self._opened.clear()


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[Backend]:
    if request.param == "memory":
        backend = Backend("memory")
    else:
        backend = Backend("redis", request.getfixturevalue("redis_url"), namespace)
    yield backend
    await backend.close()


def entries(first: int, count: int, term: int) -> tuple[LogEntry, ...]:
    return tuple(LogEntry(i, term, EntryKind.NORMAL, b"%d" % i) for i in range(first, first + count))


def indexes(state: StoredState) -> list[int]:
    return [e.index for e in state.durable.entries]


async def test_a_new_node_loads_an_empty_state(backend: Backend) -> None:
    assert await (await backend.open()).load() == StoredState()


async def test_every_write_batch_field_round_trips_through_a_restart(backend: Backend) -> None:
    storage = await backend.open()
    incarnation = await storage.bump_incarnation()
    hard_state = HardState(term=3, vote="n2", commit=4)
    snapshot = Snapshot(2, 1, b"\x00image\xff", Membership(("n1", "n2", "n3"), ("n4",)))
    log = (
        LogEntry(3, 1, EntryKind.NORMAL, b"\x00\x01command\xff"),
        LogEntry(4, 2, EntryKind.NOOP, b""),
        LogEntry(5, 3, EntryKind.CONFIG, b"config"),
    )
    await storage.save(
        WriteBatch(
            hard_state=hard_state,
            snapshot=snapshot,
            entries=log,
            dedup_marks={"n2": (1, 9), "n3": (4, 0)},
            input_positions={"dscore.n1.in/0": 41, "client/0": 0},
        )
    )
    expected = StoredState(
        durable=DurableState(hard_state, snapshot, log),
        incarnation=incarnation,
        dedup_marks={"n2": (1, 9), "n3": (4, 0)},
        input_positions={"dscore.n1.in/0": 41, "client/0": 0},
    )
    assert await storage.load() == expected
    assert await (await backend.open()).load() == expected


async def test_paxos_and_pbft_durable_state_round_trips_and_rebuilds_their_cores(backend: Backend) -> None:
    """What Multi-Paxos and PBFT persist (their own hard-state records, snapshots without a membership,
    PBFT's state transfer replacing the log) comes back whole after a restart, and a core built from it
    resumes where it was: the promised ballot, the view and its certificates."""
    import random

    from dscore.protocols.paxos import CHOSEN, PaxosConfig, PaxosNode
    from dscore.protocols.paxos.messages import PaxosHardState
    from dscore.protocols.pbft import PbftNode
    from dscore.protocols.pbft.messages import (
        NewView,
        Origin,
        PbftHardState,
        PbftHardStateV1,
        PEntry,
        QEntry,
        VcRef,
        ViewChange,
    )

    paxos_state = PaxosHardState(
        promised=(7 << 8) | 2, chosen=4, accepted=((1, CHOSEN), (2, (7 << 8) | 2), (1, 0))
    )
    storage = await backend.open()
    await storage.save(
        WriteBatch(
            hard_state=paxos_state,
            snapshot=Snapshot(2, (3 << 8) | 1, b"image", None),
            entries=tuple(LogEntry(i, (3 << 8) | 1, EntryKind.NORMAL, b"%d" % i) for i in range(3, 9)),
        )
    )
    loaded = await (await backend.open()).load()
    assert loaded.durable.hard_state == paxos_state and loaded.durable.snapshot == Snapshot(
        2, 769, b"image", None
    )
    paxos = PaxosNode("n3", PaxosConfig(), random.Random(1), loaded.durable, ("n1", "n2"))
    assert paxos.promised == paxos_state.promised and paxos.commit_index >= 2

    backend.new_node()
    request = PEntry(9, 2, b"\x01" * 32, b"batch", (Origin("gw", 17), Origin("@n1", 3)))
    pbft_state = PbftHardState(
        view=2,
        changing=False,
        stable_seq=8,
        stable_digest=b"\x02" * 32,
        next_seq=10,
        accepted=(request,),
        prepared=(request,),
        preprepared=(QEntry(9, 2, request.digest),),
    )
    storage = await backend.open()
    await storage.save(WriteBatch(entries=entries(1, 4, 0)))
    # a state transfer: the certified image of checkpoint 8 replaces every stored entry
    await storage.save(
        WriteBatch(hard_state=pbft_state, snapshot=Snapshot(8, 2, b"state", None), log_replaced=True)
    )
    loaded = await (await backend.open()).load()
    assert loaded.durable == DurableState(pbft_state, Snapshot(8, 2, b"state", None), ())
    pbft = PbftNode.factory(secret=b"s" * 32)("n1", ("n2", "n3", "n4"), random.Random(1), loaded.durable)
    assert (pbft.view, pbft.stable_seq, pbft.last_executed) == (2, 8, 8)
    # The view change it took part in as the primary of view 1 (n1 of four): its own VIEW-CHANGE and the
    # NEW-VIEW it sent come back word for word, for it to resend (and never make another one).
    vc = ViewChange(1, 8, b"\x02" * 32, (request,), (QEntry(9, 0, request.digest),), ())
    new_view = NewView(1, (VcRef("n1", b"\x03" * 32), VcRef("n2", b"\x04" * 32)), 8, b"\x02" * 32, (request,))
    in_view_1 = replace(pbft_state, view=1, view_change=vc, new_view=new_view)
    await storage.save(WriteBatch(hard_state=in_view_1))
    loaded = await (await backend.open()).load()
    assert loaded.durable.hard_state == in_view_1
    pbft = PbftNode.factory(secret=b"s" * 32)("n1", ("n2", "n3", "n4"), random.Random(1), loaded.durable)
    assert (pbft.view, pbft.changing, pbft._new_view_sent) == (1, False, new_view)
    assert pbft._view_changes[1]["n1"] == vc
    # A record of the first layout (an older build's) still loads, without those messages.
    older = PbftHardStateV1(*[getattr(pbft_state, name) for name in PbftHardStateV1.__slots__])
    await storage.save(WriteBatch(hard_state=older))
    loaded = await (await backend.open()).load()
    assert loaded.durable.hard_state == older
    pbft = PbftNode.factory(secret=b"s" * 32)("n1", ("n2", "n3", "n4"), random.Random(1), loaded.durable)
    assert (pbft.view, pbft.stable_seq, pbft._new_view_sent) == (2, 8, None)


async def test_hard_state_is_replaced_and_kept_when_absent(backend: Backend) -> None:
    storage = await backend.open()
    await storage.save(WriteBatch(hard_state=(1, None)))
    await storage.save(WriteBatch(hard_state=(2, "n1")))
    await storage.save(WriteBatch(entries=entries(1, 1, 2)))
    assert (await (await backend.open()).load()).durable.hard_state == (2, "n1")


async def test_new_entries_replace_the_stored_suffix(backend: Backend) -> None:
    storage = await backend.open()
    await storage.save(WriteBatch(entries=entries(1, 5, 1)))
    await storage.save(WriteBatch(entries=entries(3, 1, 2)))  # a new leader's entry at 3 cuts 3..5
    state = await (await backend.open()).load()
    assert [(e.index, e.term) for e in state.durable.entries] == [(1, 1), (2, 1), (3, 2)]


async def test_compaction_drops_the_entries_a_snapshot_covers(backend: Backend) -> None:
    storage = await backend.open()
    await storage.save(WriteBatch(entries=entries(1, 6, 1)))
    await storage.save(WriteBatch(snapshot=Snapshot(3, 1, b"compacted")))
    state = await (await backend.open()).load()
    assert indexes(state) == [4, 5, 6] and state.durable.snapshot == Snapshot(3, 1, b"compacted")


async def test_an_older_snapshot_changes_nothing(backend: Backend) -> None:
    storage = await backend.open()
    await storage.save(WriteBatch(entries=entries(1, 6, 1)))
    await storage.save(WriteBatch(snapshot=Snapshot(4, 1, b"new")))
    await storage.save(WriteBatch(snapshot=Snapshot(2, 1, b"old"), log_replaced=True))
    await storage.save(WriteBatch(snapshot=Snapshot(4, 1, b"same index"), log_replaced=True))
    state = await (await backend.open()).load()
    assert state.durable.snapshot == Snapshot(4, 1, b"new") and indexes(state) == [5, 6]


async def test_a_replacing_snapshot_drops_every_stored_entry(backend: Backend) -> None:
    storage = await backend.open()
    await storage.save(WriteBatch(entries=entries(1, 6, 1)))
    await storage.save(WriteBatch(snapshot=Snapshot(3, 1, b"compacted")))  # local compaction: keep 4..6
    await storage.save(WriteBatch(snapshot=Snapshot(4, 2, b"installed"), log_replaced=True))
    state = await (await backend.open()).load()
    assert indexes(state) == [] and state.durable.snapshot == Snapshot(4, 2, b"installed")
    # entries in the same batch as the installed snapshot come after it
    await storage.save(
        WriteBatch(snapshot=Snapshot(6, 2, b"again"), log_replaced=True, entries=entries(7, 2, 3))
    )
    assert indexes(await (await backend.open()).load()) == [7, 8]


async def test_the_incarnation_grows_across_restarts(backend: Backend) -> None:
    assert [await (await backend.open()).bump_incarnation() for _ in range(3)] == [1, 2, 3]
    storage = await backend.open()
    assert (await storage.load()).incarnation == 3
    assert await storage.bump_incarnation() == 4


async def test_marks_and_positions_only_grow(backend: Backend) -> None:
    storage = await backend.open()
    await storage.save(WriteBatch(dedup_marks={"a": (1, 5), "c": (2, 2)}, input_positions={"in/0": 10}))
    await storage.save(
        WriteBatch(
            dedup_marks={"a": (1, 3), "b": (2, 1), "c": (3, 0)},  # a: older; b: new; c: newer incarnation
            input_positions={"in/0": 4, "in/1": 0},
        )
    )
    await storage.save(WriteBatch(dedup_marks={"a": (1, 6)}, input_positions={"in/0": 11}))
    state = await (await backend.open()).load()
    assert state.dedup_marks == {"a": (1, 6), "b": (2, 1), "c": (3, 0)}
    assert state.input_positions == {"in/0": 11, "in/1": 0}


async def test_marks_compare_past_the_float_range(backend: Backend) -> None:
    # 2**53 + 1 is not a double: a comparison through floats would call these equal
    storage = await backend.open()
    await storage.save(WriteBatch(dedup_marks={"a": (1, 2**53 - 2)}, input_positions={"p": 2**53 - 2}))
    await storage.save(WriteBatch(dedup_marks={"a": (1, 2**53 - 1)}, input_positions={"p": 2**53 - 1}))
    state = await (await backend.open()).load()
    assert state.dedup_marks == {"a": (1, 2**53 - 1)} and state.input_positions == {"p": 2**53 - 1}


async def test_an_empty_batch_changes_nothing(backend: Backend) -> None:
    storage = await backend.open()
    await storage.save(WriteBatch(hard_state=(1, None), entries=entries(1, 2, 1)))
    before = await storage.load()
    await storage.save(WriteBatch())
    assert await (await backend.open()).load() == before


# -- randomized: sequences of writes and restarts against the reference ---------------------------------


@st.composite
def histories(draw: st.DrawFn) -> list[WriteBatch | str]:
    """WriteBatches as a core produces them (entries overwrite a suffix or append; snapshots at or below
    the log's end, some replacing the log), with restarts ("restart") in between."""
    out: list[WriteBatch | str] = []
    last = 0
    senders = st.sampled_from(["n1", "n2", "n3"])
    channels = st.sampled_from(["in/0", "in/1"])
    for term in range(1, draw(st.integers(1, 10)) + 1):
        if draw(st.integers(0, 4)) == 0:
            out.append("restart")
        first = draw(st.integers(1, last + 1))
        count = draw(st.integers(0, 5))
        snapshot = None
        if last and draw(st.booleans()):
            index = draw(st.integers(1, last))
            snapshot = Snapshot(index, term, b"image%d" % index)
        marks: dict[str, DedupMark] = draw(
            st.dictionaries(senders, st.tuples(st.integers(0, 3), st.integers(0, 50)), max_size=2)
        )
        positions: dict[str, int] = draw(st.dictionaries(channels, st.integers(0, 100), max_size=2))
        out.append(
            WriteBatch(
                hard_state=draw(
                    st.one_of(st.none(), st.builds(HardState, st.just(term), senders, st.just(0)))
                ),
                snapshot=snapshot,
                log_replaced=snapshot is not None and draw(st.booleans()),
                entries=entries(first, count, term),
                dedup_marks=marks,
                input_positions=positions,
            )
        )
        if count:
            last = first + count - 1
    return out


@given(histories())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_random_histories_match_the_reference(
    backend: Backend, history: list[WriteBatch | str]
) -> None:
    backend.new_node()
    storage = await backend.open()
    incarnation = await storage.bump_incarnation()
    durable = DurableState()
    marks: dict[str, DedupMark] = {}
    positions: dict[str, int] = {}
    for step in history:
        if step == "restart":
            storage = await backend.open()
            incarnation = await storage.bump_incarnation()
        else:
            assert isinstance(step, WriteBatch)
            await storage.save(step)
            durable = apply_persist(durable, step.as_ready())
            for sender, mark in step.dedup_marks.items():
                marks[sender] = max(mark, marks.get(sender, mark))
            for channel, position in step.input_positions.items():
                positions[channel] = max(position, positions.get(channel, position))
        assert await storage.load() == StoredState(durable, incarnation, marks, positions)
    assert await (await backend.open()).load() == StoredState(durable, incarnation, marks, positions)
