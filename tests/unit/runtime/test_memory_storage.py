"""MemoryStorage: the same persist semantics as the contract's reference `apply_persist`, atomic batches,
monotonic dedup marks and positions, a growing incarnation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dscore.protocols.contract import DurableState, EntryKind, LogEntry, Ready, Snapshot, apply_persist
from dscore.storage.base import StoredState, WriteBatch
from dscore.storage.memory import MemoryStorage


def entries(first: int, count: int, term: int) -> tuple[LogEntry, ...]:
    return tuple(LogEntry(i, term, EntryKind.NORMAL, b"%d" % i) for i in range(first, first + count))


@st.composite
def batches(draw: st.DrawFn) -> list[WriteBatch]:
    out = []
    last = 0
    for term in range(1, draw(st.integers(1, 12)) + 1):
        first = draw(st.integers(1, last + 1))  # overwrite a suffix or append
        count = draw(st.integers(0, 6))
        snapshot = None
        if draw(st.booleans()) and last:
            index = draw(st.integers(1, last))
            snapshot = Snapshot(index, term, b"image%d" % index)
        hard_state = draw(st.one_of(st.none(), st.tuples(st.just(term), st.integers(0, 9))))
        replaced = snapshot is not None and draw(st.booleans())
        batch = WriteBatch(
            hard_state=hard_state,
            snapshot=snapshot,
            log_replaced=replaced,
            entries=entries(first, count, term),
        )
        out.append(batch)
        if count:
            last = first + count - 1
    return out


@given(batches())
@settings(max_examples=200, deadline=None)
async def test_matches_the_reference_apply_persist(writes: list[WriteBatch]) -> None:
    storage = MemoryStorage()
    reference = DurableState()
    for batch in writes:
        await storage.save(batch)
        reference = apply_persist(reference, batch.as_ready())
        assert (await storage.load()).durable == reference


async def test_a_replacing_snapshot_drops_the_stored_entries_after_it_too() -> None:
    storage = MemoryStorage()
    await storage.save(WriteBatch(entries=entries(1, 6, 1)))
    await storage.save(WriteBatch(snapshot=Snapshot(3, 1, b"compacted")))  # local compaction: keep 4..6
    assert [e.index for e in (await storage.load()).durable.entries] == [4, 5, 6]
    await storage.save(WriteBatch(snapshot=Snapshot(4, 2, b"installed"), log_replaced=True))
    state = (await storage.load()).durable
    assert state.entries == () and state.snapshot == Snapshot(4, 2, b"installed")


async def test_marks_and_positions_only_grow() -> None:
    storage = MemoryStorage()
    await storage.save(WriteBatch(dedup_marks={"a": (1, 5)}, input_positions={"inbox/n1": 10}))
    await storage.save(WriteBatch(dedup_marks={"a": (1, 3), "b": (2, 1)}, input_positions={"inbox/n1": 4}))
    state = await storage.load()
    assert state.dedup_marks == {"a": (1, 5), "b": (2, 1)}
    assert state.input_positions == {"inbox/n1": 10}


async def test_incarnation_grows_and_survives() -> None:
    storage = MemoryStorage()
    assert (await storage.load()).incarnation == 0
    assert [await storage.bump_incarnation() for _ in range(3)] == [1, 2, 3]
    assert (await storage.load()).incarnation == 3


async def test_loaded_state_is_a_copy() -> None:
    storage = MemoryStorage()
    await storage.save(WriteBatch(entries=entries(1, 2, 1), dedup_marks={"a": (1, 1)}))
    before = await storage.load()
    await storage.save(WriteBatch(entries=entries(3, 1, 1), dedup_marks={"a": (1, 2)}))
    assert len(before.durable.entries) == 2 and before.dedup_marks == {"a": (1, 1)}
    assert StoredState().durable == DurableState()


def test_write_batch_from_ready() -> None:
    ready = Ready(hard_state=("t", 1), entries=entries(1, 1, 1))
    batch = WriteBatch.from_ready(ready, {"n2": (1, 4)}, {"inbox/n1": 3})
    assert batch.as_ready() == Ready(hard_state=("t", 1), entries=entries(1, 1, 1))
    assert batch and not WriteBatch()
